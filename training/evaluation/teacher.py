"""The env's own privileged teacher, seen through the same `reset`/`act` interface as a learned policy.

The teacher lives inside each env (it reads the true simulator state), so its batched `act` asks every env of the
bound vector env for `teacher_action()` instead of computing anything from the observation. Bound to a vector env
of guarded envs, it asks them to compute that action as part of every reset and step (`alloy_prefetch_teacher`)
and reads it from the infos the rollout engine shows it (`see_infos`), which saves a round trip per control step.
"""

from __future__ import annotations

import numpy as np

from training.errors import TrainingError


class TeacherPolicy:
    """`policy="teacher"`: actions come from `vec_env.call("teacher_action")`, one per env."""

    name = "teacher"
    obs_spec = None  # the teacher reads the simulator, not the observation: any env fits
    action_dim = None

    def __init__(self) -> None:
        self._vec_env = None
        self._prefetched: np.ndarray | None = None
        self._seen: np.ndarray | None = None

    def bind(self, vec_env) -> None:
        """Attach the vector env whose envs' teachers will act."""
        self._vec_env = vec_env
        vec_env.set_attr("alloy_prefetch_teacher", True)
        self._prefetched = np.zeros((vec_env.num_envs, *vec_env.single_action_space.shape), dtype=np.float32)
        self._seen = np.zeros(vec_env.num_envs, dtype=bool)  # envs without the rollout guard never report one

    def see_infos(self, infos: dict) -> None:
        """Keep the teachers' actions that came with a reset or step (only the envs that reported one)."""
        values = infos.get("alloy_teacher_action")
        if self._prefetched is None or values is None:
            return
        mask = infos.get("_alloy_teacher_action")
        if mask is None:
            mask = np.ones(len(self._prefetched), dtype=bool)
        self._prefetched[mask] = np.asarray(values)[mask]
        self._seen |= mask

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Nothing to clear: each env resets its teacher inside `env.reset`."""

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self._vec_env is None:
            raise TrainingError("the teacher policy is not bound to an env; evaluate it through training.evaluation.evaluate")
        if self._prefetched is not None and self._seen.all():
            return self._prefetched.copy()
        return np.stack([np.asarray(a, dtype=np.float32) for a in self._vec_env.call("teacher_action")])
