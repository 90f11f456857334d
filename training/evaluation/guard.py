"""The env wrapper that keeps one bad episode from ending an evaluation.

It runs inside each vector-env worker. A Python exception in `reset`, `step` or the teacher, a non-finite
observation, reward or action, or a MuJoCo divergence warning (bad qpos/qvel/qacc: MuJoCo then silently resets
the state) ends the episode as a failure with its reason instead of killing the worker. It also normalises what
the rollout loop reads from `info` into `alloy_*` keys present at every step, records frames of one episode for
video, and can park an env ("idle") when no episode is left for it, so the tail of an evaluation does not
simulate episodes nobody counts.

This module stays free of torch so that worker processes import little.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

FAILURE_NONE = ""
FAILURE_INSTABILITY = "instability"
FAILURE_EXCEPTION = "exception"

_DIVERGENCE_WARNINGS = ("mjWARN_BADQPOS", "mjWARN_BADQVEL", "mjWARN_BADQACC", "mjWARN_BADCTRL")


def _all_finite(value: Any) -> bool:
    """True when no float in `value` (an array, a number or a dict of them) is NaN or infinite (runs every step).

    A float64 sum is finite exactly when every element is (NaN and inf propagate; float32 values cannot overflow
    it), and costs one reduction instead of an elementwise test and a second reduction.
    """
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    array = np.asarray(value)
    if array.dtype.kind == "f" and array.dtype.itemsize <= 4:
        return bool(np.isfinite(array.sum(dtype=np.float64)))
    return array.dtype.kind not in "fc" or bool(np.isfinite(array).all())


def _zeros_like_space(space: gym.Space) -> Any:
    if isinstance(space, gym.spaces.Dict):
        return {k: _zeros_like_space(s) for k, s in space.spaces.items()}
    return np.zeros(space.shape, dtype=space.dtype)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()


class RolloutGuard(gym.Wrapper):
    """Turns failures inside the env into terminal steps with `info["alloy_failure"]` set to the reason."""

    def __init__(self, env: gym.Env, max_episode_steps: int | None = None, keep_info: bool = True):
        super().__init__(env)
        self.max_episode_steps = max_episode_steps
        self.keep_info = keep_info  # False: only the alloy_* keys cross the process boundary (less to pickle)
        self.alloy_idle = False
        self.alloy_record = False  # set by the rollout loop; it stays as sent (the loop re-sends only changes)
        self._in_episode = False  # frames are captured from a reset to the end of its episode, while alloy_record
        self.alloy_prefetch_teacher = False  # put the teacher's action for each new observation into its info
        self._frames: list[np.ndarray] = []
        self._last_obs = _zeros_like_space(env.observation_space)
        self._steps = 0
        self._pending: tuple[str, str] | None = None
        self._warning_ids = self._divergence_warning_ids()
        self._data = self._mj_data()
        self._warning_counts = self._read_warnings()
        self._dt_value = self._dt()

    # MuJoCo state -------------------------------------------------------------------------------------------
    def _sim_objects(self) -> list[Any]:
        """The unwrapped env and the envs it holds (an alloy env may wrap a third-party MuJoCo env)."""
        base = self.env.unwrapped
        inner = [v for v in vars(base).values() if isinstance(v, gym.Env)]
        return [base] + [v.unwrapped for v in inner]

    def _mj_data(self):
        try:
            import mujoco
        except ImportError:
            return None
        for obj in self._sim_objects():
            data = getattr(obj, "data", None)
            if isinstance(data, mujoco.MjData):
                return data
        return None

    def _dt(self) -> float | None:
        for obj in self._sim_objects():
            dt = getattr(obj, "dt", None)
            if isinstance(dt, (int, float)) and dt > 0:
                return float(dt)
        return None

    def _divergence_warning_ids(self) -> list[int]:
        try:
            import mujoco
        except ImportError:
            return []
        return [int(getattr(mujoco.mjtWarning, name)) for name in _DIVERGENCE_WARNINGS if hasattr(mujoco.mjtWarning, name)]

    def _read_warnings(self) -> np.ndarray:
        data = self._data
        if data is None or not self._warning_ids:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(data.warning.number)[self._warning_ids]  # one read of all counters (runs every step)

    def _new_divergence(self) -> bool:
        counts = self._read_warnings()
        diverged = counts.shape == self._warning_counts.shape and bool((counts > self._warning_counts).any())
        self._warning_counts = counts
        return diverged

    # info -----------------------------------------------------------------------------------------------------
    def _sim_time(self, info: dict) -> float:
        if "time" in info:
            return float(info["time"])
        return self._steps * self._dt_value if self._dt_value is not None else math.nan

    def _info(self, info: dict, failure: str = FAILURE_NONE, error: str = "") -> dict:
        success = info.get("is_success", info.get("success", False))
        out = dict(info) if self.keep_info else {}
        if "privileged" in info:  # simulator-only state for an asymmetric critic (residual RL), kept either way
            out["alloy_privileged"] = info["privileged"]
        out["alloy_success"] = bool(np.asarray(success).item()) if failure == FAILURE_NONE else False
        out["alloy_collision"] = bool(np.asarray(info.get("collision", False)).item())
        out["alloy_failure"] = failure
        out["alloy_error"] = error
        out["alloy_time"] = self._sim_time(info)
        return out

    def _capture(self) -> None:
        if not (self.alloy_record and self._in_episode):
            return
        try:
            frame = self.env.render()
        except Exception:  # noqa: BLE001 - a broken renderer costs the video, never the evaluation
            self.alloy_record = False
            return
        if frame is not None:
            self._frames.append(np.asarray(frame, dtype=np.uint8))

    # gym API --------------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if self.alloy_idle:
            return self._last_obs, self._info({})
        self._steps = 0
        self._pending = None
        try:
            obs, info = self.env.reset(seed=seed, options=options)
        except Exception as e:  # noqa: BLE001
            return self._last_obs, self._info({}, FAILURE_EXCEPTION, f"reset: {_one_line(e)}")
        self._data = self._mj_data()  # an env may rebuild its simulator on reset
        self._warning_counts = self._read_warnings()
        if not _all_finite(obs):
            return self._last_obs, self._info(info, FAILURE_INSTABILITY, "reset returned a non-finite observation")
        self._last_obs = obs
        self._in_episode = True
        self._capture()
        return obs, self._with_teacher(self._info(info))

    def step(self, action):
        if self.alloy_idle:
            return self._last_obs, 0.0, False, False, self._info({})
        self._steps += 1
        if self._pending is not None:
            failure, error = self._pending
            self._pending = None
            return self._end(failure, error)
        if not _all_finite(action):
            return self._end(FAILURE_INSTABILITY, "the policy produced a non-finite action")
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
        except Exception as e:  # noqa: BLE001
            return self._end(FAILURE_EXCEPTION, f"step: {_one_line(e)}")
        if self._new_divergence():
            return self._end(FAILURE_INSTABILITY, "MuJoCo reported a simulation divergence (bad qpos/qvel/qacc)")
        if not _all_finite(obs) or not np.isfinite(reward):
            return self._end(FAILURE_INSTABILITY, "the env returned a non-finite observation or reward")
        self._last_obs = obs
        if self.max_episode_steps is not None and self._steps >= self.max_episode_steps:
            truncated = True
        self._capture()
        if terminated or truncated:
            self._in_episode = False  # not alloy_record: a slot films its next episode when the loop leaves it on
        out = self._info(info)
        return obs, float(reward), bool(terminated), bool(truncated), \
            out if terminated or truncated else self._with_teacher(out)

    def _with_teacher(self, info: dict) -> dict:
        """With `alloy_prefetch_teacher`, the teacher's action for the observation just returned rides in its info:
        a rollout driven or labelled by the env's teacher then needs no second round trip to the workers per step."""
        if self.alloy_prefetch_teacher:
            info["alloy_teacher_action"] = self.teacher_action()
        return info

    def _end(self, failure: str, error: str):
        self._in_episode = False
        return self._last_obs, 0.0, True, False, self._info({}, failure, error)

    # called by the rollout loop through vec_env.call -----------------------------------------------------------
    def teacher_action(self) -> np.ndarray:
        """The env's teacher; an exception here fails the episode at the next step instead of the evaluation."""
        zeros = np.zeros(self.action_space.shape, dtype=self.action_space.dtype)
        if self.alloy_idle:
            return zeros
        try:
            return np.asarray(self.env.unwrapped.teacher_action(), dtype=self.action_space.dtype)
        except Exception as e:  # noqa: BLE001
            self._pending = (FAILURE_EXCEPTION, f"teacher_action: {_one_line(e)}")
            return zeros

    def alloy_pop_frames(self) -> list[np.ndarray]:
        """The frames recorded since the last call."""
        frames, self._frames = self._frames, []
        return frames
