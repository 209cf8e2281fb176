"""Training clips from a YouTube-VIS style dataset: ``dataset[i] -> (frames, target)``.

A clip is T sorted frame indices of one video whose consecutive gaps are at most
``max_gap``; instances absent (null or empty mask) from every sampled frame are dropped,
the rest keep their annotation id as identity across the clip. See the target layout in
:class:`YTVISDataset`.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from gmpvis.data.frame_files import read_frame, verify_wanted
from gmpvis.data.split import split_videos
from gmpvis.data.transforms import Normalize, build_eval_transforms, build_train_transforms
from gmpvis.data.ytvis import YTVISAnnotations


def sample_clip_indices(
    length: int, clip_len: int, max_gap: int, rng: np.random.Generator
) -> np.ndarray:
    """T sorted frame indices in ``[0, length)`` with gaps in ``[1, max_gap]``: int64 ``[T]``.

    A video shorter than T gives all its frames plus random repeats (gaps of 0).
    """
    if length <= 0 or clip_len <= 0 or max_gap < 1:
        raise ValueError(
            f"sample_clip_indices: need length, clip_len >= 1 and max_gap >= 1, got "
            f"length={length}, clip_len={clip_len}, max_gap={max_gap}"
        )
    if length <= clip_len:
        extra = rng.integers(0, length, clip_len - length)
        return np.sort(np.concatenate([np.arange(length), extra])).astype(np.int64)
    gaps = rng.integers(1, max_gap + 1, clip_len - 1)
    # shrink random gaps (> 1) until the clip fits in the video: sum(gaps) <= length - 1
    for _ in range(int(gaps.sum()) - (length - 1)):
        big = np.flatnonzero(gaps > 1)
        gaps[rng.choice(big)] -= 1
    start = rng.integers(0, length - int(gaps.sum()))
    return (start + np.concatenate([[0], np.cumsum(gaps)])).astype(np.int64)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes of bool masks ``[..., H, W]`` -> normalised cxcywh ``[..., 4]``.

    The box spans pixel edges (``x1 = last column + 1``), divided by (W, H); empty masks
    give 0.
    """
    h, w = masks.shape[-2:]
    rows, cols = masks.any(-1), masks.any(-2)  # [..., H], [..., W]
    valid = rows.any(-1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ar_h, h).amin(-1)
    y1 = torch.where(rows, ar_h + 1, 0).amax(-1)
    x0 = torch.where(cols, ar_w, w).amin(-1)
    x1 = torch.where(cols, ar_w + 1, 0).amax(-1)
    box = torch.stack([(x0 + x1) / (2 * w), (y0 + y1) / (2 * h), (x1 - x0) / w, (y1 - y0) / h], -1)
    return torch.where(valid[..., None], box.float(), 0.0)


