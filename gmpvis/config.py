"""Configuration: nested dataclasses, presets (``tiny``, ``r50``, ``r101``) and overrides.

``get_config("r50", ["train.lr=1e-4", "data.scales=288,320"])`` builds a preset and applies
``section.field=value`` overrides; the value is parsed with the field's declared type. An unknown
section or field, or a value that does not parse, raises ``ValueError`` naming it.

Paper-level hyper-parameters: GMP-VIS builds on Deformable DETR, and the dataclass defaults
(used by the ``r50`` / ``r101`` presets) follow that setting: hidden 256, 8 heads, 6 encoder and
6 decoder layers, 4 feature levels (strides 8/16/32/64) with 4 sampling points, FFN 1024,
dropout 0.1, focal classification (alpha 0.25, gamma 2), AdamW lr 1e-4 with backbone lr 1e-5,
weight decay 1e-4, gradient clipping 0.1, Hungarian costs class 2 / L1 5 / GIoU 2 and loss
weights class 2 / L1 5 / GIoU 2 / mask focal 5 / dice 5, YouTube-VIS 2019 (40 classes) with
short clips. The project-specific parts (memory tokens, graph-matching head, L_match weight,
100 queries per frame) are our choices and are documented at each field.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from gmpvis.runtime import AMP_DTYPES

BACKBONES = ("tiny_cnn", "resnet50", "resnet101")
AMP_MODES = tuple(AMP_DTYPES)
INFER_MODES = ("online", "offline")
KERNEL_BACKENDS = ("", "auto", "triton", "torch")
OVERLAY_FORMATS = ("png", "gif", "mp4")
ASSOCIATIONS = ("graph", "cosine", "iou")  # gmpvis.association.associate


@dataclass
class ModelConfig:
    """Network architecture (see ``gmpvis.model.build_model``)."""

    backbone: str = "resnet50"  # one of BACKBONES; "tiny_cnn" is the small CPU network
    pretrained_weights: str = ""  # local .pth state dict for the ResNet; nothing is downloaded
    frozen_bn: bool = True  # torchvision.ops.FrozenBatchNorm2d in the ResNet
    train_backbone: bool = True  # False: backbone parameters get requires_grad=False
    tiny_channels: int = 32  # width of the first stage of the "tiny_cnn" backbone
    hidden_dim: int = 256
    num_feature_levels: int = 4  # strides 8/16/32 + one extra stride-64 level
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 1024
    dropout: float = 0.1
    enc_n_points: int = 4
    dec_n_points: int = 4
    fused_attention: bool = True  # kernels.ms_deform_attn_fused (softmax inside the kernel)
    num_queries: int = 100
    num_classes: int = 40  # YouTube-VIS 2019; train.py sets it from the dataset
    # temporal feature aggregation
    num_memory_tokens: int = 8  # memory tokens carried by every frame
    temporal_layers: int = 1  # transformer layers mixing memory tokens across frames
    memory_frames: int = 5  # K: frames kept in the rolling memory at online inference
    # heads
    embed_dim: int = 128  # instance (association) embedding size E
    mask_dim: int = 256  # mask embedding / pixel feature size
    mask_stride: int = 4  # 4 or 8: output stride of the mask logits
    aux_loss: bool = True  # outputs of every decoder layer
    # graph matching head (gmpvis.association.head)
    gm_hidden: int = 32  # width of the MLP on node-pair evidence
    gm_edge_dim: int = 16  # c: size of the edge features fed to gm_affinity
    gm_iters: int = 2  # graduated-assignment outer iterations
    gm_lambda: float = 0.5  # initial weight of the quadratic term Q(S); 0: no quadratic term
    sinkhorn_iters: int = 50  # enough to converge (marginal error in the benchmark's results)
    sinkhorn_tau: float = 1.0  # temperature of the Sinkhorn normalisation


@dataclass
class LossConfig:
    """Matcher costs and loss weights (``gmpvis.model.build_criterion``)."""

    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    cost_mask: float = 5.0  # mask focal cost (on sampled points, float32)
    cost_dice: float = 5.0
    cls_weight: float = 2.0
    bbox_weight: float = 5.0
    giou_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    match_weight: float = 1.0  # L_match on the tracker's graphs (gmpvis.association.graphs)
    match_window: int = 8  # frames before the query frame a track memory is built from
    match_max_gap: int = 5  # a track's last sighting is 1..this many frames back
    match_drop: float = 0.2  # chance an earlier sighting is dropped (a missed detection)
    match_spurious: int = 2  # at most this many tracks from unmatched proposals per graph
    contrastive_weight: float = 1.0  # multi-positive InfoNCE on the instance embeddings
    contrastive_tau: float = 0.1
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


@dataclass
class DataConfig:
    """Dataset and clip sampling (``gmpvis.data``)."""

    root: str = "data/synthetic"
    ann_file: str = ""  # "" -> <root>/annotations.json
    synthetic: bool = False  # generate a synthetic dataset under root on first use
    synthetic_videos: int = 64
    synthetic_frames: int = 12
    synthetic_difficulty: str = "easy"
    synthetic_size: tuple[int, int] = (128, 128)  # (H, W)
    # a fresh synthetic video per training sample, a pure function of (split_seed, index),
    # difficulty cycling through synthetic_mix; the generated folder is then the holdout set
    synthetic_stream: bool = False
    synthetic_mix: list[str] = field(default_factory=lambda: ["easy", "medium", "hard"])
    stream_length: int = 100000  # distinct videos in the stream
    clip_len: int = 3
    max_gap: int = 3  # largest index gap between consecutive sampled frames
    scales: list[int] = field(default_factory=lambda: [288, 320, 352, 384, 416, 448, 480])
    max_size: int = 768
    holdout_fraction: float = 0.1
    split_seed: int = 0
    num_workers: int = 2
    verify_frames: str = "auto"  # check every frame header up front: auto | true | false
    # pad each training batch's H and W up to a multiple of this (0: to the batch max only);
    # -1: 32 under train.compile, so that compiled graphs are keyed on a few size buckets
    # instead of every batch size, and 0 otherwise
    size_divisibility: int = -1


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping (``train.py``, ``gmpvis.train``)."""

    output_dir: str = "outputs/run"
    batch_size: int = 2
    lr: float = 1e-4
    lr_backbone: float = 1e-5
    weight_decay: float = 1e-4
    max_steps: int = 100000
    warmup_steps: int = 500
    lr_drop_steps: list[int] = field(default_factory=lambda: [80000])
    clip_max_norm: float = 0.1
    amp: str = "off"  # one of AMP_MODES
    compile: bool = False  # torch.compile the model
    seed: int = 42
    ckpt_every: int = 2000
    eval_every: int = 5000
    log_every: int = 50
    tensorboard: bool = False
    resume: str = ""  # checkpoint path, "" for none


