"""Run a model over a whole video and track its instances (offline windows of frames).

Frames are resized like evaluation clips (short side ``max(cfg.data.scales)``), fed to the
model ``window`` frames at a time (the temporal layer aggregates within a window), and each
frame's proposals go to the :class:`OnlineTracker` in order. Masks come back at the video's
original size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gmpvis.config import Config
from gmpvis.data.inputs import to_tensor
from gmpvis.data.transforms import resized_hw
from gmpvis.engine.tracker import FrameProposals, OnlineTracker, TrackerConfig


def preprocess_frame(frame: np.ndarray, cfg: Config) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> normalised float32 ``[3, h, w]`` at the evaluation size."""
    h, w = frame.shape[:2]
    x = to_tensor(frame, normalize=True)
    hw = resized_hw(h, w, max(cfg.data.scales), cfg.data.max_size)
    if hw != (h, w):
        x = F.interpolate(x[None], size=hw, mode="bilinear", align_corners=False)[0]
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
    window: int = 8,
    device: torch.device | None = None,
    amp_dtype: torch.dtype | None = None,
) -> OnlineTracker:
    """Track every instance of one video; returns the tracker (``.results(...)`` after)."""
    model.eval()
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
