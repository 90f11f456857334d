"""`alloy pipeline`: the main job, demonstrations to an exported generalist, with a report.

    collect -> train (the imitation base) -> eval_base (every robot) + eval_planner (the path-heading planner, every
    robot) -> rl (one residual specialist per robot) -> distill (the generalist, evaluated on every robot and on the
    variants) -> export (ONNX artifact) -> eval_artifact (every robot) -> report

Each stage is the `alloy` subcommand a user would run, in its own folder. Stages that fan out (one RL job or one
evaluation per robot) are Hydra multiruns of that subcommand, so Hydra's launcher plugins decide how they run:
one after another (`launcher=basic`), in parallel processes (`launcher=joblib`, `submitit_local`) or as SLURM jobs
(`launcher=submitit_slurm`).

Caching by content: a stage's key is a hash of its command, its resolved arguments (which hold its inputs' paths,
themselves named by their keys), its inputs' keys and alloy's version. Its output lives in `<store>/<stage>/<key>/`
and counts as done only once `manifest.json` is written there, last; a rerun reuses every stage whose manifest has
its key, and the run directory links each stage's folder. Changing one stage's settings changes its key and the
keys of every stage after it, and nothing before it. A stage interrupted halfway has no manifest, so it runs again.
`stages=[...]` runs a subset (the stages before it must be in the store).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from omegaconf import DictConfig, OmegaConf

HELP = "the main job: demonstrations -> imitation base -> residual RL specialists -> generalist -> export -> report"
STAGES = ("collect", "train", "eval_base", "eval_planner", "rl", "distill", "export", "eval_artifact")
LAUNCHERS = ("basic", "joblib", "submitit_local", "submitit_slurm")
MANIFEST = "manifest.json"

log = logging.getLogger("alloy.pipeline")


@dataclasses.dataclass
class StageConfig:
    overrides: List[str] = dataclasses.field(default_factory=list)  # Hydra overrides of this stage's command


@dataclasses.dataclass
class VariantConfig:
    name: str = ""
    env: str = ""
    kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    in_range: bool = True


@dataclasses.dataclass
class Config:
    base_robot: str = "holonomic"  # the robot the planner teaches (its demonstrations train the base)
    robots: List[str] = dataclasses.field(default_factory=lambda: ["holonomic", "diffdrive", "ackermann", "skidsteer"])
    rl_robots: List[str] = dataclasses.field(default_factory=lambda: ["diffdrive", "ackermann", "skidsteer"])
    variants: List[VariantConfig] = dataclasses.field(default_factory=list)
    stages: List[str] = dataclasses.field(default_factory=list)  # a subset to run; empty: all
    launcher: str = "basic"  # basic | joblib | submitit_local | submitit_slurm (how fanned-out stages run)
    launcher_overrides: List[str] = dataclasses.field(default_factory=list)  # e.g. hydra.launcher.n_jobs=2
    store: str = "outputs/pipeline/store"  # content-addressed stage outputs, shared by runs
    eval_episodes: int = 20  # per robot, in eval_base, eval_planner, eval_artifact
    collect: StageConfig = dataclasses.field(default_factory=StageConfig)
    train: StageConfig = dataclasses.field(default_factory=StageConfig)
    eval: StageConfig = dataclasses.field(default_factory=StageConfig)  # every evaluation stage
    rl: StageConfig = dataclasses.field(default_factory=StageConfig)
    distill: StageConfig = dataclasses.field(default_factory=StageConfig)
    export: StageConfig = dataclasses.field(default_factory=StageConfig)


def env_of(robot: str) -> str:
    from envs.nav.embodiments import env_id_for, get_spec

    get_spec(robot)  # an unknown robot is one clear line
    return env_id_for(robot)


# ---------------------------------------------------------------------------------------------------- stages
@dataclasses.dataclass
class Stage:
    name: str
    command: str
    args: list[str]
    inputs: list[str]  # names of the stages it reads
    multirun: bool = False
    key: str = ""
    dir: Path = Path()


def hydra_value(value: Any) -> str:
    """A Python value in Hydra's override syntax (strings quoted, dicts and lists nested)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    raise TypeError(f"no Hydra syntax for {type(value).__name__}")


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan(cfg: DictConfig) -> dict[str, Stage]:
    """Every stage with its arguments and key, in order (a stage's arguments hold its inputs' store paths)."""
    from policies.version import alloy_version

    store = Path(cfg.store).expanduser().resolve()
    seed, device = f"seed={cfg.seed}", f"device={cfg.device}"
    robots = [env_of(r) for r in cfg.robots]
    stages: dict[str, Stage] = {}

    def add(stage: Stage) -> Stage:
        stage.key = _hash({"command": stage.command, "args": stage.args, "multirun": stage.multirun,
                           "inputs": {i: stages[i].key for i in stage.inputs}, "alloy": alloy_version()})
        stage.dir = store / stage.name / stage.key
        stages[stage.name] = stage
        return stage

    collect = add(Stage("collect", "collect", ["suite=nav", f"embodiment={cfg.base_robot}", "overwrite=true", seed,
                                                *cfg.collect.overrides], []))
    name = f"pipeline-{collect.key[:10]}"  # the dataset is named by its stage's key: other settings, other data
    collect.args.insert(2, f"name={name}")
    dataset = f"nav/{cfg.base_robot}/{name}-v0"
    train = add(Stage("train", "train", [f"dataset={dataset}", device, seed, *cfg.train.overrides], ["collect"]))
    base = train.dir / "checkpoints" / "last"
    evals = [f"episodes={cfg.eval_episodes}", "progress=false", seed, *cfg.eval.overrides]
    fan = f"env={','.join(robots)}"
    add(Stage("eval_base", "eval", [f"policy={base}", fan, *evals], ["train"], multirun=True))
    add(Stage("eval_planner", "eval", ["policy=teacher", fan, "+env_kwargs.teacher_heading=path", *evals], [],
              multirun=True))
    rl = add(Stage("rl", "rl", [f"base={base}", f"robot={','.join(cfg.rl_robots)}", "progress=false", device, seed,
                                *cfg.rl.overrides], ["train"], multirun=True))
    specialists = [f"{env_of(cfg.base_robot)}={base}"] + [
        str(rl.dir / r / "checkpoints" / "best") for r in cfg.rl_robots]
    variants = [dict(name=v.name, env=v.env, kwargs=OmegaConf.to_container(v.kwargs), in_range=v.in_range)
                for v in cfg.variants]
    distill = add(Stage("distill", "distill", [
        "specialists=[" + ",".join(f'"{s}"' for s in specialists) + "]", "compare=false", "progress=false",
        f"eval_episodes={cfg.eval_episodes}", f"variants={hydra_value(variants)}", device, seed,
        *cfg.distill.overrides], ["train", "rl"]))
    generalist = distill.dir / "checkpoints" / "last"
    export = add(Stage("export", "export", [f"policy={generalist}", seed, *cfg.export.overrides], ["distill"]))
    artifact = export.dir / "artifact"  # export's default out: <its run dir>/artifact
    add(Stage("eval_artifact", "eval", [f"policy={artifact}", fan, *evals], ["export"], multirun=True))
    return stages