@dataclass
class TrackerConfig:
    """Online tracker and offline stitcher (``gmpvis.infer.tracker``)."""

    # Sigmoid-focal class probabilities of a confident query are often only 0.2-0.5; AP ranks
    # tracks by score, so a low bar costs little precision and keeps recall.
    det_threshold: float = 0.05  # proposals below this max class probability are ignored
    birth_threshold: float = 0.1  # an unmatched proposal above this starts a track
    association: str = "graph"  # one of ASSOCIATIONS (gmpvis.association.associate)
    match_threshold: float = 0.2  # graph: least assignment probability of an accepted match
    cosine_threshold: float = 0.5  # cosine: least embedding cosine of an accepted match
    iou_threshold: float = 0.3  # iou: least IoU of predicted and proposal box
    confirm_hits: int = 2  # a new track is tentative until seen this many times
    # no birth where a proposal overlaps a matched proposal or a live track's predicted box
    birth_max_overlap: float = 0.5
    nms_iou: float = 0.6  # box IoU above which the weaker of two proposals is dropped
    max_missing: int = 5  # frames a track survives unmatched (occlusion) before it ends
    embed_history: int = 5  # a track's node embedding: mean of its last this many embeddings
    motion_pos_std: float = 0.05  # Kalman noise on the box, relative to its size
    motion_vel_std: float = 0.02  # Kalman noise on the box velocity, relative to its size
    max_proposals: int = 20  # per frame, after thresholding (largest scores first)
    # live tracks in one association graph; the Triton sinkhorn holds at most 127 nodes a side
    # with the dustbin, so beyond this the longest-missing tracks end early
    max_live_tracks: int = 100
    # results per track, one per top category (scored by its mean probability): an uncertain
    # class costs a low-scored extra result instead of a missed instance
    categories_per_track: int = 3


