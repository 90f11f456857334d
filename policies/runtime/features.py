"""What a residual actor sees, in NumPy only (shared by the torch specialist and the torch-free runtime)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from policies.errors import PolicyError


def standardize(x: np.ndarray, mean: np.ndarray, var: np.ndarray, clip: float) -> np.ndarray:
    """SB3 VecNormalize's observation map: (x - mean) / sqrt(var + 1e-8), clipped to [-clip, clip]."""
    return np.clip((x - mean) / np.sqrt(var + 1e-8), -clip, clip).astype(np.float32)


def residual_features(obs: Mapping[str, Any], base_action: np.ndarray, obs_dims: Mapping[str, int],
                      obs_scale: np.ndarray) -> np.ndarray:
    """(B, F) float32: each observation key in `obs_dims` order divided by its scale, then the base action. The one
    definition of what a residual actor sees, in training (SB3 observations), in the saved specialist and in the
    exported runtime alike."""
    if not isinstance(obs, Mapping):
        raise PolicyError(f"act() takes a dict of observation arrays, got {type(obs).__name__}")
    parts, batch = [], None
    for key, dim in obs_dims.items():
        if key not in obs:
            raise PolicyError(f"observation lacks key '{key}'; the residual expects keys {', '.join(obs_dims)}")
        arr = np.asarray(obs[key], dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != dim or (batch is not None and arr.shape[0] != batch):
            raise PolicyError(f"observation '{key}' has shape {arr.shape} but the residual expects "
                              f"({batch if batch is not None else 'B'}, {dim})")
        batch = arr.shape[0]
        parts.append(arr)
    flat = np.concatenate(parts, axis=1) / obs_scale
    base = np.asarray(base_action, dtype=np.float32)
    if base.ndim != 2 or base.shape[0] != batch:
        raise PolicyError(f"the base action has shape {base.shape}, expected ({batch}, action_dim)")
    out = np.concatenate([flat, base], axis=1).astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        raise PolicyError("the observation (or the base action) contains NaN or inf; check the env")
    return out
