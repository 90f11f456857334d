"""One policy per group of slots of a vector env: the specialist of each robot acting for that robot's envs.

A multi-robot rollout (distillation) runs every robot in one vector env, slot `i` holding robot `group_of[i]`.
`RoutedPolicy` is one `PolicyLike` over all slots: each member acts on the rows of its own slots only, batched,
and is reset only for those, so per-env state (observation history, streaming buffers) stays consistent. When a
member is Gaussian (a residual specialist), its `last_std` is gathered into the router's `last_std`; members
without one report `std_floor`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from policies.interface import observation_for
from training.errors import TrainingError


class RoutedPolicy:
    name = "routed"

    def __init__(self, policies: Sequence[Any], group_of: Sequence[int], std_floor: float = 0.0,
                 names: Sequence[str] | None = None):
        self.policies = list(policies)
        self.group_of = np.asarray(group_of, dtype=np.int64)
        if self.group_of.ndim != 1 or len(self.group_of) == 0:
            raise TrainingError("a routed policy needs one group index per slot")
        if self.group_of.min() < 0 or self.group_of.max() >= len(self.policies):
            raise TrainingError(f"slot groups must be in [0, {len(self.policies)}), got {sorted(set(self.group_of))}")
        self.rows = [np.flatnonzero(self.group_of == g) for g in range(len(self.policies))]
        self.names = list(names) if names is not None else [getattr(p, "name", type(p).__name__) for p in policies]
        self.std_floor = float(std_floor)
        dims = {getattr(p, "action_dim", None) for p in self.policies} - {None}
        if len(dims) > 1:
            raise TrainingError(f"the routed policies act in different action spaces ({sorted(dims)})")
        self.action_dim = dims.pop() if dims else None
        specs = [dict(getattr(p, "obs_spec", None) or {}) for p in self.policies]
        merged: dict[str, tuple] = {}
        for spec in specs:
            merged.update({k: tuple(v) for k, v in spec.items()})
        self.obs_spec = merged or None
        self.last_std: np.ndarray | None = None

    def bind(self, vec_env) -> None:
        for p in self.policies:
            if hasattr(p, "bind"):
                p.bind(vec_env)

    def reset(self, mask: np.ndarray | None = None) -> None:
        for p, rows in zip(self.policies, self.rows):
            if len(rows):
                p.reset(None if mask is None else np.asarray(mask, dtype=bool)[rows])

    def eval(self) -> RoutedPolicy:
        for p in self.policies:
            if hasattr(p, "eval"):
                p.eval()
        return self

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        n = len(self.group_of)
        out: np.ndarray | None = None
        std = np.full((n, self.action_dim or 1), self.std_floor, dtype=np.float32)
        for p, rows in zip(self.policies, self.rows):
            if not len(rows):
                continue
            sub = {k: np.asarray(v)[rows] for k, v in observation_for(p, obs).items()}
            a = np.asarray(p.act(sub), dtype=np.float32)
            if out is None:
                out = np.zeros((n, a.shape[1]), dtype=np.float32)
                std = np.full((n, a.shape[1]), self.std_floor, dtype=np.float32)
            out[rows] = a
            member_std = getattr(p, "last_std", None)
            if member_std is not None:
                std[rows] = np.maximum(np.asarray(member_std, dtype=np.float32), self.std_floor)
        self.last_std = std
        return out
