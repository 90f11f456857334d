"""The interface every diffusion process implements, in terms of a native noise variable `nv`.

`nv` is the process's own noise variable (DDPM/DDIM: integer timestep; EDM: sigma) of shape (B,) or (B, Tp)
(per action position). The denoiser receives `level = net_input(...)[1]`, a float tensor of the same shape in
the process's documented unit. Schemes that need per-position levels use `add_noise`, `net_input`, `loss` and
`denoised` directly; the full-chunk scheme uses `training_loss` and `sample`.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from policies.random_source import RandomSource

DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (net input, level) -> net output


def expand_like(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample (B,) or per-position (B, Tp) tensor against x (B, Tp, da)."""
    while v.dim() < x.dim():
        v = v.unsqueeze(-1)
    return v


def symbolic(n) -> bool:
    """True for a batch size that is a symbol (`torch.export` tracing a graph for any batch): constants built for it
    must not be cached under it."""
    return not isinstance(n, int)


@contextlib.contextmanager
def building_constants():
    """Context for building cached sampler constants: ordinary tensors (never inference tensors, even when the
    cache is first filled inside `Policy.act`'s inference mode) without autograd history."""
    with torch.inference_mode(False), torch.no_grad():
        yield


class Process:
    name = "base"
    level_unit = ""
    level_scale = 1.0  # suggested multiplier before a sinusoidal embedding (puts levels on a ~[0, 100] scale)

    def sample_train_noise(self, shape: tuple[int, ...], rs: RandomSource) -> torch.Tensor:
        raise NotImplementedError

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, nv: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def net_input(self, xt: torch.Tensor, nv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def loss(self, out, x0, eps, xt, nv) -> torch.Tensor:
        """Per-element loss (same shape as x0)."""
        raise NotImplementedError

    def denoised(self, out: torch.Tensor, xt: torch.Tensor, nv: torch.Tensor) -> torch.Tensor:
        """The clean sample implied by the net output."""
        raise NotImplementedError

    def level_consts(self, nv: torch.Tensor, like: torch.Tensor) -> LevelConsts:
        """`net_input` and `denoised` at a fixed noise variable nv for inputs shaped like `like`, with every
        tensor that depends on nv alone computed once (samplers that revisit the same levels reuse it)."""
        return LevelConsts(self, nv, like)

    def training_loss(self, denoise: DenoiseFn, x0: torch.Tensor, rs: RandomSource) -> torch.Tensor:
        """Per-element loss with one noise level per sample."""
        nv = self.sample_train_noise((), rs)
        eps = rs.randn(*x0.shape[1:]).to(x0.dtype)
        xt = self.add_noise(x0, eps, nv)
        out = denoise(*self.net_input(xt, nv))
        return self.loss(out, x0, eps, xt, nv)

    @torch.no_grad()
    def sample(self, denoise: DenoiseFn, shape: tuple[int, ...], device, generator: torch.Generator | None = None):
        raise NotImplementedError

    def num_net_calls(self) -> int:
        """Denoiser calls per `sample` (for reports)."""
        raise NotImplementedError


class LevelConsts:
    """Generic fallback: calls `net_input` / `denoised` each time. Processes override `level_consts` with a
    subclass that precomputes the nv-only factors and applies them with the same operations (bit-identical)."""

    def __init__(self, process: Process, nv: torch.Tensor, like: torch.Tensor):
        self.process, self.nv = process, nv.to(like.dtype)
        self.level = process.net_input(like, self.nv)[1]

    def net_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.process.net_input(x, self.nv)[0]

    def denoised(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.process.denoised(out, x, self.nv)