@dataclass
class InferConfig:
    """How inference runs (``infer.py``, ``gmpvis.infer``); not stored with a model."""

    mode: str = "online"  # one of INFER_MODES: frame by frame, or overlapping clips stitched
    offline_clip_len: int = 8  # offline mode: frames per clip
    offline_overlap: int = 2  # offline mode: frames shared by consecutive clips
    amp: str = "off"  # one of AMP_MODES
    compile: bool = False  # torch.compile the per-frame step
    cuda_graphs: bool = False  # CUDA graphs for the per-frame step (CUDA only)
    channels_last: bool = False
    warmup_frames: int = -1  # frames left out of latency stats; -1: 1, or K + 2 when compiled
    output_dir: str = "outputs/infer"
    overlay: list[str] = field(default_factory=list)  # any of OVERLAY_FORMATS
    overlay_threshold: float = 0.3  # least track score drawn
    overlay_fps: float = 6.0


@dataclass
class RuntimeConfig:
    """The machine: device and kernel backend, for training and inference alike."""

    device: str = "auto"  # auto | cpu | cuda[:i]
    kernels: str = ""  # one of KERNEL_BACKENDS; "" keeps GMPVIS_KERNELS (default auto)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


SECTIONS = {
    "model": ModelConfig,
    "loss": LossConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "tracker": TrackerConfig,
    "infer": InferConfig,
    "runtime": RuntimeConfig,
}
# Sections that describe the machine and the run, not the model: a checkpoint's values are
# not carried into inference (a model trained on a GPU must still run on a CPU).
MACHINE_SECTIONS = ("infer", "runtime")
# Fields renamed since older checkpoints were written: old key -> new key.
RENAMED_FIELDS = {"tracker.memory": "tracker.embed_history"}
# Fields of older checkpoints that no longer exist (the first graph matching head's).
DROPPED_FIELDS = {
    "model.gm_cross_layers",
    "model.gm_sigma",
    "model.gm_dustbin",
    "loss.gm_distractors",
    "loss.match_dustbin_weight",
}

# Preset = dict of "section.field" -> value applied over the dataclass defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # Trains on 2 CPU cores: small conv backbone, hidden 64, 12 queries, 1+1 layers, 128 px.
    "tiny": {
        "model.backbone": "tiny_cnn",
        "model.frozen_bn": False,
        "model.tiny_channels": 16,
        "model.hidden_dim": 64,
        "model.num_feature_levels": 3,
        "model.nheads": 4,
        "model.enc_layers": 1,
        "model.dec_layers": 2,
        "model.dim_feedforward": 128,
        "model.dropout": 0.0,
        "model.enc_n_points": 2,
        "model.dec_n_points": 2,
        "model.num_queries": 12,
        "model.num_classes": 4,
        "model.num_memory_tokens": 4,
        "model.memory_frames": 3,
        "model.embed_dim": 32,
        "model.mask_dim": 32,
        "model.mask_stride": 4,  # objects are ~15-25 px at 128 px: stride 8 would be 2-3 cells
        "model.gm_edge_dim": 8,
        # training clips: a fresh video per sample, easy / medium / hard in turn; the 12
        # generated medium videos are the holdout set of the periodic evaluation
        "data.root": "data/tiny_holdout",
        "data.synthetic": True,
        "data.synthetic_stream": True,
        "data.synthetic_mix": ["easy", "medium", "hard"],
        "data.synthetic_videos": 12,
        "data.synthetic_difficulty": "medium",
        "data.synthetic_frames": 10,
        "data.synthetic_size": (128, 128),
        "data.clip_len": 3,
        "data.max_gap": 2,
        "data.scales": [128],
        "data.max_size": 128,
        "data.num_workers": 1,  # generates the next batch on the second core
        "train.output_dir": "outputs/tiny",
        "train.batch_size": 2,
        # the recipe measured by experiments/train_tiny.py
        "train.lr": 4e-4,
        "train.lr_backbone": 4e-4,
        "train.max_steps": 3000,
        "train.warmup_steps": 50,
        "train.lr_drop_steps": [2400],
        "train.clip_max_norm": 1.0,
        "train.ckpt_every": 500,
        "train.eval_every": 375,
        "train.log_every": 20,
        # tuned on the validation videos (seeds 7101-7103) by `python -m experiments.association
        # --detector outputs/tiny_recipe/stage1/checkpoint_latest.pth --val-videos 16`: the graph
        # matching arm's values; cosine / iou thresholds from the contrastive-cosine / motion-IoU
        # arms (experiments/results/association.json, "tuned")
        "tracker.match_threshold": 0.1,
        "tracker.birth_threshold": 0.05,
        "tracker.confirm_hits": 2,
        "tracker.max_missing": 5,
        "tracker.cosine_threshold": 0.7,
        "tracker.iou_threshold": 0.35,
    },
    # Paper-level ResNet-50 setting (YouTube-VIS 2019: 40 classes, 3-frame clips).
    "r50": {
        "model.backbone": "resnet50",
        "data.root": "data/ytvis2019",
        "data.synthetic": False,
        "train.output_dir": "outputs/r50",
    },
    "r101": {
        "model.backbone": "resnet101",
        "data.root": "data/ytvis2019",
        "data.synthetic": False,
        "train.output_dir": "outputs/r101",
    },
}


