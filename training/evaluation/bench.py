"""Throughput of the evaluation loop against the raw step rate of one env, measured in the same run.

The loop runs a trivial policy (zeros), so what is measured is the price of vectorisation: process round trips,
observation batching, the guard, bookkeeping. Efficiency = loop steps/s / (raw steps/s x cores used), where cores
used = min(num_envs, cores available to this process). The target is efficiency >= 0.5 with 4 envs.
Wall-clock rates depend on what else runs on the machine: the load average is recorded with the figures.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from envs.vector import available_cores
from training.evaluation.report import versions
from training.evaluation.rollout import evaluate

TARGET_NUM_ENVS = 4
TARGET_EFFICIENCY = 0.5


class ZeroPolicy:
    """The trivial policy: zero action for every env, no state, no compute."""

    name = "zeros"
    obs_spec = None

    def __init__(self, action_dim: int):
        self.action_dim = int(action_dim)

    def reset(self, mask: np.ndarray | None = None) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        batch = len(next(iter(obs.values())))
        return np.zeros((batch, self.action_dim), dtype=np.float32)


def raw_step_rate(env_id: str, steps: int, seed: int, env_fn=None, **env_kwargs: Any) -> tuple[float, int]:
    """Steps/s of one env stepped in this process with zero actions (resets included in the time); and action dim."""
    if env_fn is None:
        from envs import make_env

        env = make_env(env_id, **env_kwargs)
    else:
        env = env_fn(**env_kwargs)
    try:
        action = np.zeros(env.action_space.shape, dtype=env.action_space.dtype)
        env.reset(seed=seed)
        t0 = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        elapsed = time.perf_counter() - t0
    finally:
        env.close()
    return steps / elapsed, int(np.prod(env.action_space.shape))


def bench_rollout(
    env_id: str,
    num_envs: list[int],
    episodes_per_env: int = 2,
    max_episode_steps: int | None = 200,
    raw_steps: int = 2000,
    seed: int = 0,
    asynchronous: bool = True,
    repeats: int = 3,
    env_fn=None,
    env_kwargs: dict | None = None,
    workers: int | None = None,
) -> dict:
    """Raw single-env rate and the evaluation loop's rate at each env count; the result written to rollout.json.

    Each loop measurement is paired with a raw measurement taken just before it, and the median over `repeats`
    pairs is reported, so that load from other processes drifting during the run biases the ratio less.
    """
    env_kwargs = dict(env_kwargs or {})
    load_before = os.getloadavg()
    cores = available_cores()
    action_dim = raw_step_rate(env_id, 10, seed, env_fn=env_fn, **env_kwargs)[1]
    rows, all_raw = [], []
    for k in num_envs:
        raws, rates = [], []
        for _ in range(repeats):
            raws.append(raw_step_rate(env_id, raw_steps, seed, env_fn=env_fn, **env_kwargs)[0])
            report = evaluate(
                ZeroPolicy(action_dim), [env_id], episodes=k * episodes_per_env, num_envs=k, seed=seed,
                env_kwargs=env_kwargs, asynchronous=asynchronous, progress=False, max_episode_steps=max_episode_steps,
                stop_on_success=False, env_fn=env_fn, workers=workers,
            )
            rates.append(report["env_steps_per_s"])
        all_raw += raws
        used = min(k, cores)
        ratios = [rate / raw for rate, raw in zip(rates, raws)]
        rows.append({
            "num_envs": k,
            "env_steps": report["env_steps"],
            "env_steps_per_s": float(np.median(rates)),
            "raw_env_steps_per_s": float(np.median(raws)),
            "cores_used": used,
            "vector_env": report["config"]["vector_env"],
            "speedup_vs_raw": float(np.median(ratios)),
            "efficiency": float(np.median(ratios)) / used,
            "samples": {"env_steps_per_s": rates, "raw_env_steps_per_s": raws},
        })
    at_target = next((r for r in rows if r["num_envs"] == TARGET_NUM_ENVS), None)
    return {
        "env_id": env_id,
        "asynchronous": asynchronous,
        "raw_env_steps_per_s": float(np.median(all_raw)),
        "raw_steps": raw_steps,
        "repeats": repeats,
        "cores_available": cores,
        "episodes_per_env": episodes_per_env,
        "max_episode_steps": max_episode_steps,
        "rows": rows,
        "target": {
            "num_envs": TARGET_NUM_ENVS,
            "min_efficiency": TARGET_EFFICIENCY,
            "efficiency": at_target["efficiency"] if at_target else None,
            "met": bool(at_target and at_target["efficiency"] >= TARGET_EFFICIENCY),
        },
        # Other processes compete for the same cores; the load average tells how busy the machine was.
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "versions": versions(),
    }
