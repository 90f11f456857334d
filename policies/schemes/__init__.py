"""Action schemes: which actions are denoised per control step (full chunk now; streaming/truncated plug in here)."""

from __future__ import annotations

from policies.config import SchemeConfig
from policies.errors import PolicyError
from policies.schemes.base import Scheme, SchemeHost
from policies.schemes.chunk import ChunkScheme
from policies.schemes.streaming import StreamingScheme
from policies.schemes.truncated import TruncatedScheme

SCHEMES: dict[str, type[Scheme]] = {"chunk": ChunkScheme, "streaming": StreamingScheme, "truncated": TruncatedScheme}


def build_scheme(cfg: SchemeConfig, obs_horizon: int, pred_horizon: int, action_dim: int) -> Scheme:
    if cfg.name not in SCHEMES:
        raise PolicyError(f"unknown action scheme {cfg.name!r}; use one of {', '.join(SCHEMES)}")
    return SCHEMES[cfg.name](cfg, obs_horizon, pred_horizon, action_dim)


__all__ = ["Scheme", "SchemeHost", "SCHEMES", "build_scheme"]