def _field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations (the module uses postponed evaluation, so resolve the strings)."""
    return typing.get_type_hints(cls)


def _parse_bool(text: str, name: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"config field {name!r}: cannot parse {text!r} as bool (true/false)")


def _split_list(text: str) -> list[str]:
    """'1,2,3' or '[1, 2, 3]' or '' -> list of item strings."""
    s = text.strip()
    if s.startswith(("[", "(")) and s.endswith(("]", ")")):
        s = s[1:-1]
    return [p.strip() for p in s.split(",") if p.strip()]


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert ``value`` (a string from the command line, or a Python value) to type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    try:
        if origin in (list, tuple):
            items = _split_list(value) if isinstance(value, str) else list(value)
            if origin is tuple:
                if len(args) == 2 and args[1] is Ellipsis:
                    return tuple(_coerce(v, args[0], name) for v in items)
                if len(items) != len(args):
                    raise ValueError(
                        f"config field {name!r}: expected {len(args)} values, got {len(items)}"
                    )
                return tuple(_coerce(v, a, name) for v, a in zip(items, args, strict=True))
            return [_coerce(v, args[0], name) for v in items]
        if tp is bool:
            if isinstance(value, bool):
                return value
            return _parse_bool(str(value), name)
        if tp is int:
            if isinstance(value, bool):
                raise ValueError(f"config field {name!r}: expected int, got bool")
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"config field {name!r}: expected int, got {value!r}")
            if isinstance(value, str):
                num = float(value.strip())  # accepts "1e4" too
                if not num.is_integer():
                    raise ValueError(f"config field {name!r}: expected int, got {value!r}")
                return int(num)
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except ValueError as err:
        if str(err).startswith("config field"):
            raise
        raise ValueError(
            f"config field {name!r}: cannot parse {value!r} as {getattr(tp, '__name__', tp)}"
        ) from err
    raise ValueError(f"config field {name!r}: unsupported type {tp}")


def set_field(cfg: Config, key: str, value: Any) -> None:
    """Set ``cfg.<section>.<field>`` from ``key = "section.field"`` with type conversion."""
    if key.count(".") != 1:
        raise ValueError(f"config key {key!r}: expected 'section.field' (e.g. train.lr)")
    section, name = key.split(".")
    if section not in SECTIONS:
        raise ValueError(
            f"config key {key!r}: unknown section {section!r} (one of {sorted(SECTIONS)})"
        )
    types = _field_types(SECTIONS[section])
    if name not in types:
        raise ValueError(
            f"config key {key!r}: unknown field {name!r} of section {section!r} "
            f"(fields: {', '.join(types)})"
        )
    setattr(getattr(cfg, section), name, _coerce(value, types[name], key))


def apply_overrides(cfg: Config, overrides: list[str] | None) -> Config:
    """Apply ``"section.field=value"`` strings in order (later ones win)."""
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"config override {item!r}: expected 'section.field=value'")
        key, value = item.split("=", 1)
        set_field(cfg, key.strip(), value.strip())
    return cfg


def _unit(x: float) -> bool:
    return 0.0 <= x <= 1.0


def validate(cfg: Config) -> Config:
    """Check enumerations and ranges; ValueError naming the field at fault."""
    m, t, d, k, i, r = cfg.model, cfg.train, cfg.data, cfg.tracker, cfg.infer, cfg.runtime
    l = cfg.loss
    checks = [
        (m.backbone in BACKBONES, "model.backbone", f"one of {BACKBONES}", m.backbone),
        (m.mask_stride in (4, 8), "model.mask_stride", "4 or 8", m.mask_stride),
        (1 <= m.num_feature_levels <= 4, "model.num_feature_levels", "1..4", m.num_feature_levels),
        (m.nheads >= 1, "model.nheads", ">= 1", m.nheads),
        (
            m.nheads >= 1 and m.hidden_dim % m.nheads == 0,
            "model.hidden_dim",
            "divisible by model.nheads",
            m.hidden_dim,
        ),
        (m.num_queries > 0, "model.num_queries", "> 0", m.num_queries),
        (m.num_classes > 0, "model.num_classes", "> 0", m.num_classes),
        (m.dec_layers > 0, "model.dec_layers", "> 0", m.dec_layers),
        (m.enc_layers >= 0, "model.enc_layers", ">= 0", m.enc_layers),
        (m.num_memory_tokens >= 0, "model.num_memory_tokens", ">= 0", m.num_memory_tokens),
        (m.memory_frames >= 1, "model.memory_frames", ">= 1", m.memory_frames),
        (m.sinkhorn_tau > 0, "model.sinkhorn_tau", "> 0", m.sinkhorn_tau),
        (m.gm_lambda >= 0, "model.gm_lambda", ">= 0", m.gm_lambda),
        (m.sinkhorn_iters >= 1, "model.sinkhorn_iters", ">= 1", m.sinkhorn_iters),
        (0.0 <= m.dropout < 1.0, "model.dropout", "in [0, 1)", m.dropout),
        (d.clip_len >= 1, "data.clip_len", ">= 1", d.clip_len),
        (len(d.scales) > 0, "data.scales", "non-empty", d.scales),
        (0.0 <= d.holdout_fraction < 1.0, "data.holdout_fraction", "in [0, 1)", d.holdout_fraction),
        (d.num_workers >= 0, "data.num_workers", ">= 0", d.num_workers),
        (d.size_divisibility >= -1, "data.size_divisibility", ">= -1", d.size_divisibility),
        (len(d.synthetic_mix) > 0, "data.synthetic_mix", "non-empty", d.synthetic_mix),
        (d.stream_length >= 1, "data.stream_length", ">= 1", d.stream_length),
        (l.match_max_gap >= 1, "loss.match_max_gap", ">= 1", l.match_max_gap),
        (l.match_window >= 1, "loss.match_window", ">= 1", l.match_window),
        (0 <= l.match_drop < 1, "loss.match_drop", "in [0, 1)", l.match_drop),
        (l.contrastive_tau > 0, "loss.contrastive_tau", "> 0", l.contrastive_tau),
        (t.amp in AMP_MODES, "train.amp", f"one of {AMP_MODES}", t.amp),
        (t.batch_size >= 1, "train.batch_size", ">= 1", t.batch_size),
        (t.lr >= 0, "train.lr", ">= 0", t.lr),
        (t.lr_backbone >= 0, "train.lr_backbone", ">= 0", t.lr_backbone),
        (t.weight_decay >= 0, "train.weight_decay", ">= 0", t.weight_decay),
        (t.max_steps >= 1, "train.max_steps", ">= 1", t.max_steps),
        (t.warmup_steps >= 0, "train.warmup_steps", ">= 0", t.warmup_steps),
        (t.log_every >= 1, "train.log_every", ">= 1", t.log_every),
        (t.ckpt_every >= 1, "train.ckpt_every", ">= 1", t.ckpt_every),
        (t.eval_every >= 1, "train.eval_every", ">= 1", t.eval_every),
        (_unit(k.det_threshold), "tracker.det_threshold", "in [0, 1]", k.det_threshold),
        (_unit(k.birth_threshold), "tracker.birth_threshold", "in [0, 1]", k.birth_threshold),
        (_unit(k.match_threshold), "tracker.match_threshold", "in [0, 1]", k.match_threshold),
        (
            _unit(k.birth_max_overlap),
            "tracker.birth_max_overlap",
            "in [0, 1]",
            k.birth_max_overlap,
        ),
        (_unit(k.nms_iou), "tracker.nms_iou", "in [0, 1]", k.nms_iou),
        (
            k.association in ASSOCIATIONS,
            "tracker.association",
            f"one of {ASSOCIATIONS}",
            k.association,
        ),
        (
            -1.0 <= k.cosine_threshold <= 1.0,
            "tracker.cosine_threshold",
            "in [-1, 1]",
            k.cosine_threshold,
        ),
        (_unit(k.iou_threshold), "tracker.iou_threshold", "in [0, 1]", k.iou_threshold),
        (k.confirm_hits >= 1, "tracker.confirm_hits", ">= 1", k.confirm_hits),
        (k.max_missing >= 0, "tracker.max_missing", ">= 0", k.max_missing),
        (k.embed_history >= 1, "tracker.embed_history", ">= 1", k.embed_history),
        (k.max_proposals >= 1, "tracker.max_proposals", ">= 1", k.max_proposals),
        (1 <= k.max_live_tracks <= 126, "tracker.max_live_tracks", "1..126", k.max_live_tracks),
        (
            k.categories_per_track >= 1,
            "tracker.categories_per_track",
            ">= 1",
            k.categories_per_track,
        ),
        (i.mode in INFER_MODES, "infer.mode", f"one of {INFER_MODES}", i.mode),
        (i.offline_clip_len >= 1, "infer.offline_clip_len", ">= 1", i.offline_clip_len),
        (
            0 <= i.offline_overlap < i.offline_clip_len,
            "infer.offline_overlap",
            "in [0, infer.offline_clip_len)",
            i.offline_overlap,
        ),
        (i.amp in AMP_MODES, "infer.amp", f"one of {AMP_MODES}", i.amp),
        (i.warmup_frames >= -1, "infer.warmup_frames", ">= -1 (-1: automatic)", i.warmup_frames),
        (
            all(f in OVERLAY_FORMATS for f in i.overlay),
            "infer.overlay",
            f"formats among {OVERLAY_FORMATS}",
            i.overlay,
        ),
        (_unit(i.overlay_threshold), "infer.overlay_threshold", "in [0, 1]", i.overlay_threshold),
        (i.overlay_fps > 0, "infer.overlay_fps", "> 0", i.overlay_fps),
        (r.kernels in KERNEL_BACKENDS, "runtime.kernels", "auto, triton or torch", r.kernels),
    ]
    for ok, name, expected, got in checks:
        if not ok:
            raise ValueError(f"config field {name!r}: expected {expected}, got {got!r}")
    return cfg


def get_config(preset: str = "tiny", overrides: list[str] | None = None) -> Config:
    """Build preset ``tiny`` | ``r50`` | ``r101`` and apply command-line style overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown config preset {preset!r} (one of {sorted(PRESETS)})")
    cfg = Config()
    for key, value in PRESETS[preset].items():
        set_field(cfg, key, value)
    apply_overrides(cfg, overrides)
    return validate(cfg)


def config_to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """Plain JSON-able nested dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(data: dict[str, dict[str, Any]]) -> Config:
    """Inverse of :func:`config_to_dict`; unknown keys raise, missing keys keep defaults."""
    cfg = Config()
    for section, values in data.items():
        if section not in SECTIONS:
            raise ValueError(f"config dict: unknown section {section!r}")
        if not isinstance(values, dict):
            raise ValueError(f"config dict: section {section!r} must be a dict")
        for name, value in values.items():
            key = f"{section}.{name}"
            if key not in DROPPED_FIELDS:
                set_field(cfg, RENAMED_FIELDS.get(key, key), value)
    return validate(cfg)


def with_machine_defaults(cfg: Config) -> Config:
    """``cfg`` with the machine sections (``infer``, ``runtime``) reset to their defaults:
    what a stored model's config becomes before a new run's overrides apply."""
    for name in MACHINE_SECTIONS:
        setattr(cfg, name, SECTIONS[name]())
    return cfg
