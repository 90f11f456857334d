"""The one policy interface every stage talks to: evaluation, collection, residual RL, distillation and export.

Anything with these four members is a policy to alloy: trained `Policy` checkpoints, consistency students, the
env's own teacher, residual specialists, generalists and exported runtimes. Code that runs policies takes a
`PolicyLike` and never special-cases a kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class PolicyLike(Protocol):
    """`reset(mask)` clears per-env state (history, chunk queue, streaming buffer) of all envs or where `mask`
    is true; `act(obs)` maps a batch of observations `{key: (B, d)}` to actions `(B, action_dim)` in env units.
    `obs_spec` (`{key: shape}`) and `action_dim` say what it needs; None means "any env fits" (e.g. a teacher
    that reads the simulator)."""

    obs_spec: Optional[Mapping[str, tuple]]
    action_dim: Optional[int]

    def reset(self, mask: Optional[np.ndarray] = None) -> None: ...

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray: ...


def observation_for(policy, obs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """The part of an env's observation dict a policy declares (`obs_spec`), so that a policy is handed only the
    keys it knows (and can refuse any other); everything for policies that take any observation (spec None)."""
    spec = getattr(policy, "obs_spec", None)
    if not spec or not isinstance(obs, Mapping):
        return obs
    return {k: obs[k] for k in spec if k in obs}
