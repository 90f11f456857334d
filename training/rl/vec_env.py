"""The env residual RL learns in: alloy's own vector env seen as a stable-baselines3 `VecEnv`, with the frozen base
acting inside it.

Each control step the base acts once for every env, batched (its `act` runs under `inference_mode`); the residual
actor's observation is `policies.residual.residual_features(obs, base_action)` and its action is the residual, so
the executed action is clip(base + scale * residual). Episodes are seeded explicitly (episode `i` of a run resets
with `episode_seed(seed, i)`, the rollout engine's rule), envs that finish are reset alone and the base is reset for
exactly those envs. The vector env is the one evaluation uses (one group of envs per core, the evaluation guard in
every env, no auto-reset); a worker that dies or hangs ends every running episode as a timeout and the vector env is
rebuilt.

SB3 semantics: a finished env returns the first observation of its next episode, with the last one in
`info["terminal_observation"]` and `info["TimeLimit.truncated"]` for timeouts. The base action inside a terminal
observation's features is the one the base chose for the step before it (the base is not asked to act on an
observation that nobody acts on; SB3 only bootstraps the value of truncated episodes from it).

Where the vector env has a group policy (`ResidualRL.make_vec` on the CPU), every group of envs carries its own copy
of the base, which acts in the group's process right after the group's step or reset (`envs.grouped_vector.
PolicyGroup`): the same once-per-step actions on the same observations, with the base's inference spread over the
cores; `base` here is then not asked to act.

With `privileged` > 0 (an asymmetric critic), each observation ends with that many values of what only the simulator
knows (`info["alloy_privileged"]`, e.g. the nav env's obstacle-free distance to the goal): SB3's critic sees them,
the actor's features extractor zeroes them (`training.rl.algos`), and the specialist never receives them.

Progressive exploration (Policy Decorator): each episode uses the residual with probability min(1, t / H) at env
step t (drawn from the episode's seed), otherwise it executes the base action alone; `info["alloy_residual"]` holds
the residual that was executed (zeros in base-only episodes) for algorithms that store executed actions (SAC).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from envs.grouped_vector import POLICY_ACTION
from policies.interface import observation_for
from policies.runtime.features import residual_features
from training.errors import TrainingError
from training.rollout.engine import WORKER_LOST, episode_seed, force_close

log = logging.getLogger(__name__)
PRIVILEGED = "alloy_privileged"  # info key of the simulator-only values (`training.evaluation.guard` copies them)


def no_privileged_info(env_id: str = "this env") -> TrainingError:
    """The one error for an asymmetric critic on an env that reports nothing privileged."""
    return TrainingError(f"critic_privileged=true needs an env that reports info['privileged'] (alloy's nav envs do); "
                         f"{env_id} does not: set critic_privileged=false")


def exploration_probability(step: int, ramp_steps: int) -> float:
    """Probability that an episode starting at env step `step` uses the residual (1 when `ramp_steps` is 0)."""
    if ramp_steps <= 0:
        return 1.0
    return float(min(1.0, max(0.0, step / ramp_steps)))


def _uniform(seed: int) -> float:
    return float(np.random.default_rng(np.random.SeedSequence([int(seed), 0x65787031])).random())


def _info_at(infos: Mapping[str, Any], key: str, i: int, default: Any = None) -> Any:
    values = infos.get(key)
    if values is None:
        return default
    mask = infos.get(f"_{key}")
    return values[i] if mask is None or mask[i] else default


class ResidualVecEnv(VecEnv):
    """`num_envs` envs made by `make_vec()` (an alloy vector env: no auto-reset, the evaluation guard inside), with
    `base` acting inside; observations are residual features, actions are residuals in [-1, 1]."""

    def __init__(self, make_vec: Callable[[], Any], base, obs_dims: Mapping[str, int], obs_scale: np.ndarray,
                 scale: float, seed: int, *, first_episode: int = 0, explore_ramp: int = 0, privileged: int = 0):
        self.make_vec, self.base = make_vec, base
        self.obs_dims = dict(obs_dims)
        self.obs_scale = np.asarray(obs_scale, dtype=np.float32)
        self.scale, self.seed_value = float(scale), int(seed)
        self.next_episode = int(first_episode)
        self.explore_ramp = int(explore_ramp)
        self.global_step = 0  # env steps taken so far (the training loop sets it when it resumes)
        self.vec = make_vec()
        space = self.vec.single_action_space
        if not isinstance(space, gym.spaces.Box):
            raise TrainingError(f"residual RL needs a continuous (Box) action space, the env has {space}")
        self.low = np.asarray(space.low, dtype=np.float32)
        self.high = np.asarray(space.high, dtype=np.float32)
        da = int(np.prod(space.shape))
        n = self.vec.num_envs
        self.privileged = int(privileged)
        features = sum(self.obs_dims.values()) + da + self.privileged
        super().__init__(n, gym.spaces.Box(-np.inf, np.inf, (features,), np.float32),
                         gym.spaces.Box(-1.0, 1.0, (da,), np.float32))
        self.group_base = getattr(self.vec, "group_policy", None) is not None  # the base acts in the env groups
        self._actions: np.ndarray | None = None
        self._base_action = np.zeros((n, da), dtype=np.float32)
        self._privileged = np.zeros((n, self.privileged), dtype=np.float32)
        self._use = np.ones(n, dtype=bool)
        self._episode = np.full(n, -1, dtype=np.int64)
        self._ret = np.zeros(n)
        self._len = np.zeros(n, dtype=np.int64)
        self._t0 = np.full(n, time.time())
        self.episodes_done = 0
        self.env_steps = 0

    # ------------------------------------------------------------------ helpers
    def _features(self, obs) -> np.ndarray:
        features = residual_features(obs, self._base_action, self.obs_dims, self.obs_scale)
        return np.concatenate([features, self._privileged], axis=1) if self.privileged else features

    def _take_privileged(self, infos: Mapping[str, Any], envs: np.ndarray, required: bool = True) -> None:
        """Copy the simulator-only values of `envs` from `infos` (an asymmetric critic's input); a step
        that failed (an env error: no values) keeps the last ones, a reset must report them."""
        if not self.privileged or not envs.any():
            return
        values, mask = infos.get(PRIVILEGED), infos.get(f"_{PRIVILEGED}")
        mask = np.zeros(self.num_envs, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if not required:
            envs = envs & mask
            if not envs.any():
                return
        if values is None or not mask[envs].all():
            raise no_privileged_info()
        values = np.asarray(values, dtype=np.float32).reshape(self.num_envs, -1)
        if values.shape[1] != self.privileged:
            raise TrainingError(f"the env reports {values.shape[1]} privileged values, the critic was built for "
                                f"{self.privileged}")
        self._privileged[envs] = values[envs]

    def _next_seeds(self, mask: np.ndarray) -> list[int | None]:
        seeds: list[int | None] = [None] * self.num_envs
        p = exploration_probability(self.global_step, self.explore_ramp)
        for i in np.flatnonzero(mask):
            seeds[i] = episode_seed(self.seed_value, self.next_episode)
            self._episode[i] = self.next_episode
            self._use[i] = p >= 1.0 or _uniform(seeds[i]) < p
            self._ret[i], self._len[i], self._t0[i] = 0.0, 0, time.time()
            self.next_episode += 1
        return seeds

    def _base_act(self, obs) -> None:
        action = self.base.act(observation_for(self.base, obs))
        self._base_action = np.asarray(action, dtype=np.float32).reshape(self._base_action.shape)

    def _group_actions(self, infos: Mapping[str, Any], into: np.ndarray, got: np.ndarray) -> None:
        """Copy the base actions the env groups attached to `infos` into `into`, marking the envs in `got`."""
        mask = infos.get(f"_{POLICY_ACTION}")
        if mask is None:
            return
        mask = np.asarray(mask, dtype=bool)
        into[mask] = np.asarray(infos[POLICY_ACTION], dtype=np.float32)[mask]
        got |= mask

    def _rebuild(self, error: BaseException) -> np.ndarray:
        """A worker died or hung: every running episode ends (as a timeout) and all envs restart on a new vector env."""
        log.warning("a vector-env worker was lost (%s); every running episode ends and the envs restart",
                    str(error).splitlines()[0] if str(error) else type(error).__name__)
        force_close(self.vec)
        self.vec = self.make_vec()
        return self._reset_all()

    def _reset_all(self) -> np.ndarray:
        mask = np.ones(self.num_envs, dtype=bool)
        obs, infos = self.vec.reset(seed=self._next_seeds(mask), options={"reset_mask": mask})
        self._take_privileged(infos, mask)
        if self.group_base:
            got = np.zeros(self.num_envs, dtype=bool)
            self._group_actions(infos, self._base_action, got)
            self._check_acted(got)
        else:
            self.base.reset(None)
            self._base_act(obs)
        return self._features(obs)

    def _check_acted(self, got: np.ndarray) -> None:
        if not got.all():
            raise TrainingError(f"the base did not act for envs {np.flatnonzero(~got).tolist()} (a vector-env group "
                                f"policy out of step); this is a bug, please report it")

    # ------------------------------------------------------------------ VecEnv
    def reset(self) -> np.ndarray:
        return self._reset_all()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float32).reshape(self.num_envs, -1)

    def step_wait(self):
        n = self.num_envs
        residual = np.clip(self._actions, -1.0, 1.0) * self._use[:, None]
        executed = np.clip(self._base_action + self.scale * residual, self.low, self.high)
        try:
            obs, rewards, terminated, truncated, infos = self.vec.step(executed)
        except WORKER_LOST as e:
            first = self._rebuild(e)
            infos_out = [{"TimeLimit.truncated": True, "terminal_observation": first[i], "alloy_residual": residual[i]}
                         for i in range(n)]
            return first, np.zeros(n, dtype=np.float32), np.ones(n, dtype=bool), infos_out
        rewards = np.asarray(rewards, dtype=np.float64)
        failure = np.array([bool(_info_at(infos, "alloy_failure", i, "")) for i in range(n)])
        terminated = np.asarray(terminated, dtype=bool) | failure
        truncated = np.asarray(truncated, dtype=bool) & ~terminated
        done = terminated | truncated
        self._ret += rewards
        self._len += 1
        self.env_steps += n
        self.global_step += n
        if self.group_base:  # the groups in which no episode ended acted already; the others act after their reset
            next_base, got = self._base_action.copy(), np.zeros(n, dtype=bool)
            self._group_actions(infos, next_base, got)
        infos_out: list[dict[str, Any]] = [{"alloy_residual": residual[i]} for i in range(n)]
        self._take_privileged(infos, np.ones(n, dtype=bool), required=False)
        if done.any():
            terminal = self._features(obs)  # with the base actions of the step that ended them
            now = time.time()
            for i in np.flatnonzero(done):
                infos_out[i].update({
                    "terminal_observation": terminal[i],
                    "TimeLimit.truncated": bool(truncated[i]),
                    "is_success": bool(_info_at(infos, "alloy_success", i, False)),
                    "episode": {"r": float(self._ret[i]), "l": int(self._len[i]), "t": round(now - self._t0[i], 6)},
                    "alloy_failure": str(_info_at(infos, "alloy_failure", i, "") or ""),
                    "alloy_used_residual": bool(self._use[i]),
                })
            self.episodes_done += int(done.sum())
            try:
                obs, reset_infos = self.vec.reset(seed=self._next_seeds(done), options={"reset_mask": done})
            except WORKER_LOST as e:
                return self._rebuild(e), rewards.astype(np.float32), np.ones(n, dtype=bool), infos_out
            self._take_privileged(reset_infos, done)
            if self.group_base:
                self._group_actions(reset_infos, next_base, got)
            else:
                self.base.reset(done)
        if self.group_base:
            self._check_acted(got)
            self._base_action = next_base
        else:
            self._base_act(obs)
        return self._features(obs), rewards.astype(np.float32), done, infos_out

    def close(self) -> None:
        if self.vec is not None:
            try:
                self.vec.close()
            except Exception:  # noqa: BLE001 - a broken worker must not hide the results
                force_close(self.vec)
            self.vec = None

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        values = self.vec.get_attr(attr_name)
        return [values[i] for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        if indices is not None:
            raise TrainingError("set_attr on a subset of the envs is not supported by the residual RL env")
        self.vec.set_attr(attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        values = self.vec.call(method_name, *method_args, **method_kwargs)
        return [values[i] for i in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Episodes are seeded by their index in the run (`episode_seed`); SB3's seed does not change them."""
        return [None] * self.num_envs
