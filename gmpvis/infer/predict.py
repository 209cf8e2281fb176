"""A trained model over videos: ``load_model`` and the one ``predict_videos`` loop.

``predict_videos`` is what ``infer.py``, the trainer's holdout evaluation and every
experiment call: per :class:`~gmpvis.data.inputs.VideoSource` it runs the online or offline
driver (``cfg.infer.mode``) with the tracker of ``cfg.tracker`` and yields the video's
YouTube-VIS results with its latency.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from gmpvis.association import build_associator
from gmpvis.checkpoint import CheckpointError, load_checkpoint
from gmpvis.config import (
    Config,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    get_config,
    validate,
    with_machine_defaults,
)
from gmpvis.data.inputs import FrameFilesSource, VideoSource
from gmpvis.eval import evaluate
from gmpvis.infer.frames import FramePreprocessor, FrameReadError, checked_frames
from gmpvis.infer.offline import ClipStitcher, track_offline
from gmpvis.infer.online import track_online
from gmpvis.infer.stepper import Stepper
from gmpvis.infer.timing import LatencyStats
from gmpvis.infer.tracker import OnlineTracker
from gmpvis.model import build_model

# Model fields that do not change the network's parameters (a checkpoint of another value
# still loads); every other field must equal the asked preset's.
_NON_ARCH_FIELDS = {"pretrained_weights", "train_backbone", "dropout", "num_classes", "aux_loss"}


def load_model(
    path, *, preset: str | None = None, overrides: list[str] | None = None, trust: bool = False
) -> tuple[nn.Module, Config, list[int]]:
    """A trained model from a checkpoint -> (model on the CPU in eval mode, config,
    category ids by label, possibly empty).

    The config is the checkpoint's (model, data, tracker, ...) with the machine sections
    (``infer``, ``runtime``) at their defaults, then ``overrides`` (e.g. ``data.scales=360``,
    ``tracker.max_missing=8``). ``preset``: the preset the caller expects; an architecture
    that differs raises :class:`CheckpointError` naming the file and the fields. ``trust``:
    also read a checkpoint that only full unpickling loads (it can run code; see
    :func:`gmpvis.checkpoint.load_checkpoint`).
    """
    state = load_checkpoint(path, trust=trust)
    try:
        cfg = with_machine_defaults(config_from_dict(state["config"]))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path}: invalid config: {err}") from err
    if preset is not None:
        want = config_to_dict(get_config(preset))["model"]
        have = config_to_dict(cfg)["model"]
        diff = [
            f"{k}={have.get(k)!r} (preset {preset}: {v!r})"
            for k, v in want.items()
            if k not in _NON_ARCH_FIELDS and have.get(k) != v
        ]
        if diff:
            raise CheckpointError(
                f"checkpoint {path} is not a {preset!r} model: " + ", ".join(diff[:6])
            )
    cfg = validate(apply_overrides(cfg, overrides))
    model = build_model(cfg)
    weights = state["model"]
    if not isinstance(weights, dict):
        raise CheckpointError(f"checkpoint {path}: 'model' is not a state dict")
    # checkpoints of compiled / DDP models prefix the keys
    weights = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in weights.items()}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()
        raise CheckpointError(
            f"checkpoint {path} does not fit its configured model "
            f"(backbone {cfg.model.backbone}, hidden {cfg.model.hidden_dim}): "
            + " ".join(first[:4])[:600]
        ) from err
    category_ids = [int(c) for c in state.get("category_ids") or []]
    if category_ids and len(category_ids) != cfg.model.num_classes:
        raise CheckpointError(
            f"checkpoint {path}: {len(category_ids)} category ids for "
            f"{cfg.model.num_classes} classes"
        )
    return model.eval(), cfg, category_ids


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block, its train/eval mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def build_stepper(model: nn.Module, cfg: Config, device: torch.device) -> Stepper:
    """The per-frame step of ``cfg.infer`` (the model must be prepared for ``device``)."""
    i = cfg.infer
    return Stepper(model, device, amp=i.amp, compile=i.compile, cuda_graphs=i.cuda_graphs)


def build_preprocessor(cfg: Config, device: torch.device) -> FramePreprocessor:
    """Frames at the evaluation size: short side ``max(data.scales)``, long ``data.max_size``."""
    return FramePreprocessor(
        max(cfg.data.scales), cfg.data.max_size, device, cfg.infer.channels_last
    )


@dataclass
class VideoPrediction:
    """One video's YouTube-VIS results and timings. ``num_frames``: frames actually read."""

    source: VideoSource
    results: list[dict]
    stats: LatencyStats
    num_frames: int


