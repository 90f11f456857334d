"""`alloy bench rollout`: env steps/s of the evaluation loop at several env counts vs one raw env."""

from __future__ import annotations

import dataclasses
import os
from typing import List, Optional

from omegaconf import DictConfig, OmegaConf

from policies.config_fields import num, seq

HELP = "env steps per second of the evaluation loop (trivial policy) at 1, 4, 8 envs vs the raw env step rate"


@dataclasses.dataclass
class Config:
    env: str = "metaworld/reach-v3"
    num_envs: List[int] = seq(lambda: [1, 4, 8], lo=1, integer=True)  # env counts measured
    episodes_per_env: int = num(2, lo=1)
    max_episode_steps: Optional[int] = num(200, lo=1)  # None: the env's own time limit
    raw_steps: int = num(2000, lo=1)
    repeats: int = num(3, lo=1)
    asynchronous: bool = True
    workers: Optional[int] = num(None, lo=1)  # None: one env group per core, the first stepped in-process; N: N worker processes


def run(cfg: DictConfig) -> None:
    from training.errors import TrainingError
    from training.evaluation.bench import bench_rollout
    from training.evaluation.envs_spec import resolve_env_ids

    if not cfg.num_envs or min(cfg.num_envs) <= 0 or min(cfg.episodes_per_env, cfg.raw_steps, cfg.repeats) <= 0:
        raise TrainingError("num_envs (a non-empty list), episodes_per_env, raw_steps and repeats must be positive integers")
    env_ids = resolve_env_ids(cfg.env)
    if len(env_ids) != 1:
        raise TrainingError(f"bench rollout measures one env id, {cfg.env!r} names {len(env_ids)}; pass env=<env id>")
    result = bench_rollout(
        env_ids[0],
        list(cfg.num_envs),
        episodes_per_env=cfg.episodes_per_env,
        max_episode_steps=cfg.max_episode_steps,
        raw_steps=cfg.raw_steps,
        seed=cfg.seed,
        asynchronous=cfg.asynchronous,
        repeats=cfg.repeats,
        workers=cfg.workers,
    )
    result["config"] = OmegaConf.to_container(cfg, resolve=True)
    from policies.atomic import atomic_write_json

    path = os.path.join(cfg.run_dir, "rollout.json")
    atomic_write_json(path, result, newline=False)
    print(f"{result['env_id']}: raw single env {result['raw_env_steps_per_s']:.0f} steps/s "
          f"({result['cores_available']} cores available, load {result['load_average_1min']['before']:.1f})")
    for row in result["rows"]:
        print(f"  {row['num_envs']} envs: {row['env_steps_per_s']:.0f} steps/s (raw {row['raw_env_steps_per_s']:.0f}) = "
              f"{row['speedup_vs_raw']:.2f}x raw, "
              f"efficiency {row['efficiency']:.2f} over {row['cores_used']} cores, "
              f"{row['vector_env']['kind']} vector env, {row['vector_env']['worker_processes']} worker process(es)")
    t = result["target"]
    if t["efficiency"] is not None:
        print(f"target (>= {t['min_efficiency']} at {t['num_envs']} envs): {'met' if t['met'] else 'NOT met'}")
    print(f"written: {path}")
