"""`alloy eval`: roll a policy out in simulation and write report.json, report.md, plots and videos."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from policies.config_fields import num

# `policy=<checkpoint dir | teacher>` is a plain value here, although `policy` is also train's config group.
VALUE_KEYS = ("policy",)
HELP = "evaluate a policy (checkpoint dir or teacher) in simulation: success with 95% CI, failures, latency, videos"

@dataclasses.dataclass
class Config:
    policy: str = "teacher"  # checkpoint directory | teacher
    env: str = MISSING  # env id (alloy/Nav-Holonomic-v0, metaworld/reach-v3) or suite (nav, metaworld_mt10, ...)
    episodes: int = num(10, lo=1)  # per env id
    num_envs: int = num(4, lo=1)  # parallel envs (in worker processes unless asynchronous=false)
    asynchronous: bool = True
    # None: one env group per core, the first stepped in-process; N: N worker processes (N=num_envs: one per env)
    workers: Optional[int] = num(None, lo=1)
    video: bool = False
    video_episodes: int = num(4, lo=0)  # episodes tiled into each env id's video
    video_fps: Optional[float] = num(None, lo=1)  # None: the env's control rate (real time); lower plays slower
    max_episode_steps: Optional[int] = num(None, lo=1)  # None: the env's own time limit
    stop_on_success: bool = True
    progress: bool = True
    env_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    action_horizon: Optional[int] = num(None, lo=1)  # Ta actions executed per chunk; None: the checkpoint's
    inference_steps: Optional[int] = num(None, lo=1)  # denoising steps per chunk (chunk scheme); None: the checkpoint's

def check(cfg: DictConfig) -> None:
    """Value checks run before anything is written."""
    from training.errors import TrainingError

    if cfg.episodes <= 0:
        raise TrainingError(f"episodes must be a positive integer, got {cfg.episodes}; use episodes=1 or more")
    if cfg.num_envs <= 0:
        raise TrainingError(f"num_envs must be a positive integer, got {cfg.num_envs}; use num_envs=1 or more")
    for key in ("action_horizon", "inference_steps"):
        if cfg[key] is not None and cfg[key] <= 0:
            raise TrainingError(f"{key} must be a positive integer, got {cfg[key]}; leave it unset for the checkpoint's")
    if cfg.workers is not None and cfg.workers <= 0:
        raise TrainingError(f"workers must be a positive integer, got {cfg.workers}; leave it unset for one per core")
    from pathlib import Path

    from training.evaluation.envs_spec import resolve_env_ids

    env_ids = resolve_env_ids(cfg.env)
    from policies.atomic import recover_dir  # a write killed between its two renames left only `.<name>.old`

    if cfg.policy != "teacher" and not recover_dir(Path(cfg.policy).expanduser()).exists():
        raise TrainingError(missing_policy_message(cfg.policy))
    check_teacher_env(cfg.policy, env_ids)


def missing_policy_message(policy: str) -> str:
    """`policy=dit` names a network of alloy train, not something to evaluate: say what eval takes."""
    from alloy.paths import config_dir

    if (config_dir() / "policy" / f"{policy}.yaml").is_file():
        return (f"policy={policy} is a network for alloy train (alloy train policy={policy} dataset=...); alloy eval "
                f"takes policy=teacher or a trained checkpoint directory, e.g. policy=<train run>/checkpoints/best")
    return f"policy '{policy}' does not exist; pass policy=teacher or a checkpoint directory"


def check_teacher_env(policy: str, env_ids: list[str]) -> None:
    """The teacher lives inside alloy's envs (nav planner, Meta-World expert): a plain Gymnasium env has none."""
    from envs import has_teacher
    from training.errors import TrainingError

    without = [e for e in env_ids if not has_teacher(e)]
    if policy == "teacher" and without:
        raise TrainingError(f"policy=teacher is the privileged teacher of alloy's envs (alloy/Nav-*, metaworld/*); "
                            f"{without[0]} has none: pass policy=<saved policy dir> to evaluate a policy there")


def run(cfg: DictConfig) -> None:
    from training.evaluation import evaluate, load_policy
    from training.evaluation.envs_spec import resolve_env_ids
    from training.runtime import seed_everything

    check(cfg)
    seed_everything(cfg.seed)
    env_ids = resolve_env_ids(cfg.env)
    policy = load_policy(cfg.policy, device=cfg.device, action_horizon=cfg.action_horizon,
                         inference_steps=cfg.inference_steps)
    report = evaluate(
        policy,
        env_ids,
        episodes=cfg.episodes,
        num_envs=cfg.num_envs,
        seed=cfg.seed,
        env_kwargs=OmegaConf.to_container(cfg.env_kwargs, resolve=True),
        video=cfg.video,
        run_dir=cfg.run_dir,
        asynchronous=cfg.asynchronous,
        workers=cfg.workers,
        progress=cfg.progress,
        video_episodes=cfg.video_episodes,
        video_fps=cfg.video_fps,
        max_episode_steps=cfg.max_episode_steps,
        stop_on_success=cfg.stop_on_success,
        policy_name=cfg.policy,
        config={"env": cfg.env, "device": cfg.device, "action_horizon": cfg.action_horizon,
                "inference_steps": cfg.inference_steps},
    )
    print(summary(report, cfg.run_dir))

def summary(report: dict, run_dir: str) -> str:
    """A few lines for the console; the full numbers are in report.json / report.md."""
    lines = []
    for env_id, m in list(report["per_env"].items()) + [("overall", report["overall"])]:
        lo, hi = m["success_ci"]
        rate = "-" if m["success_rate"] is None else f"{m['success_rate']:.1%}"
        ret = "" if m.get("return_mean") is None else f", return {m['return_mean']:.4g}"
        lines.append(f"{env_id:<36} success {rate:>6} [{lo:.2f}, {hi:.2f}] over {m['episodes']} episodes{ret}")
    call = report["latency_ms"]["per_call"]
    if call["p50"] is not None:
        lines.append(f"policy act p50 {call['p50']:.2f} ms, p99 {call['p99']:.2f} ms; "
                     f"{report['env_steps_per_s'] or 0:.0f} env steps/s")
    lines.append(f"report: {run_dir}/report.json")
    return "\n".join(lines)
