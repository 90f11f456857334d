"""Training randomness as a function of (seed, step, global sample index), independent of how a batch is split.

A `RandomSource` draws for the whole global batch from a CPU generator and keeps only this process's rows, so a
data-parallel rank sees exactly the noise a single process would see for the same samples, and a resumed run sees
the same noise as an uninterrupted one.
"""

from __future__ import annotations

import torch


class RandomSource:
    def __init__(self, batch: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None,
                 global_batch: int | None = None, offset: int = 0):
        self.batch = batch
        self.device = torch.device(device)
        self.generator = generator
        self.global_batch = batch if global_batch is None else global_batch
        self.offset = offset

    @classmethod
    def for_step(cls, seed: int, step: int, batch: int, device, global_batch: int | None = None, offset: int = 0):
        g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) % (2**63))
        return cls(batch, device, g, global_batch, offset)

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        return t[self.offset: self.offset + self.batch].to(self.device, non_blocking=True)

    def rand(self, *tail: int) -> torch.Tensor:
        return self._rows(torch.rand((self.global_batch, *tail), generator=self.generator))

    def randn(self, *tail: int) -> torch.Tensor:
        return self._rows(torch.randn((self.global_batch, *tail), generator=self.generator))

    def randint(self, high: int, *tail: int) -> torch.Tensor:
        return self._rows(torch.randint(high, (self.global_batch, *tail), generator=self.generator))
