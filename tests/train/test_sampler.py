"""Resumable sampler: batches are a function of (seed, step); ranks partition each step."""

from __future__ import annotations

import torch

from gmpvis.train.sampler import ResumableBatchSampler, SeededDataset


def test_resume_sees_the_same_batches():
    full = list(ResumableBatchSampler(7, 3, 10, seed=5))
    resumed = list(ResumableBatchSampler(7, 3, 10, seed=5, start_step=4))
    assert len(full) == 10 and resumed == full[4:]


def test_every_index_once_per_epoch_and_seeds_differ():
    sampler = ResumableBatchSampler(6, 2, 3, seed=1)  # 3 steps x 2 = one epoch of 6
    items = [item for batch in sampler for item in batch]
    assert sorted(i for i, _ in items) == list(range(6))
    assert len({s for _, s in items}) == 6
    # another seed gives another order
    other = [i for b in ResumableBatchSampler(6, 2, 3, seed=2) for i, _ in b]
    assert other != [i for i, _ in items]


def test_ranks_partition_the_global_batch():
    r0 = list(ResumableBatchSampler(8, 2, 2, seed=3, rank=0, world_size=2))
    r1 = list(ResumableBatchSampler(8, 2, 2, seed=3, rank=1, world_size=2))
    single = list(ResumableBatchSampler(8, 4, 2, seed=3))
    for step in range(2):
        merged = [i for i, _ in r0[step]] + [i for i, _ in r1[step]]
        assert merged == [i for i, _ in single[step]]


def test_seeded_dataset_makes_augmentation_reproducible():
    class RandomItem(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.rand(4) + i

    ds = SeededDataset(RandomItem())
    a, b, c = ds[(1, 123)], ds[(1, 123)], ds[(1, 124)]
    assert torch.equal(a, b) and not torch.equal(a, c)
