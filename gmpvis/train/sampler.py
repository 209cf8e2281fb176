"""A resumable, distributed batch sampler with a seed per sample.

Training runs for a number of steps, not epochs. The stream of dataset indices is an
endless concatenation of permutations (epoch ``e`` is ``randperm(N)`` seeded by
``seed + e``); global step ``s`` consumes positions ``[s * G, (s + 1) * G)`` with
``G = world_size * batch_size``, rank ``r`` the ``r``-th slice of ``batch_size``. Every
sample also carries its own seed, so augmentation is a function of (seed, step, slot), not of
the process's RNG history: a run resumed at step ``s`` sees exactly the batches the
uninterrupted run saw, with any number of data-loader workers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields, for each step from ``start_step`` to ``max_steps``, this rank's batch as a list
    of ``(dataset index, sample seed)`` pairs."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        max_steps: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
    ) -> None:
        if num_samples <= 0:
            raise ValueError("ResumableBatchSampler: the dataset is empty")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.max_steps = max_steps
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_step = start_step
        self._perm_cache: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perm_cache:
            self._perm_cache = {epoch: self._make_perm(epoch)}  # keep one epoch in memory
        return self._perm_cache[epoch]

    def _make_perm(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_samples, generator=g)

    def batch_for_step(self, step: int) -> list[tuple[int, int]]:
        global_batch = self.world_size * self.batch_size
        first = step * global_batch + self.rank * self.batch_size
        batch = []
        for slot, position in enumerate(range(first, first + self.batch_size)):
            epoch, offset = divmod(position, self.num_samples)
            index = int(self._permutation(epoch)[offset])
            # distinct, reproducible 31-bit seed per (seed, step, rank, slot)
            sample_seed = hash((self.seed, step, self.rank, slot)) & 0x7FFFFFFF
            batch.append((index, sample_seed))
        return batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.max_steps):
            yield self.batch_for_step(step)

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step)


class SeededDataset(Dataset):
    """Wraps a dataset so that ``ds[(index, seed)]`` seeds python/numpy/torch RNGs first."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        return self.dataset[index]
