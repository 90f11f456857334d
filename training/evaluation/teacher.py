"""The env's own privileged teacher, seen through the same `reset`/`act` interface as a learned policy.

The teacher lives inside each env (it reads the true simulator state), so its batched `act` asks every env of the
bound vector env for `teacher_action()` instead of computing anything from the observation.
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

    def bind(self, vec_env) -> None:
        """Attach the vector env whose envs' teachers will act."""
        self._vec_env = vec_env

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Nothing to clear: each env resets its teacher inside `env.reset`."""

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self._vec_env is None:
            raise TrainingError("the teacher policy is not bound to an env; evaluate it through training.evaluation.evaluate")
        return np.stack([np.asarray(a, dtype=np.float32) for a in self._vec_env.call("teacher_action")])
