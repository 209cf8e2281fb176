"""The streamed synthetic training clips: a pure function of (seed, index, sample seed)."""

from __future__ import annotations

import pytest
import torch

from gmpvis.data.clips import masks_to_boxes
from gmpvis.data.synthetic.stream import SyntheticClips


def clips(**kw) -> SyntheticClips:
    args = dict(seed=3, length=50, mix=["easy", "medium", "hard"], num_frames=6,
                size=(48, 64), clip_len=3, max_gap=2)  # fmt: skip
    return SyntheticClips(**{**args, **kw})


def sample(ds: SyntheticClips, i: int, sample_seed: int):
    torch.manual_seed(sample_seed)
    return ds[i]


def test_a_sample_is_a_pure_function_of_seed_index_and_sample_seed():
    ds = clips()
    f1, t1 = sample(ds, 7, 11)
    sample(ds, 3, 5)  # another sample in between changes nothing
    f2, t2 = sample(clips(), 7, 11)  # nor does a fresh dataset object
    assert torch.equal(f1, f2) and torch.equal(t1["masks"], t2["masks"])
    assert torch.equal(t1["frame_indices"], t2["frame_indices"])
    f3, _ = sample(clips(seed=4), 7, 11)
    f4, _ = sample(ds, 8, 11)
    assert not torch.equal(f1, f3) and not torch.equal(f1, f4)


def test_difficulty_cycles_through_the_mix_and_targets_are_consistent():
    ds = clips()
    objects = [ds.video(i).masks.shape[1] for i in range(0, 30, 3)]  # all "easy"
    hard = [ds.video(i).masks.shape[1] for i in range(2, 30, 3)]
    assert max(objects) <= 3 and min(hard) >= 3  # easy: 1-3 objects, hard: 3-6
    frames, target = sample(ds, 2, 0)
    T, N = target["valid"].shape
    assert frames.shape == (3, 3, 48, 64) and target["masks"].shape == (T, N, 48, 64)
    assert target["labels"].max() < ds.num_classes and len(target["instance_ids"]) == N
    assert torch.equal(target["boxes"], masks_to_boxes(target["masks"]))
    assert torch.equal(target["valid"], target["masks"].flatten(2).any(-1))
    assert target["valid"].any(0).all()  # every kept object is seen in the clip


def test_bad_mix_and_index_are_refused():
    with pytest.raises(ValueError, match="synthetic_mix.*'impossible'"):
        clips(mix=["easy", "impossible"])
    with pytest.raises(IndexError, match="out of range"):
        clips()[50]
