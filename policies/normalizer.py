"""Per-key affine normalisation stored as buffers, so that it travels inside the policy's weights.

Two modes, chosen per policy: `limits` maps each dimension's [min, max] to [-1, 1] (Diffusion Policy's choice,
which keeps the clipped DDPM sample range meaningful) and `gaussian` maps to zero mean, unit variance.
Both are `y = x * scale + offset`; a dimension with (almost) no spread gets scale 1 and is centred, so that a
constant input (a one-hot that never changes, a fixed embodiment descriptor) never divides by zero.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from policies.errors import PolicyError

MODES = ("limits", "gaussian")
_MIN_SPREAD = 1e-4


def _as_tensor(value, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(value, dtype=np.float64)).reshape(-1)
    if not torch.isfinite(t).all():
        raise PolicyError(f"normaliser statistic '{name}' contains NaN or inf: the data it was computed from holds "
                          f"NaN or inf values, which new statistics cannot fix; clean or re-collect that data")
    return t


def affine_from_stats(stats: Mapping[str, object], mode: str, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, offset) in float64 for one key from its statistics (`min`/`max` or `mean`/`std`)."""
    if mode not in MODES:
        raise PolicyError(f"unknown normaliser mode {mode!r}; use one of {', '.join(MODES)}")
    need = ("min", "max") if mode == "limits" else ("mean", "std")
    missing = [n for n in need if n not in stats]
    if missing:
        raise PolicyError(f"statistics for '{key}' lack {', '.join(missing)}; recompute them with training.data.compute_stats")
    if mode == "limits":
        lo, hi = _as_tensor(stats["min"], f"{key}.min"), _as_tensor(stats["max"], f"{key}.max")
        spread = hi - lo
        flat = spread < _MIN_SPREAD
        scale = torch.where(flat, torch.ones_like(spread), 2.0 / spread.clamp_min(_MIN_SPREAD))
        offset = torch.where(flat, -(lo + hi) / 2.0, -1.0 - lo * scale)
    else:
        mean, std = _as_tensor(stats["mean"], f"{key}.mean"), _as_tensor(stats["std"], f"{key}.std")
        flat = std < _MIN_SPREAD
        scale = torch.where(flat, torch.ones_like(std), 1.0 / std.clamp_min(_MIN_SPREAD))
        offset = -mean * scale
    return scale, offset


class Normalizer(nn.Module):
    """Normalises named vectors (observation keys and `action`) with per-dimension affine maps."""

    def __init__(self, dims: Mapping[str, int], mode: str = "limits"):
        super().__init__()
        if mode not in MODES:
            raise PolicyError(f"unknown normaliser mode {mode!r}; use one of {', '.join(MODES)}")
        self.mode = mode
        self.dims = dict(dims)
        for key, dim in self.dims.items():
            self.register_buffer(f"{key}_scale", torch.ones(dim))
            self.register_buffer(f"{key}_offset", torch.zeros(dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def fit(self, stats: Mapping[str, Mapping[str, object]]) -> None:
        """Set every key's map from dataset statistics; every key the policy uses must be present."""
        missing = [k for k in self.dims if k not in stats]
        if missing:
            raise PolicyError(f"dataset statistics lack key(s) {', '.join(missing)} that the policy uses; "
                              f"check the policy's obs keys against the dataset")
        for key, dim in self.dims.items():
            scale, offset = affine_from_stats(stats[key], self.mode, key)
            if scale.numel() != dim:
                raise PolicyError(f"statistics for '{key}' have {scale.numel()} dims but the policy expects {dim}; "
                                  f"the dataset does not match the policy config")
            getattr(self, f"{key}_scale").copy_(scale)
            getattr(self, f"{key}_offset").copy_(offset)
        self.fitted.fill_(True)

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return x * getattr(self, f"{key}_scale") + getattr(self, f"{key}_offset")

    def unnormalize(self, key: str, y: torch.Tensor) -> torch.Tensor:
        return (y - getattr(self, f"{key}_offset")) / getattr(self, f"{key}_scale")
