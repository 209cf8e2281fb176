"""Run a model over a whole video: checkpoint loading, mask decoding, ``track_video``.

``track_video`` tracks one video either online (default: frame by frame through
``model.step`` with the rolling temporal memory, the loop of :mod:`gmpvis.engine.online`
that ``infer.py`` runs) or in consecutive clips of ``window`` frames (clip mode: the
temporal layer aggregates within a clip), each frame's proposals going to one
:class:`OnlineTracker` in order. Masks come back at the video's original size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gmpvis.config import Config, config_from_dict, config_to_dict, get_config
from gmpvis.data.inputs import to_tensor
from gmpvis.data.transforms import resized_hw
from gmpvis.engine.checkpoint import CheckpointError, load_checkpoint
from gmpvis.engine.tracker import FrameProposals, OnlineTracker, TrackerConfig

# ----------------------------------------------------------------- checkpoints
# Model fields that do not change the network's parameters (a checkpoint of another value
# still loads); every other field must equal the asked preset's.
_NON_ARCH_FIELDS = {"pretrained_weights", "train_backbone", "dropout", "num_classes", "aux_loss"}


def load_model(
    path, *, preset: str | None = None, overrides: list[str] | None = None
) -> tuple[nn.Module, Config, list[int]]:
    """A trained model from a checkpoint -> (model on the CPU in eval mode, config,
    category ids by label, possibly empty).

    ``preset``: the preset the caller expects; an architecture that differs raises
    :class:`CheckpointError` naming the file and the fields. ``overrides`` change inference
    settings of the stored config (e.g. ``data.scales=360``).
    """
    from gmpvis.model import build_model

    state = load_checkpoint(path)
    try:
        cfg = config_from_dict(state["config"])
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
    if overrides:
        from gmpvis.config import apply_overrides, validate

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


def preprocess_frame(frame: np.ndarray, cfg: Config) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> normalised float32 ``[3, h, w]`` at the evaluation size."""
    h, w = frame.shape[:2]
    x = to_tensor(frame, normalize=True)
    hw = resized_hw(h, w, max(cfg.data.scales), cfg.data.max_size)
    if hw != (h, w):
        # antialiased, as the evaluation transforms resize
        x = F.interpolate(x[None], size=hw, mode="bilinear", align_corners=False, antialias=True)
        x = x[0]
    return x


def mask_decoder(mask_logits: torch.Tensor, input_hw: tuple[int, int], orig_hw: tuple[int, int]):
    """``mask_logits [Nq, h_m, w_m]`` at the model's mask stride of an input of size
    ``input_hw`` -> ``fn(indices) -> [n, H, W] bool`` at the original size."""

    def decode(indices: torch.Tensor) -> torch.Tensor:
        logits = mask_logits[indices].float()[None]  # [1, n, h_m, w_m]
        stride_h = input_hw[0] / logits.shape[-2]
        stride_w = input_hw[1] / logits.shape[-1]
        full = F.interpolate(
            logits,
            size=(round(logits.shape[-2] * stride_h), round(logits.shape[-1] * stride_w)),
            mode="bilinear",
            align_corners=False,
        )[..., : input_hw[0], : input_hw[1]]
        full = F.interpolate(full, size=orig_hw, mode="bilinear", align_corners=False)
        return (full[0] > 0).cpu()

    return decode


def windows(frames: Iterable[torch.Tensor], size: int) -> Iterator[list[torch.Tensor]]:
    """Consecutive lists of at most ``size`` frames."""
    chunk: list[torch.Tensor] = []
    for f in frames:
        chunk.append(f)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@torch.no_grad()
def track_video(
    model: nn.Module,
    frames: Iterable[np.ndarray],
    orig_hw: tuple[int, int],
    cfg: Config,
    *,
    tracker_cfg: TrackerConfig | None = None,
    window: int | None = None,
    device: torch.device | None = None,
    amp_dtype: torch.dtype | None = None,
) -> OnlineTracker:
    """Track every instance of one video; returns the tracker (``.results(...)`` after).

    ``window=None``: online, as ``infer.py`` runs; an int: clips of that many frames. The
    model's train/eval mode is restored afterwards (the trainer calls this mid-training).
    """
    was_training = model.training
    model.eval()
    try:
        if window is None:
            from gmpvis.engine.online import AMP_DTYPES, RunOptions, build_stepper, track_frames

            amp = next(k for k, v in AMP_DTYPES.items() if v == amp_dtype)
            dev = device or next(model.parameters()).device
            stepper = build_stepper(model, RunOptions(device=str(dev), amp=amp))
            return track_frames(stepper, frames, orig_hw, cfg, tracker_cfg)[0]
        return _track_windows(model, frames, orig_hw, cfg, tracker_cfg, window, device, amp_dtype)
    finally:
        model.train(was_training)


def _track_windows(model, frames, orig_hw, cfg, tracker_cfg, window, device, amp_dtype):
    if window < 1:
        raise ValueError(f"window: expected >= 1 frames or None (online), got {window}")
    device = device or next(model.parameters()).device
    tracker = OnlineTracker(model.associate, tracker_cfg)
    autocast = (
        torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    )
    for chunk in windows((preprocess_frame(f, cfg) for f in frames), window):
        clip = torch.stack(chunk).to(device)[None]  # [1, T, 3, h, w]
        pad_mask = torch.zeros(1, *clip.shape[-2:], dtype=torch.bool, device=device)
        with autocast:
            out = model(clip, pad_mask)
        input_hw = tuple(clip.shape[-2:])
        for t in range(clip.shape[1]):
            tracker.step(
                FrameProposals(
                    logits=out["pred_logits"][0, t],
                    boxes=out["pred_boxes"][0, t],
                    embeds=out["pred_embeds"][0, t],
                    mask_fn=mask_decoder(out["pred_masks"][0, t], input_hw, orig_hw),
                )
            )
    return tracker
