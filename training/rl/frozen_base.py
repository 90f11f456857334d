"""The frozen base of residual RL: loaded once for the learner, and once per env group when it acts in the groups'
own processes (`GroupBase`, a picklable factory for `envs.vector.make_vec_env(group_policy=...)`).

This module stays light (no stable-baselines3): every env worker imports it to build its copy of the base.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from policies.atomic import recover_dir
from policies.hashing import policy_sha256
from policies.interface import observation_for
from policies.residual import ZeroBase
from training.errors import TrainingError
from training.rl.config import NO_BASE


def load_base(spec: str, device: str, action_dim: int):
    """The frozen base (any registered kind of checkpoint), its directory (None for `none`) and content hash."""
    base = load_frozen(spec, device, action_dim)
    if spec == NO_BASE:
        return base, None, None
    path = recover_dir(Path(spec).expanduser())
    return base, path, policy_sha256(path)


def load_frozen(spec: str, device: str, action_dim: int):
    """The frozen base alone (a group's copy needs no content hash: the learner's copy was hashed once)."""
    if spec == NO_BASE:
        return ZeroBase(action_dim)
    from training.evaluation import load_policy

    base = load_policy(spec, device)
    if isinstance(base, str) or not hasattr(base, "act") or type(base).__name__ == "TeacherPolicy":
        raise TrainingError(f"base={spec!r} is not a trained policy; pass a checkpoint directory (or base=none)")
    torch = sys.modules.get("torch")
    if torch is not None:
        for module in (base, getattr(base, "actor", None)):
            if isinstance(module, torch.nn.Module):
                module.eval()
                for p in module.parameters():
                    p.requires_grad_(False)  # frozen: nothing the RL loss computes can reach it
    return base


class GroupBase:
    """Builds, in the process of env group `group`, that group's copy of the base: `reset(mask)` and a batched `act`
    on the env's raw observations. A copy in a worker process gets its own noise stream (`seed`, `group`); the
    copy in the learner's process keeps the process's generators, as the in-process base does."""

    def __init__(self, spec: str, device: str, action_dim: int, seed: int):
        self.spec, self.device, self.action_dim, self.seed = str(spec), str(device), int(action_dim), int(seed)
        self.parent_pid = os.getpid()

    def __call__(self, group: int) -> _Acting:
        worker = os.getpid() != self.parent_pid
        if worker:
            import torch

            # one core per group (the other groups step on the others), and single-threaded in a forked worker, where
            # the parent's thread pools are gone; an artifact's ONNX Runtime session is single-threaded already
            torch.set_num_threads(1)
            torch.manual_seed(int(np.random.SeedSequence([self.seed, group]).generate_state(1)[0]))
        base = load_frozen(self.spec, self.device, self.action_dim)
        if worker and hasattr(base, "seed"):
            base.seed(int(np.random.SeedSequence([self.seed, group, 1]).generate_state(1)[0]))
        return _Acting(base)


class _Acting:
    """A base acting on the env's raw observation dict (the keys it was trained on, picked by `observation_for`)."""

    def __init__(self, base: Any):
        self.base = base

    def reset(self, mask: np.ndarray | None = None) -> None:
        self.base.reset(mask)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.base.act(observation_for(self.base, obs)), dtype=np.float32)
