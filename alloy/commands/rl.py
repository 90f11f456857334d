"""`alloy rl`: a residual RL specialist for one robot on top of a frozen imitation base (stable-baselines3)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

from omegaconf import MISSING, DictConfig, OmegaConf

from policies.config_fields import num
from training.rl.config import RLConfig

HELP = "train a residual RL specialist (PPO or SAC) for one robot on top of a frozen imitation base"

log = logging.getLogger("alloy.rl")


@dataclasses.dataclass
class Config(RLConfig):
    base: str = MISSING  # checkpoint directory of the frozen base policy, or `none` (plain RL, for comparison)
    env: str = MISSING  # env id of the robot, e.g. alloy/Nav-Diffdrive-v0
    final_eval_episodes: int = num(200, lo=0)  # evaluation of checkpoints/best at the end (seeds from `seed`); 0: none
    resume: bool = False  # continue the run in hydra.run.dir from its checkpoints/last


def _positive(cfg, keys: tuple[str, ...], allow_zero: bool = False) -> None:
    from training.errors import TrainingError

    for key in keys:
        value = OmegaConf.select(cfg, key)
        if value is None or not math.isfinite(float(value)) or value < 0 or (value == 0 and not allow_zero):
            need = ">= 0" if allow_zero else "> 0"
            raise TrainingError(f"{key} must be {need}, got {value}")


def check(cfg: DictConfig) -> None:
    """Value checks that run before anything is written (the base and the env are loaded to check they fit)."""
    from training.errors import TrainingError
    from training.rl.config import ALGOS
    from training.rl.train import ResidualRL, rl_config_from

    if cfg.algo not in ALGOS:
        raise TrainingError(f"unknown algorithm {cfg.algo!r}; choose one of: {', '.join(ALGOS)}")
    _positive(cfg, ("total_steps", "num_envs", "residual.scale", "eval_episodes", "eval_num_envs", "ppo.n_steps",
                    "ppo.batch_size", "ppo.n_epochs", "ppo.lr", "sac.buffer_size", "sac.batch_size", "sac.lr",
                    "sac.train_freq", "sac.gradient_steps"))
    _positive(cfg, ("eval_every", "ckpt_every", "critic_warmup_steps", "explore_ramp_steps", "final_eval_episodes",
                    "ppo.ent_coef", "sac.learning_starts"), allow_zero=True)
    if cfg.workers is not None and cfg.workers <= 0:
        raise TrainingError(f"workers must be a positive integer, got {cfg.workers}; leave it unset for one per core")
    check_base_exists(cfg.base)
    for key, bounds in (cfg.randomize or {}).items():
        if len(bounds) != 2:
            raise TrainingError(f"randomize.{key} must be a pair [low, high], got {list(bounds)}")
    ResidualRL(rl_config_from(OmegaConf.to_container(cfg, resolve=True)), "/nonexistent", resume=False)
    if cfg.run_dir:
        refuse_existing_run(Path(cfg.run_dir), cfg.resume)


def check_base_exists(base: str) -> None:
    """The base (a checkpoint directory or exported artifact) exists, or is `none`; also `alloy bench rl`'s check."""
    from policies.atomic import recover_dir
    from training.errors import TrainingError
    from training.rl.config import NO_BASE

    if base != NO_BASE and not recover_dir(Path(base).expanduser()).exists():
        raise TrainingError(f"base {base!r} does not exist; pass the checkpoint directory or exported artifact of an "
                            f"imitation policy (e.g. <train run>/checkpoints/best), or base=none")


def refuse_existing_run(run_dir: Path, resume: bool) -> None:
    from training.errors import TrainingError

    if not resume and (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").iterdir()):
        raise TrainingError(f"{run_dir} already holds an RL run; pass resume=true to continue it or choose another "
                            f"hydra.run.dir")


def run(cfg: DictConfig) -> None:
    from policies.atomic import atomic_write_json
    from training.evaluation import load_policy
    from training.rl.train import ResidualRL, learning_curve_plot, rl_config_from
    from training.runtime import seed_everything

    check(cfg)
    run_dir = Path(cfg.run_dir)
    seed_everything(cfg.seed)
    config = OmegaConf.to_container(cfg, resolve=True)
    rl = ResidualRL(rl_config_from(config), run_dir, resume=cfg.resume, config=config)
    log.info("%s residual on %s for %s: %d env steps, %d envs, scale %.3g, device %s", cfg.algo.upper(), cfg.base,
             cfg.env, cfg.total_steps, cfg.num_envs, cfg.residual.scale, rl.device)
    metrics = rl.fit()
    summary = {"env": cfg.env, "base": cfg.base, "algo": cfg.algo, **metrics}
    curve = learning_curve_plot({cfg.algo: rl.history}, run_dir / "learning_curve.png",
                                f"{cfg.algo.upper()} residual on {cfg.env}")
    summary["learning_curve"] = curve.name if curve else None
    best = run_dir / "checkpoints" / ("best" if (run_dir / "checkpoints" / "best").exists() else "last")
    if cfg.final_eval_episodes:
        from training.evaluation import evaluate

        report = evaluate(load_policy(best, cfg.device), [cfg.env], episodes=cfg.final_eval_episodes,
                          num_envs=cfg.eval_num_envs, seed=cfg.seed,
                          env_kwargs=OmegaConf.to_container(cfg.eval_env_kwargs, resolve=True),
                          run_dir=run_dir / "final_eval", progress=cfg.progress, policy_name=str(best))
        summary["final_eval"] = {"checkpoint": best.name, **report["overall"]}
        o = report["overall"]
        print(f"specialist ({best.name}, env step {metrics['best'].get('step', metrics['env_steps'])}): success "
              f"{o['success_rate']:.1%} [{o['success_ci'][0]:.3f}, {o['success_ci'][1]:.3f}] over {o['episodes']} "
              f"episodes on {cfg.env}; {metrics['env_steps']} env steps in {metrics['train_wall_s']:.0f} s")
    atomic_write_json(run_dir / "rl.json", json.loads(json.dumps(summary, default=float)))
    log.info("specialist: %s; summary: %s", best, run_dir / "rl.json")
