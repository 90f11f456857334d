"""`alloy bench rl`: env steps/s of residual RL's env with random actions, with the base inside, and in PPO."""

from __future__ import annotations

import dataclasses
import os

from omegaconf import MISSING, DictConfig, OmegaConf

from policies.config_fields import num
from training.rl.config import RLConfig

HELP = "env steps/s of residual RL's vector env: random actions vs the frozen base inside vs the whole PPO loop"


@dataclasses.dataclass
class Config(RLConfig):
    base: str = MISSING  # checkpoint of the base (or none: the base row then measures a zero base)
    env: str = "alloy/Nav-Diffdrive-v0"
    steps: int = num(4000, lo=1)  # timed env steps per measurement (all envs together)
    warmup_steps: int = num(512, lo=0)  # untimed env steps before each measurement
    repeats: int = num(3, lo=1)  # round-robin passes over the rows; medians are reported


def check(cfg: DictConfig) -> None:
    """The base must exist before anything is written (`base=none` times the loop without one)."""
    from alloy.commands.rl import check_base_exists

    check_base_exists(cfg.base)


def run(cfg: DictConfig) -> None:
    from policies.atomic import atomic_write_json
    from training.errors import TrainingError
    from training.rl.bench import bench_rl
    from training.rl.train import rl_config_from

    if min(cfg.steps, cfg.repeats, cfg.num_envs) <= 0 or cfg.warmup_steps < 0:
        raise TrainingError("steps, repeats and num_envs must be positive and warmup_steps >= 0")
    result = bench_rl(rl_config_from(OmegaConf.to_container(cfg, resolve=True)), cfg.steps, cfg.warmup_steps,
                      cfg.repeats)
    result["config"] = OmegaConf.to_container(cfg, resolve=True)
    path = os.path.join(cfg.run_dir, "rl.json")
    atomic_write_json(path, result)
    print(f"{result['env_id']}, {result['num_envs']} envs ({result['vector_env']['kind']}, "
          f"{result['vector_env']['worker_processes']} worker process(es)), base {result['base']}:")
    width = max(len(row["mode"]) for row in result["rows"])
    for row in result["rows"]:
        ratio = f" = {row['vs_random']:.2f}x random" if row["vs_random"] is not None else ""
        print(f"  {row['mode']:>{width}}: {row['env_steps_per_s']:.0f} env steps/s{ratio}")
    t = result["target"]
    if t["met"] is not None:
        print(f"target (base >= {t['base_over_random_min']} x random): {'met' if t['met'] else 'NOT met'}")
    print(f"written: {path}")
