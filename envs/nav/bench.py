"""Throughput of the navigation envs: control steps per second, single process, and the raw physics rate.

The control rate is what rollouts, data collection and RL see (physics sub-steps, controller, lidar,
observation and reward). The raw rate is `mj_step` alone on the same model with every sensor on,
which bounds what any env built on that model could reach: control steps/s <= mj_step/s / sub-steps.
"""

from __future__ import annotations

import platform
import time

import mujoco
import numpy as np

from envs.nav.embodiments import EMBODIMENTS, get_spec


def bench_embodiment(name: str, steps: int = 2000, seed: int = 0) -> dict:
    """Time `steps` env steps under uniform random commands, and `mj_step` over as many physics steps."""
    from envs.nav.env import NavEnv

    get_spec(name)
    env = NavEnv(embodiment=name)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1.0, 1.0, size=(steps, 3)).astype(np.float32)
    env.reset(seed=seed)
    step_time = reset_time = 0.0
    resets = 0
    for a in actions:
        t0 = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(a)
        step_time += time.perf_counter() - t0
        if terminated or truncated:
            t0 = time.perf_counter()
            env.reset()
            reset_time += time.perf_counter() - t0
            resets += 1
    substeps = int(round(env.period / env.model.opt.timestep))

    # Raw physics on the same model and commands, sensors (16 rangefinders) evaluated every step.
    m, d = env.model, env.data
    env.reset(seed=seed)
    m.opt.disableflags &= ~int(mujoco.mjtDisableBit.mjDSBL_SENSOR)
    physics_time = 0.0
    for a in actions:
        env.controller.apply(m, d, a.astype(np.float64), env.period)
        t0 = time.perf_counter()
        mujoco.mj_step(m, d, nstep=substeps)
        physics_time += time.perf_counter() - t0
    m.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_SENSOR)
    env.close()
    mj_rate = steps * substeps / physics_time
    return {
        "embodiment": name,
        "env_id": get_spec(name).env_id,
        "steps": steps,
        "control_hz": 1.0 / env.period,
        "substeps_per_control_step": substeps,
        "lidar_beams": env.n_beams,
        "control_steps_per_s": steps / step_time,
        "control_steps_per_s_with_resets": steps / (step_time + reset_time),
        "resets": resets,
        "mean_reset_ms": 1000.0 * reset_time / resets if resets else None,
        "mj_steps_per_s": mj_rate,
        "physics_bound_control_steps_per_s": mj_rate / substeps,
    }


def bench_envs(embodiments=EMBODIMENTS, steps: int = 2000, seed: int = 0, progress=None) -> dict:
    """`bench_embodiment` for each robot, plus the machine and library versions the figures depend on."""
    results = {}
    for name in embodiments:
        results[name] = bench_embodiment(name, steps=steps, seed=seed)
        if progress is not None:
            progress(name)
    return {
        "embodiments": results,
        "machine": {
            "python": platform.python_version(),
            "mujoco": mujoco.__version__,
            "processor": platform.processor() or platform.machine(),
            "system": platform.platform(),
        },
        "single_process": True,
        "seed": seed,
    }


def format_table(report: dict) -> str:
    head = f"{'embodiment':<11} {'ctrl steps/s':>12} {'w/ resets':>10} {'mj_step/s':>10} {'bound':>8} {'substeps':>8}"
    lines = [head, "-" * len(head)]
    for name, r in report["embodiments"].items():
        lines.append(
            f"{name:<11} {r['control_steps_per_s']:>12.0f} {r['control_steps_per_s_with_resets']:>10.0f} "
            f"{r['mj_steps_per_s']:>10.0f} {r['physics_bound_control_steps_per_s']:>8.0f} "
            f"{r['substeps_per_control_step']:>8d}"
        )
    return "\n".join(lines)
