"""`alloy collect`: roll out a teacher in parallel workers and write Minari demonstration datasets."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, List

from omegaconf import DictConfig, OmegaConf

from envs.suites import SuiteConfig
from policies.config_fields import num

HELP = "roll out a teacher (nav planner, Meta-World expert or saved policy) and write Minari datasets"
# `embodiment=<robot>` is a plain value here, although `embodiment` is also a config group of other commands.
VALUE_KEYS = ("embodiment",)

log = logging.getLogger("alloy.collect")


@dataclasses.dataclass
class Config:
    suite: SuiteConfig = dataclasses.field(default_factory=SuiteConfig)
    env: str = ""  # one env id instead of the suite: alloy's or any registered Gymnasium id (with teacher=<dir>)
    tasks: List[str] = dataclasses.field(default_factory=list)
    embodiment: str = ""
    episodes_per_task: int = num(10, lo=1)  # episodes per env: one dataset each
    episodes: int = num(0, lo=0, note="0: episodes_per_task")  # > 0: overrides episodes_per_task
    only_success: bool = True
    max_attempts_factor: int = num(3, lo=1)  # with only_success: at most this many rollouts per kept episode
    teacher: str = "teacher"
    name: str = ""
    num_envs: int = num(8, lo=1)  # envs stepped together per target (as evaluation steps them)
    workers: int = num(0, lo=0)  # 0: one group of envs per core, this process stepping the first; N: N worker processes
    stop_on_success: bool = True
    env_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    overwrite: bool = False
    embed_instructions: bool = True
    progress: bool = True


def episodes_of(cfg: DictConfig) -> int:
    return int(cfg.episodes) if cfg.episodes > 0 else int(cfg.episodes_per_task)


def targets_of(cfg: DictConfig):
    from training.collect import select_targets

    return select_targets(
        cfg.suite.name,
        tasks=list(cfg.tasks),
        embodiment=cfg.embodiment,
        teacher=cfg.teacher,
        name=cfg.name,
        env_kwargs=OmegaConf.to_container(cfg.env_kwargs, resolve=True),
        stop_on_success=cfg.stop_on_success,
        env=cfg.env,
    )


def check(cfg: DictConfig) -> None:
    """Value checks that run before anything is written."""
    from training.errors import TrainingError

    if episodes_of(cfg) < 1:
        raise TrainingError(f"episodes_per_task must be >= 1, got {cfg.episodes_per_task}")
    if cfg.workers < 0:
        raise TrainingError(f"workers must be >= 0 (0: one group of envs per core), got {cfg.workers}")
    if cfg.num_envs < 1:
        raise TrainingError(f"num_envs must be >= 1, got {cfg.num_envs}")
    if cfg.max_attempts_factor < 1:
        raise TrainingError(f"max_attempts_factor must be >= 1, got {cfg.max_attempts_factor}")
    import re

    if cfg.name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", cfg.name):
        raise TrainingError(f"invalid value for 'name': {cfg.name!r}; a dataset name is letters, digits, '_', '-' "
                            f"and '.' (it becomes <env>/<name>-v0), e.g. name=expert10")
    from policies.atomic import recover_dir

    if cfg.teacher != "teacher" and not recover_dir(Path(cfg.teacher).expanduser()).is_dir():
        raise TrainingError(f"teacher {cfg.teacher!r} does not exist; pass teacher=teacher or a saved policy directory")
    for target in targets_of(cfg):
        check_success_signal(target, cfg.only_success)


def check_success_signal(target, only_success: bool) -> None:
    """only_success keeps the episodes an env calls successful: an env that never says so would keep none."""
    from envs import is_gymnasium_id
    from training.collect import reports_success
    from training.errors import TrainingError

    if only_success and is_gymnasium_id(target.env_id) and not reports_success(target.env_id, target.env_kwargs):
        raise TrainingError(f"{target.env_id} does not report success (no is_success in its step info), so "
                            f"only_success=true would keep no episode: pass only_success=false")


def run(cfg: DictConfig) -> None:
    from training.collect import collect
    from training.datasets_io import data_root
    from training.runtime import resolve_device, seed_everything

    check(cfg)
    seed_everything(cfg.seed, torch_too=cfg.teacher != "teacher")
    targets = targets_of(cfg)
    episodes = episodes_of(cfg)
    warn_misfit_teacher(targets, cfg.teacher)
    log.info("collecting %d episode(s) in each of %d env(s) with teacher=%s into %s",
             episodes, len(targets), cfg.teacher, data_root())
    results = collect(
        targets,
        episodes=episodes,
        seed=cfg.seed,
        workers=cfg.workers,
        num_envs=cfg.num_envs,
        only_success=cfg.only_success,
        teacher=cfg.teacher,
        max_attempts_factor=cfg.max_attempts_factor,
        overwrite=cfg.overwrite,
        device=str(resolve_device(cfg.device)) if cfg.teacher != "teacher" else "cpu",
        progress=cfg.progress,
        embed_instructions=cfg.embed_instructions,
    )
    per_env = [r.summary() for r in results]
    attempts = sum(r.attempts for r in results)
    successes = sum(r.successes for r in results)
    report: dict[str, Any] = {
        "suite": targets[0].suite if cfg.env else cfg.suite.name,
        "teacher": cfg.teacher,
        "seed": int(cfg.seed),
        "episodes_per_env": episodes,
        "only_success": bool(cfg.only_success),
        "data_root": str(data_root()),
        "overall": {
            "attempts": attempts,
            "successes": successes,
            "success_rate": successes / attempts if attempts else 0.0,
            "mean_task_success_rate": sum(r.success_rate for r in results) / len(results),
            "episodes_kept": sum(r.kept for r in results),
            "steps_kept": sum(r.steps for r in results),
        },
        "per_env": per_env,
    }
    from policies.atomic import atomic_write_json

    out = Path(cfg.run_dir) / "collect.json"
    atomic_write_json(out, report)
    for s in per_env:
        log.info("%-36s teacher success %5.1f%% (%d/%d), kept %d episodes, %d steps -> %s", s["env_id"],
                 100 * s["success_rate"], s["successes"], s["attempts"], s["episodes_kept"], s["steps_kept"],
                 s["dataset_id"])
    o = report["overall"]
    print(f"teacher success {o['success_rate']:.1%} over {o['attempts']} rollouts in {len(results)} env(s) "
          f"(mean per env {o['mean_task_success_rate']:.1%}); kept {o['episodes_kept']} episodes, "
          f"{o['steps_kept']} steps under {report['data_root']}; report: {out}")
    for line in shortfalls(targets, results, episodes, cfg.teacher):
        print(line)


def warn_misfit_teacher(targets, teacher: str) -> None:
    """Say before collecting when the nav planner's heading does not fit a robot (most rollouts would fail)."""
    from training.collect import ENV_TEACHER, nav_teacher_heading

    if teacher != ENV_TEACHER:
        return
    misfits = [m for m in (nav_teacher_heading(t.env_id, t.env_kwargs) for t in targets) if m is not None]
    if misfits:
        log.warning("the nav planner with teacher_heading=%s moves sideways, which %s cannot do: most rollouts will "
                    "fail; add +env_kwargs.teacher_heading=path for these robots", misfits[0][1],
                    ", ".join(robot for robot, _ in misfits))


def shortfalls(targets, results, episodes: int, teacher: str) -> list[str]:
    """One line per env that kept fewer episodes than asked, with the cause to fix (not max_attempts_factor)."""
    from training.collect import low_yield_advice

    return [f"{r.env_id}: kept {r.kept} of {episodes} episodes ({r.successes}/{r.attempts} rollouts succeeded): "
            f"{low_yield_advice(t.env_id, t.env_kwargs, teacher)}"
            for t, r in zip(targets, results) if r.kept < episodes]
