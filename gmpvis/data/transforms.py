"""Clip-consistent augmentation: one random draw per clip, applied to every frame and mask.

A transform takes and returns ``(frames, masks)``:
``frames`` uint8 (or float) ``[T, 3, H, W]``, ``masks`` bool ``[T, N, H, W]``. Boxes are not
transformed here: the dataset derives them from the transformed masks, so they follow every
resize, crop and flip exactly. Random draws use torch's generator, which DataLoader seeds
differently in every worker.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Clip = tuple[torch.Tensor, torch.Tensor]


def resized_hw(h: int, w: int, short: int, max_size: int | None) -> tuple[int, int]:
    """Output size with the short side ``short`` and the long side at most ``max_size``.

    Aspect ratio is kept: ``long' = short * long / short_in``; if that exceeds
    ``max_size`` the short side becomes ``floor(max_size * short_in / long)``.
    """
    lo, hi = min(h, w), max(h, w)
    if max_size is not None and short * hi / lo > max_size:
        short = int(math.floor(max_size * lo / hi))
    long = int(round(short * hi / lo))
    short = max(short, 1)
    return (short, long) if h <= w else (long, short)


def resize_clip(frames: torch.Tensor, masks: torch.Tensor, hw: tuple[int, int]) -> Clip:
    """Bilinear (antialiased) frames, nearest masks: ``[T,3,h,w]``, ``[T,N,h,w]``."""
    if tuple(frames.shape[-2:]) == tuple(hw):
        return frames, masks
    frames = TF.resize(frames, list(hw), InterpolationMode.BILINEAR, antialias=True)
    if masks.numel():
        m = TF.resize(masks.to(torch.uint8), list(hw), InterpolationMode.NEAREST_EXACT)
        masks = m.bool()
    else:
        masks = masks.new_zeros((*masks.shape[:2], *hw))
    return frames, masks


class Compose:
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, frames: torch.Tensor, masks: torch.Tensor) -> Clip:
        for t in self.transforms:
            frames, masks = t(frames, masks)
        return frames, masks

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class RandomHorizontalFlip:
    """Flip the whole clip left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, frames: torch.Tensor, masks: torch.Tensor) -> Clip:
        if torch.rand(()) < self.p:
            return frames.flip(-1), masks.flip(-1)
        return frames, masks


class RandomResize:
    """Multi-scale resize: short side drawn from ``scales`` (one draw per clip)."""

    def __init__(self, scales: Sequence[int], max_size: int | None = None):
        if not scales or any(int(s) <= 0 for s in scales):
            raise ValueError(f"RandomResize: scales must be positive sizes, got {scales!r}")
        self.scales, self.max_size = [int(s) for s in scales], max_size

    def __call__(self, frames: torch.Tensor, masks: torch.Tensor) -> Clip:
        short = self.scales[int(torch.randint(len(self.scales), ()))]
        h, w = frames.shape[-2:]
        return resize_clip(frames, masks, resized_hw(h, w, short, self.max_size))


class RandomSizeCrop:
    """Crop one random window (each side a fraction in [min_frac, 1]) from every frame."""

    def __init__(self, min_frac: float = 0.6):
        if not 0 < min_frac <= 1:
            raise ValueError(f"RandomSizeCrop: min_frac must be in (0, 1], got {min_frac}")
        self.min_frac = min_frac

    def __call__(self, frames: torch.Tensor, masks: torch.Tensor) -> Clip:
        h, w = frames.shape[-2:]
        ch = int(torch.randint(max(1, math.ceil(h * self.min_frac)), h + 1, ()))
        cw = int(torch.randint(max(1, math.ceil(w * self.min_frac)), w + 1, ()))
        y0 = int(torch.randint(0, h - ch + 1, ()))
        x0 = int(torch.randint(0, w - cw + 1, ()))
        return frames[..., y0 : y0 + ch, x0 : x0 + cw], masks[..., y0 : y0 + ch, x0 : x0 + cw]


class RandomSelect:
    """Apply ``first`` with probability ``p``, otherwise ``second`` (DETR's choice)."""

    def __init__(self, first, second, p: float = 0.5):
        self.first, self.second, self.p = first, second, p

    def __call__(self, frames: torch.Tensor, masks: torch.Tensor) -> Clip:
        return (self.first if torch.rand(()) < self.p else self.second)(frames, masks)


class Normalize:
    """uint8 ``[T,3,H,W]`` -> float32 ``(x / 255 - mean) / std``."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, frames: torch.Tensor, masks: torch.Tensor) -> Clip:
        x = frames.float()
        if frames.dtype == torch.uint8:
            x = x / 255.0
        return (x - self.mean) / self.std, masks


def build_train_transforms(
    scales: Sequence[int],
    max_size: int | None = None,
    *,
    flip_prob: float = 0.5,
    crop_prob: float = 0.5,
    min_crop: float = 0.6,
) -> Compose:
    """Flip, then either a multi-scale resize, or a crop followed by one; then normalise."""
    resize = RandomResize(scales, max_size)
    crop_then_resize = Compose([RandomSizeCrop(min_crop), RandomResize(scales, max_size)])
    return Compose(
        [
            RandomHorizontalFlip(flip_prob),
            RandomSelect(crop_then_resize, resize, p=crop_prob),
            Normalize(),
        ]
    )


def build_eval_transforms(size: int, max_size: int | None = None) -> Compose:
    """Deterministic: short side ``size`` (long side capped by ``max_size``), normalise."""
    return Compose([RandomResize([size], max_size), Normalize()])
