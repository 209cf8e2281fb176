"""Tiny synthetic clips for the model tests: random frames with 2 moving boxes / masks."""

from __future__ import annotations

import pytest
import torch

from gmpvis.config import get_config


def synthetic_clip(T: int, H: int, W: int, num_classes: int, gen: torch.Generator):
    """Random frame noise plus two bright rectangles moving linearly; instance 1 leaves the
    clip in the last frame. -> (frames ``[T, 3, H, W]``, contract target dict)."""
    N = 2
    frames = torch.randn(T, 3, H, W, generator=gen) * 0.3
    masks = torch.zeros(T, N, H, W, dtype=torch.bool)
    boxes = torch.zeros(T, N, 4)
    valid = torch.ones(T, N, dtype=torch.bool)
    valid[T - 1, 1] = T == 1  # instance 1 leaves in the last frame of multi-frame clips
    labels = torch.randint(0, num_classes, (N,), generator=gen)
    for n in range(N):
        bh = int(torch.randint(H // 5, H // 3, (1,), generator=gen))
        bw = int(torch.randint(W // 5, W // 3, (1,), generator=gen))
        y0 = int(torch.randint(0, H - bh - 2 * T, (1,), generator=gen))
        x0 = int(torch.randint(0, W - bw - 3 * T, (1,), generator=gen))
        color = torch.randn(3, generator=gen)[:, None, None] * 1.5
        for t in range(T):
            if not valid[t, n]:
                continue
            y, x = y0 + 2 * t, x0 + 3 * t
            masks[t, n, y : y + bh, x : x + bw] = True
            frames[t, :, y : y + bh, x : x + bw] += color
            boxes[t, n] = torch.tensor([(x + bw / 2) / W, (y + bh / 2) / H, bw / W, bh / H])
    target = {
        "labels": labels,
        "instance_ids": torch.tensor([11, 42]),
        "boxes": boxes,
        "masks": masks,
        "valid": valid,
        "size": torch.tensor([H, W]),
        "orig_size": torch.tensor([H, W]),
        "video_id": 0,
        "frame_indices": torch.arange(T),
    }
    return frames, target


def make_batch(B: int = 2, T: int = 3, H: int = 72, W: int = 88, num_classes: int = 4, seed=0):
    """-> (frames ``[B, T, 3, H, W]``, pad_mask ``[B, H, W]``, targets). Clip 1 (if any) is
    narrower and zero-padded on the right, as ``collate_clips`` does."""
    gen = torch.Generator().manual_seed(seed)
    frames = torch.zeros(B, T, 3, H, W)
    pad = torch.zeros(B, H, W, dtype=torch.bool)
    targets = []
    for b in range(B):
        w = W if b == 0 else W - 16
        f, tgt = synthetic_clip(T, H, w, num_classes, gen)
        frames[b, :, :, :, :w] = f
        pad[b, :, w:] = True
        targets.append(tgt)
    return frames, pad, targets


@pytest.fixture
def tiny_cfg():
    """The ``tiny`` preset made smaller still for fast tests."""
    return get_config(
        "tiny",
        [
            "model.hidden_dim=32",
            "model.dim_feedforward=64",
            "model.num_queries=10",
            "model.tiny_channels=8",
            "model.mask_dim=16",
            "model.embed_dim=16",
            "model.mask_stride=8",
        ],
    )


@pytest.fixture
def batch_factory():
    """``make_batch`` as a fixture (test modules are imported by path, not as a package)."""
    return make_batch
