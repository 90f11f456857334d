"""`alloy bench rl`: env steps/s of residual RL's vector env with random actions, with the frozen base acting inside
it, and inside the whole PPO training loop, measured round-robin in one run so that the machine's drift lands on
every row alike.

Each measurement builds its env afresh, runs `warmup_steps` env steps that are not timed (worker start-up, the
first base calls), then times `steps` env steps. Rows: `random` (uniform random actions straight through the env,
no base), `base` (the base acts every step, the residual is zero: what the SB3 learner sees as its env), `ppo`
(SB3 PPO's `learn`, rollouts and updates together, on the env with the base). With `base_in_workers` (the default on
the CPU) the base acts in every env group's own process, as in training, and the row `base_in_process` is the same
env with one copy of the base acting here for every env (the alternative, for comparison); without it that row is
left out.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from typing import Any

import numpy as np

from training.rl.config import NO_BASE, RLConfig
from training.rl.train import ResidualRL
from training.rl.vec_env import ResidualVecEnv

MODES = ("random", "base", "base_in_process", "ppo")


def _venv(run: ResidualRL, base, with_base: bool) -> ResidualVecEnv:
    return ResidualVecEnv(functools.partial(run.make_vec, with_base), base, run.obs_dims,
                          np.concatenate([run.obs_scale[k] for k in run.obs_dims]), run.cfg.residual.scale,
                          run.cfg.seed)


def _time_env(venv: ResidualVecEnv, actions, warmup: int, steps: int) -> float:
    venv.reset()
    n = venv.num_envs
    for _ in range(max(1, warmup // n)):
        venv.step(actions())
    t0 = time.perf_counter()
    for _ in range(max(1, steps // n)):
        venv.step(actions())
    return max(1, steps // n) * n / (time.perf_counter() - t0)


def measure(run: ResidualRL, mode: str, warmup: int, steps: int, rng: np.random.Generator) -> float:
    """Env steps per second of one row."""
    from policies.residual import ZeroBase

    base = ZeroBase(run.spec.action_dim) if mode == "random" else run._fresh_base()
    venv = _venv(run, base, mode in ("base", "ppo") and run.base_in_workers())
    try:
        da = venv.action_space.shape[0]
        if mode == "random":
            venv.scale = 1.0  # executed = the random action itself
            return _time_env(venv, lambda: rng.uniform(-1, 1, (venv.num_envs, da)).astype(np.float32), warmup, steps)
        if mode in ("base", "base_in_process"):
            zeros = np.zeros((venv.num_envs, da), dtype=np.float32)
            return _time_env(venv, lambda: zeros, warmup, steps)
        from training.rl.algos import build_model

        model = build_model("ppo", venv, run.cfg.net, run.cfg.ppo, run.cfg.sac, run.cfg.seed, run.device)
        model.learn(total_timesteps=warmup)
        t0 = time.perf_counter()
        model.learn(total_timesteps=steps, reset_num_timesteps=False)
        return (model.num_timesteps - warmup) / (time.perf_counter() - t0)
    finally:
        venv.close()


def bench_rl(cfg: RLConfig, steps: int, warmup_steps: int, repeats: int, modes: tuple[str, ...] = MODES
             ) -> dict[str, Any]:
    from envs.vector import available_cores, vector_layout
    from training.rollout.engine import policy_threads

    run = ResidualRL(cfg, "/nonexistent")
    if not run.base_in_workers():
        modes = tuple(m for m in modes if m != "base_in_process")
    rng = np.random.default_rng(cfg.seed)
    samples: dict[str, list[float]] = {m: [] for m in modes}
    layout = vector_layout(cfg.num_envs, cfg.num_envs > 1, cfg.workers)
    load_before = os.getloadavg()[0]
    with policy_threads(layout["worker_processes"]) as threads:
        for r in range(repeats):
            order = modes if r % 2 == 0 else tuple(reversed(modes))
            for mode in order:
                samples[mode].append(measure(run, mode, warmup_steps, steps, rng))
    med = {m: statistics.median(v) for m, v in samples.items()}
    rows = [{"mode": m, "env_steps_per_s": med[m], "samples": samples[m],
             "vs_random": med[m] / med["random"] if "random" in med else None} for m in modes]
    ratio = med["base"] / med["random"] if {"base", "random"} <= set(med) else None
    return {
        "env_id": cfg.env, "base": cfg.base, "num_envs": cfg.num_envs, "vector_env": layout,
        "steps": steps, "warmup_steps": warmup_steps, "repeats": repeats, "policy_threads": threads,
        "base_in_workers": run.base_in_workers(),
        "cores_available": available_cores(), "load_average_1min": {"before": load_before,
                                                                    "after": os.getloadavg()[0]},
        "ppo": {"n_steps": cfg.ppo.n_steps, "batch_size": cfg.ppo.batch_size, "n_epochs": cfg.ppo.n_epochs,
                "net": {"actor": list(cfg.net.actor), "critic": list(cfg.net.critic)}},
        "rows": rows,
        "target": {"base_over_random_min": 0.5, "base_over_random": ratio,
                   "met": None if ratio is None or cfg.base == NO_BASE else ratio >= 0.5},
    }
