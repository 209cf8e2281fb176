"""Batching clips of different sizes: zero padding (right / bottom) plus a padding mask."""

from __future__ import annotations

import torch


def collate_clips(samples: list, *, size_divisibility: int = 0) -> dict:
    """``[(frames [T,3,H_b,W_b], target), ...]`` -> batch dict.

    Returns:
        ``frames`` float32 ``[B, T, 3, Hp, Wp]`` zero-padded to the batch max (rounded up to
        a multiple of ``size_divisibility`` when > 0), ``pad_mask`` bool ``[B, Hp, Wp]`` True
        on padding, ``targets`` list of the B target dicts (unpadded).
    """
    if not samples:
        raise ValueError("collate_clips: empty batch")
    frames = [s[0] for s in samples]
    t, c = frames[0].shape[:2]
    for b, f in enumerate(frames):
        if f.dim() != 4 or tuple(f.shape[:2]) != (t, c):
            raise ValueError(
                f"collate_clips: sample {b} frames have shape {tuple(f.shape)}, expected "
                f"[{t}, {c}, H, W] like sample 0 (same clip length in a batch)"
            )
    hp = max(f.shape[-2] for f in frames)
    wp = max(f.shape[-1] for f in frames)
    if size_divisibility > 0:
        d = size_divisibility
        hp, wp = (hp + d - 1) // d * d, (wp + d - 1) // d * d
    out = frames[0].new_zeros((len(frames), t, c, hp, wp))
    pad_mask = torch.ones((len(frames), hp, wp), dtype=torch.bool)
    for b, f in enumerate(frames):
        h, w = f.shape[-2:]
        out[b, :, :, :h, :w] = f
        pad_mask[b, :h, :w] = False
    return {"frames": out, "pad_mask": pad_mask, "targets": [s[1] for s in samples]}
