"""Where a policy's inference-time noise comes from: torch's generator, or tensors given from outside.

Every draw of sampling noise at inference (a diffusion sampler's initial noise, DDPM's ancestral noise, a streaming
buffer's re-noising, truncated anchors' perturbation) goes through `randn`. Normally that is `torch.randn`; inside
`given(tensors)` the draws are the given tensors, in order. Export uses this to make the noise an input of the
graph (the same noise gives the same actions in torch and in the exported artifact), and tests use it to compare
implementations draw for draw. Training noise is separate (`policies.random_source`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence

import torch

_local = threading.local()


def randn(shape, *, device=None, dtype=None, generator: torch.Generator | None = None) -> torch.Tensor:
    source = getattr(_local, "source", None)
    if source is not None:
        return source(tuple(int(s) if not isinstance(s, torch.SymInt) else s for s in shape), device, dtype)
    return torch.randn(shape, device=device, dtype=dtype, generator=generator)


def randn_like(x: torch.Tensor) -> torch.Tensor:
    return randn(x.shape, device=x.device, dtype=x.dtype)


@contextlib.contextmanager
def drawn_by(source: Callable[[tuple, object, object], torch.Tensor]):
    """Every `randn` inside comes from `source(shape, device, dtype)`."""
    before = getattr(_local, "source", None)
    _local.source = source
    try:
        yield
    finally:
        _local.source = before


class Recorder:
    """A source that draws from torch and keeps every draw (its shape tells an exporter what the inputs are)."""

    def __init__(self):
        self.draws: list[torch.Tensor] = []

    def __call__(self, shape, device, dtype) -> torch.Tensor:
        t = torch.randn(shape, device=device, dtype=dtype)
        self.draws.append(t)
        return t


class Given:
    """A source that hands out the given tensors in order (a draw of another shape is an error)."""

    def __init__(self, tensors: Sequence[torch.Tensor]):
        self.tensors, self.i = list(tensors), 0

    def __call__(self, shape, device, dtype) -> torch.Tensor:
        if self.i >= len(self.tensors):
            raise RuntimeError(f"more noise was drawn than given ({len(self.tensors)} tensors)")
        t = self.tensors[self.i]
        self.i += 1
        if tuple(t.shape) != tuple(shape):
            raise RuntimeError(f"noise draw {self.i - 1} has shape {tuple(shape)}, the given tensor {tuple(t.shape)}")
        return t.to(device=device, dtype=dtype) if dtype is not None else t.to(device)


@contextlib.contextmanager
def given(tensors: Sequence[torch.Tensor]):
    with drawn_by(Given(tensors)) as s:
        yield s
