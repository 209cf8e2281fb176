"""Clip-consistent transforms: one draw per clip; masks (and boxes) follow the frames."""

from __future__ import annotations

import pytest
import torch

from gmpvis.data import build_eval_transforms, build_train_transforms, masks_to_boxes
from gmpvis.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize,
    RandomHorizontalFlip,
    RandomResize,
    RandomSizeCrop,
    resized_hw,
)


def _coord_clip(t: int, h: int, w: int, n: int):
    """Frames whose pixels encode (frame, y, x), and random blob masks ``[T, N, H, W]``."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    frames = torch.stack([torch.stack([torch.full((h, w), k), yy, xx]) for k in range(t)]).to(
        torch.uint8
    )
    masks = torch.rand(t, n, h, w) < 0.3
    return frames, masks


@pytest.mark.parametrize("h,w", [(37, 53), (61, 29), (40, 40)])
@pytest.mark.parametrize("short,max_size", [(24, None), (50, 70), (100, 90)])
def test_resized_hw(h, w, short, max_size):
    oh, ow = resized_hw(h, w, short, max_size)
    if max_size is not None:
        assert max(oh, ow) <= max_size
    if max_size is None or short * max(h, w) / min(h, w) <= max_size:
        assert min(oh, ow) == short
    assert abs(oh / ow - h / w) < 0.05  # aspect ratio kept up to rounding
    assert (oh <= ow) == (h <= w)


def test_flip_is_shared_by_all_frames_and_masks():
    frames, masks = _coord_clip(4, 23, 31, 3)
    f, m = RandomHorizontalFlip(p=1.0)(frames, masks)
    assert torch.equal(f, frames.flip(-1)) and torch.equal(m, masks.flip(-1))
    b0, b1 = masks_to_boxes(masks), masks_to_boxes(m)
    torch.testing.assert_close(b1[..., 0], 1 - b0[..., 0])  # cx mirrors
    torch.testing.assert_close(b1[..., 1:], b0[..., 1:])
    f, m = RandomHorizontalFlip(p=0.0)(frames, masks)
    assert torch.equal(f, frames) and torch.equal(m, masks)


def test_crop_window_is_shared():
    frames, masks = _coord_clip(5, 41, 57, 2)
    for _ in range(10):
        f, m = RandomSizeCrop(0.5)(frames, masks)
        h, w = f.shape[-2:]
        assert 21 <= h <= 41 and 29 <= w <= 57 and m.shape == (5, 2, h, w)
        y0, x0 = int(f[0, 1, 0, 0]), int(f[0, 2, 0, 0])
        for k in range(5):
            assert int(f[k, 0, 0, 0]) == k
            assert torch.equal(f[k, 1:], frames[k, 1:, y0 : y0 + h, x0 : x0 + w])
        assert torch.equal(m, masks[..., y0 : y0 + h, x0 : x0 + w])
    with pytest.raises(ValueError, match="min_frac"):
        RandomSizeCrop(0.0)


def test_multiscale_resize_same_size_for_the_clip():
    frames, masks = _coord_clip(3, 37, 53, 4)
    tr = RandomResize([20, 31, 44], max_size=80)
    seen = set()
    for _ in range(30):
        f, m = tr(frames, masks)
        assert f.shape[:2] == (3, 3) and m.shape[:2] == (3, 4) and m.dtype == torch.bool
        assert f.shape[-2:] == m.shape[-2:]
        seen.add(min(f.shape[-2:]))
    assert seen == {20, 31, 44}
    # nearest-neighbour masks: an upscaled block stays a block of the scaled size
    masks = torch.zeros(2, 1, 10, 10, dtype=torch.bool)
    masks[:, 0, 2:6, 4:8] = True
    _, m = RandomResize([20])(torch.zeros(2, 3, 10, 10, dtype=torch.uint8), masks)
    assert m[:, 0].sum().item() == 2 * 64 and m[0, 0, 4:12, 8:16].all()
    with pytest.raises(ValueError, match="scales"):
        RandomResize([])


def test_normalize_and_eval_transforms():
    frames = torch.randint(0, 256, (2, 3, 17, 9), dtype=torch.uint8)
    masks = torch.rand(2, 1, 17, 9) < 0.5
    x, m = Normalize()(frames, masks)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (frames.float() / 255 - mean) / std)
    assert m is masks
    f, m = build_eval_transforms(27, 40)(frames, masks)
    assert f.dtype == torch.float32 and f.shape[-2:] == m.shape[-2:] == (40, 21)
    f2, m2 = build_eval_transforms(27, 40)(frames, masks)
    assert torch.equal(f, f2) and torch.equal(m, m2)  # deterministic


def test_train_transforms_keep_masks_aligned_with_frames():
    # the mask is exactly where channel 0 is bright: after any augmentation the two agree
    t, h, w = 3, 45, 67
    frames = torch.zeros(t, 3, h, w, dtype=torch.uint8)
    masks = torch.zeros(t, 1, h, w, dtype=torch.bool)
    for k in range(t):
        y, x = int(torch.randint(5, 25, ())), int(torch.randint(5, 40, ()))
        masks[k, 0, y : y + 14, x : x + 20] = True
    frames[:, 0] = masks[:, 0].to(torch.uint8) * 255
    tr = build_train_transforms([30, 52], 90, flip_prob=0.5, crop_prob=0.5, min_crop=0.7)
    mean0, std0 = IMAGENET_MEAN[0], IMAGENET_STD[0]
    for _ in range(12):
        f, m = tr(frames, masks)
        bright = (f[:, 0] * std0 + mean0) > 0.5
        agree = (bright == m[:, 0]).float().mean()
        assert agree > 0.97, agree  # only resampling at the blob border may differ