def _hydra_dir(stage: Stage, cfg: DictConfig) -> list[str]:
    if not stage.multirun:
        return [f"hydra.run.dir={stage.dir}"]
    sub = "${hydra:runtime.choices.robot}" if stage.command == "rl" else "${hydra.job.num}"
    launcher = [] if cfg.launcher == "basic" else [f"hydra/launcher={cfg.launcher}", *cfg.launcher_overrides]
    return ["-m", f"hydra.sweep.dir={stage.dir}", f"hydra.sweep.subdir={sub}", *launcher]


def check(cfg: DictConfig) -> None:
    """Compose and validate every stage's config (every job of a fan-out) before the first stage starts."""
    from alloy import cli
    from alloy.config import ConfigError
    from training.errors import TrainingError

    if cfg.launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {cfg.launcher!r}; choose one of: {', '.join(LAUNCHERS)}")
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; the stages are: {', '.join(STAGES)}")
    if cfg.base_robot not in cfg.robots or any(r not in cfg.robots for r in cfg.rl_robots):
        raise TrainingError("base_robot and every rl_robots entry must be among robots")
    if cfg.eval_episodes < 1:
        raise TrainingError(f"eval_episodes must be >= 1, got {cfg.eval_episodes}")
    from alloy.config import compose, route_value_overrides, validate
    from alloy.paths import config_dir

    for stage in plan(cfg).values():
        module = importlib.import_module(cli.available_commands()[stage.command])
        routed = route_value_overrides(list(stage.args), tuple(getattr(module, "VALUE_KEYS", ())))
        jobs = cli._sweep_jobs(routed) if stage.multirun else [routed]
        for job in jobs:
            validate(compose(stage.command, job, config_dir()), module.Config)