@torch.no_grad()
def predict_videos(
    model: nn.Module,
    cfg: Config,
    sources: Iterable[VideoSource],
    category_ids: list[int],
    device: torch.device,
) -> Iterator[VideoPrediction]:
    """Track every video of ``sources`` (online or offline, ``cfg.infer.mode``; association
    ``cfg.tracker.association``) -> one
    :class:`VideoPrediction` per video, in order. ``category_ids[label]`` names each class.

    The model must be in eval mode on ``device`` (``stepper.prepare_model``, or
    :func:`eval_mode` for a model being trained)."""
    stepper = build_stepper(model, cfg, device)
    preprocess = build_preprocessor(cfg, device)
    for src in sources:
        frames, hw = checked_frames(src), (src.height, src.width)
        associate = build_associator(cfg.tracker.association, model.gm_head)
        if cfg.infer.mode == "offline":
            tracker = ClipStitcher(associate, cfg.tracker)
            stats, n = track_offline(
                stepper,
                frames,
                hw,
                preprocess,
                tracker,
                clip_len=cfg.infer.offline_clip_len,
                overlap=cfg.infer.offline_overlap,
            )
        else:
            tracker = OnlineTracker(associate, cfg.tracker)
            stats, n = track_online(stepper, frames, hw, preprocess, tracker)
        if n == 0:
            raise FrameReadError(f"video {src.name!r} (id {src.video_id}): no frames decoded")
        yield VideoPrediction(src, tracker.results(src.video_id, n, category_ids), stats, n)


def annotated_sources(gt: dict, video_ids: list[int], frames_root: str) -> list[VideoSource]:
    """Frame-file sources of the listed videos of a YouTube-VIS annotation dict."""
    wanted = set(int(v) for v in video_ids)
    return [
        FrameFilesSource(
            v["id"],
            str(v["id"]),
            [os.path.join(frames_root, name) for name in v["file_names"]],
            v["height"],
            v["width"],
        )
        for v in gt["videos"]
        if int(v["id"]) in wanted
    ]


def subset_ground_truth(gt: dict, video_ids: list[int]) -> dict:
    """The annotation dict restricted to ``video_ids`` (all categories kept)."""
    keep = set(int(v) for v in video_ids)
    return {
        **gt,
        "videos": [v for v in gt["videos"] if int(v["id"]) in keep],
        "annotations": [a for a in gt.get("annotations", []) if int(a["video_id"]) in keep],
    }


def evaluate_videos(
    model: nn.Module, cfg: Config, gt: dict, video_ids: list[int], frames_root: str
) -> dict:
    """Track the listed videos of ``gt`` and score them (AP, AP50, AP75, APs/m/l, AR1, AR10,
    ...). The model runs on its own device in eval mode; its mode is restored after."""
    category_ids = sorted(int(c["id"]) for c in gt["categories"])
    device = next(model.parameters()).device
    sources = annotated_sources(gt, video_ids, frames_root)
    with eval_mode(model):
        results = [
            r
            for video in predict_videos(model, cfg, sources, category_ids, device)
            for r in video.results
        ]
    return evaluate(subset_ground_truth(gt, video_ids), results)
