"""Training clips from a stream of fresh synthetic videos: sample ``i`` is a new video.

``SyntheticClips(seed=s)[i]`` generates video ``i`` from the seed ``[s, i]`` alone (its
difficulty cycles through ``mix``), samples a clip of it and applies the transforms: the
video is a pure function of ``(s, i)`` and the clip and augmentation of the per-sample seed
that :class:`~gmpvis.train.sampler.SeededDataset` sets, so a resumed run sees exactly the
samples the uninterrupted run saw. Nothing is read from disk; each sample costs one small
video's generation (milliseconds at 128 px). Targets have the layout of
:class:`~gmpvis.data.clips.YTVISDataset`.
"""

from __future__ import annotations

import numpy as np
import torch

from gmpvis.data.clips import masks_to_boxes, sample_clip_indices
from gmpvis.data.synthetic.scene import generate_video, get_difficulty
from gmpvis.data.synthetic.shapes import CATEGORIES
from gmpvis.data.transforms import Normalize


class SyntheticClips(torch.utils.data.Dataset):
    """``length`` distinct synthetic videos of ``num_frames`` frames at ``size`` (H, W),
    difficulty ``mix[i % len(mix)]``; ``dataset[i] -> (frames [T, 3, h, w], target)``."""

    def __init__(
        self,
        *,
        seed: int,
        length: int,
        mix: list[str],
        num_frames: int,
        size: tuple[int, int],
        clip_len: int,
        max_gap: int,
        transforms=None,
        retries: int = 3,
    ) -> None:
        if length < 1 or not mix:
            raise ValueError(f"SyntheticClips: need length >= 1 and a non-empty mix, got {mix}")
        for name in mix:
            try:
                get_difficulty(name)
            except (KeyError, ValueError) as err:
                raise ValueError(f"data.synthetic_mix: unknown difficulty {name!r}") from err
        self.seed, self.length, self.mix = seed, length, list(mix)
        self.num_frames, self.size = num_frames, tuple(size)
        self.clip_len, self.max_gap = clip_len, max_gap
        self.transforms = transforms if transforms is not None else Normalize()
        self.retries = retries

    @property
    def category_ids(self) -> list[int]:
        return [c.id for c in CATEGORIES]

    @property
    def num_classes(self) -> int:
        return len(CATEGORIES)

    def __len__(self) -> int:
        return self.length

    def video(self, i: int):
        """Video ``i`` (a :class:`~gmpvis.data.synthetic.SyntheticVideo`)."""
        return generate_video(
            np.random.default_rng([self.seed, i]),
            num_frames=self.num_frames,
            height=self.size[0],
            width=self.size[1],
            difficulty=self.mix[i % len(self.mix)],
        )

    def __getitem__(self, i: int):
        if not 0 <= i < self.length:
            raise IndexError(f"SyntheticClips index {i} out of range [0, {self.length})")
        video = self.video(i)
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))  # the sample's seed
        visible = video.visible  # [T, N]
        for _ in range(self.retries + 1):
            idx = sample_clip_indices(self.num_frames, self.clip_len, self.max_gap, rng)
            if visible[idx].any():
                break
        present = visible[idx].any(0)
        frames = torch.from_numpy(video.frames[idx]).permute(0, 3, 1, 2).contiguous()
        masks = torch.from_numpy(video.masks[idx][:, present]).contiguous()
        frames, masks = self.transforms(frames, masks)
        valid = masks.flatten(2).any(-1)  # [T, N]
        keep = valid.any(0)  # a crop can remove an instance from every frame
        masks, valid = masks[:, keep], valid[:, keep]
        label_of = {c: k for k, c in enumerate(self.category_ids)}
        cats = video.category_ids[present][keep.numpy()]
        objects = np.flatnonzero(present)[keep.numpy()]
        target = {
            "labels": torch.tensor([label_of[int(c)] for c in cats], dtype=torch.int64),
            "instance_ids": torch.from_numpy(objects + 1).long(),
            "boxes": masks_to_boxes(masks),
            "masks": masks,
            "valid": valid,
            "size": torch.tensor(frames.shape[-2:], dtype=torch.int64),
            "orig_size": torch.tensor(self.size, dtype=torch.int64),
            "video_id": int(i),
            "frame_indices": torch.from_numpy(idx),
        }
        return frames.float(), target