# ---------------------------------------------------------------------------------------------------- running
def _manifest(stage: Stage) -> dict | None:
    try:
        m = json.loads((stage.dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return m if m.get("key") == stage.key else None


def _run(stage: Stage, cfg: DictConfig) -> float:
    from policies.atomic import atomic_write_json
    from training.errors import TrainingError

    if stage.dir.exists():  # no manifest: an interrupted run of this stage; nothing in it is trusted
        shutil.rmtree(stage.dir)
    stage.dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "alloy.cli", stage.command, *stage.args, *_hydra_dir(stage, cfg)]
    log.info("stage %s: alloy %s %s", stage.name, stage.command, " ".join(stage.args))
    start = time.perf_counter()
    with open(stage.dir / "stage.log", "w") as out:
        code = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if code != 0:
        raise TrainingError(f"stage {stage.name} failed (exit {code}); its output is in {stage.dir / 'stage.log'}")
    atomic_write_json(stage.dir / MANIFEST, {"stage": stage.name, "key": stage.key, "command": stage.command,
                                             "args": stage.args, "multirun": stage.multirun, "inputs": stage.inputs,
                                             "seconds": seconds})
    return seconds


def _link(run_dir: Path, stage: Stage) -> None:
    link = run_dir / stage.name
    if link.is_symlink() or link.exists():
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        else:
            link.unlink()
    os.symlink(stage.dir, link, target_is_directory=True)


def run(cfg: DictConfig) -> None:
    from alloy.pipeline_report import write_report
    from training.errors import TrainingError

    check(cfg)
    run_dir = Path(cfg.run_dir)
    stages = plan(cfg)
    wanted = set(cfg.stages) or set(STAGES)
    record: dict[str, dict] = {}
    for name, stage in stages.items():
        done = _manifest(stage)
        if done is not None:
            log.info("stage %s: cached (%s)", name, stage.key)
            record[name] = {"key": stage.key, "cached": True, "seconds": done.get("seconds"), "dir": str(stage.dir)}
        elif name in wanted:
            missing = [i for i in stage.inputs if _manifest(stages[i]) is None]
            if missing:
                raise TrainingError(f"stage {name} needs {', '.join(missing)}, which did not run with these settings; "
                                    f"add them to stages=[...] or leave stages empty")
            record[name] = {"key": stage.key, "cached": False, "seconds": _run(stage, cfg), "dir": str(stage.dir)}
        else:
            continue
        _link(run_dir, stage)
    write_report(cfg, run_dir, stages, record)
    print((run_dir / "report.md").read_text())
    keys = ", ".join(f"{name} {r['key']}{' (cached)' if r['cached'] else ''}" for name, r in record.items())
    print(f"report: {run_dir / 'report.html'}; stages: {keys}")
