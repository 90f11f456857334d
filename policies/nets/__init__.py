"""Denoisers `f(noisy_actions, noise_level, context)`, each split into `encode` (per control step) and `denoise`."""

from __future__ import annotations

from policies.config import NetConfig
from policies.errors import PolicyError
from policies.nets.common import Denoiser, NetDims
from policies.nets.dit import DiT
from policies.nets.mdt import MDT
from policies.nets.mlp import MLP
from policies.nets.mode import MoDE

NETS: dict[str, type[Denoiser]] = {"dit": DiT, "mdt": MDT, "mode": MoDE, "mlp": MLP}


def build_net(cfg: NetConfig, dims: NetDims) -> Denoiser:
    try:
        return NETS[cfg.name](cfg, dims)
    except KeyError:
        raise PolicyError(f"unknown policy net {cfg.name!r}; use one of {', '.join(NETS)}") from None


__all__ = ["Denoiser", "NetDims", "NETS", "build_net"]
