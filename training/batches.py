"""Batch indices as a pure function of (seed, step): the data order of a resumed run equals an uninterrupted one.

Without mixing weights every epoch is a fresh permutation of all samples seeded by (seed, epoch) and step k takes
the k-th slice of its epoch; with weights each sample draws its dataset by weight and then a window of that
dataset uniformly, seeded by (seed, step). Data-parallel rank r takes the r-th contiguous block of rows of the same global batch.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

from training.errors import TrainingError


class StepBatchSampler(Sampler):
    def __init__(self, num_samples: int, batch_size: int, start_step: int, end_step: int, seed: int,
                 weights: np.ndarray | None = None, samples_per_dataset: np.ndarray | None = None,
                 rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise TrainingError(f"trainer.batch_size must be >= 1, got {batch_size}")
        if batch_size % world_size:
            raise TrainingError(f"trainer.batch_size={batch_size} is not divisible by the {world_size} processes; "
                                f"use a multiple of {world_size}")
        self.n, self.batch_size, self.seed = int(num_samples), int(batch_size), int(seed)
        self.start_step, self.end_step = int(start_step), int(end_step)
        self.rank, self.world_size = rank, world_size
        self.weights = weights
        if weights is not None:
            counts = np.asarray(samples_per_dataset, dtype=np.int64)
            self.counts = counts
            self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._epoch, self._perm = None, None

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)

    def global_batch(self, step: int) -> np.ndarray:
        bs = self.batch_size
        if self.weights is not None:
            rng = np.random.default_rng([self.seed, step, 1])
            d = rng.choice(len(self.weights), size=bs, p=self.weights)
            return self.starts[d] + (rng.random(bs) * self.counts[d]).astype(np.int64)
        if bs > self.n:
            return np.random.default_rng([self.seed, step, 2]).integers(0, self.n, bs)
        per_epoch = self.n // bs
        epoch, k = divmod(step, per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch, 0]).permutation(self.n)
        return self._perm[k * bs:(k + 1) * bs]

    def __iter__(self) -> Iterator[np.ndarray]:
        for step in range(self.start_step, self.end_step):
            local = self.batch_size // self.world_size
            yield self.global_batch(step)[self.rank * local:(self.rank + 1) * local]