class YTVISDataset(torch.utils.data.Dataset):
    """Training clips, one per video per epoch (``samples_per_video`` for more).

    ``dataset[i] -> (frames, target)`` with ``frames`` float32 ``[T, 3, H, W]`` (ImageNet
    normalised after the transforms) and ``target``:

    - ``labels`` int64 ``[N]`` contiguous 0..C-1 (``category_ids[label]`` is the JSON id)
    - ``instance_ids`` int64 ``[N]`` annotation ids (identity across the clip)
    - ``boxes`` float32 ``[T, N, 4]`` normalised cxcywh of the masks, 0 where invalid
    - ``masks`` bool ``[T, N, H, W]``; ``valid`` bool ``[T, N]`` (non-empty mask)
    - ``size`` int64 ``[2]`` (H, W) after transforms; ``orig_size`` int64 ``[2]``
    - ``video_id`` int; ``frame_indices`` int64 ``[T]``

    Args:
        annotations: a :class:`YTVISAnnotations` or the path of an annotation file.
        frames_root: folder that ``file_names`` are relative to (``<root>/JPEGImages``).
        transforms: ``(frames uint8 [T,3,H,W], masks [T,N,H,W]) -> same``; None only
            normalises.
        video_ids: restrict to these videos (e.g. one side of :func:`split_videos`).
        retries: resample the frames up to this many times when no instance is visible.
        skip_bad_videos, cache_dir: passed to :meth:`YTVISAnnotations.load` for a path.
    """

    def __init__(
        self,
        annotations: YTVISAnnotations | str | os.PathLike,
        frames_root: str | os.PathLike,
        *,
        clip_len: int = 3,
        max_gap: int = 3,
        transforms=None,
        video_ids=None,
        samples_per_video: int = 1,
        retries: int = 3,
        skip_bad_videos: bool = False,
        cache_dir: str | os.PathLike | None = None,
    ):
        if clip_len < 1 or max_gap < 1 or samples_per_video < 1:
            raise ValueError(
                f"YTVISDataset: clip_len, max_gap and samples_per_video must be >= 1, got "
                f"{clip_len}, {max_gap}, {samples_per_video}"
            )
        if not isinstance(annotations, YTVISAnnotations):
            annotations = YTVISAnnotations.load(
                annotations,
                frames_root=frames_root,
                skip_bad_videos=skip_bad_videos,
                cache_dir=cache_dir,
            )
        if video_ids is not None:
            annotations = annotations.subset(video_ids)
        self.ann = annotations
        self.frames_root = os.fspath(frames_root)
        self.clip_len, self.max_gap = clip_len, max_gap
        self.transforms = transforms if transforms is not None else Normalize()
        self.samples_per_video, self.retries = samples_per_video, retries

    @property
    def category_ids(self) -> list[int]:
        return self.ann.category_ids

    @property
    def num_classes(self) -> int:
        return self.ann.num_classes

    def __len__(self) -> int:
        return len(self.ann) * self.samples_per_video

    def sample_indices(self, video: int, rng: np.random.Generator) -> np.ndarray:
        """Frame indices of one clip, preferring clips where an instance is visible."""
        length = int(self.ann.lengths[video])
        anns = self.ann.annotations_of(video)
        for _ in range(self.retries + 1):
            idx = sample_clip_indices(length, self.clip_len, self.max_gap, rng)
            if len(anns) == 0 or self.ann.present(anns, idx).any():
                break
        return idx

    def load_clip(self, video: int, frame_indices) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Untransformed clip: frames uint8 ``[T,3,H,W]``, masks bool ``[T,N,H,W]``, ann pos.

        Only annotations non-null in at least one of the frames are kept.
        """
        info = self.ann.video(video)
        idx = np.asarray(frame_indices, np.int64)
        if idx.min() < 0 or idx.max() >= info.length:
            raise IndexError(f"video id {info.id}: frame indices {idx} outside [0, {info.length})")
        hw = (info.height, info.width)
        frames = np.stack(
            [
                read_frame(os.path.join(self.frames_root, info.file_names[t]), hw, f"id {info.id}")
                for t in idx
            ]
        )
        anns = self.ann.annotations_of(video)
        anns = anns[self.ann.present(anns, idx).any(1)] if len(anns) else anns
        masks = self.ann.decode_masks(anns, idx, video)  # [N, T, H, W]
        frames_t = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
        masks_t = torch.from_numpy(masks).transpose(0, 1).contiguous()
        return frames_t, masks_t, anns

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(f"YTVISDataset index {i} out of range [0, {len(self)})")
        video = i // self.samples_per_video
        # seeded from torch so that DataLoader workers and torch.manual_seed control it
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        idx = self.sample_indices(video, rng)
        frames, masks, anns = self.load_clip(video, idx)
        info = self.ann.video(video)
        frames, masks = self.transforms(frames, masks)
        valid = masks.flatten(2).any(-1)  # [T, N]
        keep = valid.any(0)  # a crop can remove an instance from every frame
        masks, valid = masks[:, keep], valid[:, keep]
        keep_np = keep.numpy()
        target = {
            "labels": torch.from_numpy(self.ann.ann_labels[anns][keep_np]).long(),
            "instance_ids": torch.from_numpy(self.ann.ann_ids[anns][keep_np]).long(),
            "boxes": masks_to_boxes(masks),
            "masks": masks,
            "valid": valid,
            "size": torch.tensor(frames.shape[-2:], dtype=torch.int64),
            "orig_size": torch.tensor([info.height, info.width], dtype=torch.int64),
            "video_id": info.id,
            "frame_indices": torch.from_numpy(idx),
        }
        return frames.float(), target


def _check_training_split(ann: YTVISAnnotations) -> None:
    if len(ann) == 0:
        raise ValueError(f"{ann.source}: the training split has no videos")
    if len(ann.ann_ids) == 0:
        raise ValueError(
            f"{ann.source}: the training split ({len(ann)} videos) has no annotations: nothing "
            "to learn from (an inference file such as valid.json? a wrong data.ann_file?)"
        )


def build_dataset(
    data_cfg,
    split: str = "train",
    *,
    train: bool | None = None,
    cache_dir=None,
    annotations: YTVISAnnotations | None = None,
    video_ids: list[int] | None = None,
) -> YTVISDataset:
    """Dataset from a ``Config.data`` section: ``split`` is "train", "holdout" or "all".

    Training transforms for "train" (multi-scale, crop, flip), evaluation ones otherwise
    (short side ``max(scales)``), unless ``train`` says otherwise. ``cache_dir``: see
    :meth:`YTVISAnnotations.load`. ``annotations``: the already-parsed file (then
    ``data_cfg.ann_file`` is not read again). ``video_ids``: the split's videos when the
    caller has already split them (``split_videos``), else they are computed here.

    ``data_cfg.verify_frames`` ("auto", "true", "false"): open the header of every frame of
    the index once, up front (auto: for datasets of at most
    :data:`~gmpvis.data.frame_files.VERIFY_AUTO_MAX_FRAMES` frames); without it a bad frame
    is named when a clip first reads it. A training split without videos or without a
    single annotation is refused (ValueError): there would be nothing to learn from.
    """
    if split not in ("train", "holdout", "all"):
        raise ValueError(f"build_dataset: split must be train, holdout or all, got {split!r}")
    frames_root = os.path.join(data_cfg.root, "JPEGImages")
    ann = annotations
    if ann is None:
        ann_file = data_cfg.ann_file or os.path.join(data_cfg.root, "annotations.json")
        ann = YTVISAnnotations.load(ann_file, frames_root=frames_root, cache_dir=cache_dir)
    if verify_wanted(getattr(data_cfg, "verify_frames", "auto"), int(ann.lengths.sum())):
        ann = ann.verify_frame_headers(frames_root)
    ids = video_ids
    if split != "all" and ids is None:
        tr, ho = split_videos(ann.video_ids, data_cfg.holdout_fraction, seed=data_cfg.split_seed)
        ids = tr if split == "train" else ho
    if split == "train":
        _check_training_split(ann if ids is None else ann.subset(ids))
    train = split == "train" if train is None else train
    tf = (
        build_train_transforms(data_cfg.scales, data_cfg.max_size)
        if train
        else build_eval_transforms(max(data_cfg.scales), data_cfg.max_size)
    )
    return YTVISDataset(
        ann,
        frames_root,
        clip_len=data_cfg.clip_len,
        max_gap=data_cfg.max_gap,
        transforms=tf,
        video_ids=ids,
    )
