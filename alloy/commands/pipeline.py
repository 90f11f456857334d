"""`alloy pipeline`: the main job, chaining the stages that exist: collect -> train -> eval.

Each stage runs as its own `alloy <stage>` process in `<run_dir>/<stage>/`, exactly as a user would run it, so its
log, config and outputs are where the stage's docs say. Every stage's config is composed and validated before the
first stage starts. Demonstrations are reused when the dataset already exists (`reuse_data=true`).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import List

from omegaconf import DictConfig

HELP = "the main job: collect demonstrations, train a policy, evaluate it against its teacher, write a summary"
STAGES = ("collect", "train", "eval")

log = logging.getLogger("alloy.pipeline")


@dataclasses.dataclass
class StageConfig:
    enabled: bool = True
    overrides: List[str] = dataclasses.field(default_factory=list)  # extra Hydra overrides for this stage


@dataclasses.dataclass
class Config:
    env: str = "alloy/Nav-Holonomic-v0"  # where demonstrations are collected and the policy is evaluated
    dataset_name: str = "pipeline"  # dataset id <suite>/<env>/<dataset_name>-v0
    reuse_data: bool = True  # skip collection when the dataset already exists
    eval_teacher: bool = True  # also evaluate the teacher on the same episodes, for reference
    collect: StageConfig = dataclasses.field(default_factory=StageConfig)
    train: StageConfig = dataclasses.field(default_factory=StageConfig)
    eval: StageConfig = dataclasses.field(default_factory=StageConfig)


def _collect_selection(env: str) -> list[str]:
    """The `alloy collect` overrides that select exactly `env`."""
    from envs import nav
    from training.errors import TrainingError

    if env in nav.ENV_IDS:
        return ["suite=nav", f"embodiment={nav.EMBODIMENTS[list(nav.ENV_IDS).index(env)]}"]
    if env.startswith("metaworld/"):
        return ["suite=metaworld_mt50", f"tasks=[{env.split('/', 1)[1]}]"]
    raise TrainingError(f"the pipeline collects in nav or Meta-World envs, not {env!r}; "
                        "use env=alloy/Nav-<Embodiment>-v0 or env=metaworld/<task>")


def dataset_id(cfg: DictConfig) -> str:
    from training.collect import dataset_id_for

    return dataset_id_for(cfg.env, cfg.dataset_name)


def stage_commands(cfg: DictConfig, run_dir: Path) -> dict[str, list[str]]:
    """Each enabled stage's `alloy` arguments (overrides last, so that the user's win)."""
    checkpoint = run_dir / "train" / "checkpoints" / "last"
    seed = f"seed={cfg.seed}"
    base = {
        "collect": [*_collect_selection(cfg.env), f"name={cfg.dataset_name}", "overwrite=true", seed],
        "train": [f"dataset={dataset_id(cfg)}", f"device={cfg.device}", seed],
        "eval": [f"env={cfg.env}", f"policy={checkpoint}", f"device={cfg.device}", "video=true", seed],
    }
    commands = {name: base[name] + list(cfg[name].overrides) for name in STAGES if cfg[name].enabled}
    if cfg.eval.enabled and cfg.eval_teacher:
        teacher = [o for o in commands["eval"] if not o.startswith(("policy=", "video="))]
        commands["eval_teacher"] = ["policy=teacher", "video=false", *teacher]
    return commands


def check(cfg: DictConfig) -> None:
    """Compose and validate every stage's config before the first stage starts."""
    from alloy import cli
    from alloy.config import compose, route_value_overrides, validate
    from alloy.paths import config_dir

    for name, args in stage_commands(cfg, Path(cfg.run_dir or "outputs/pipeline/check")).items():
        command = "eval" if name == "eval_teacher" else name
        module = importlib.import_module(cli.available_commands()[command])
        overrides = route_value_overrides(args, tuple(getattr(module, "VALUE_KEYS", ())))
        stage_cfg = validate(compose(command, overrides, config_dir()), module.Config)
        stage_check = getattr(module, "check", None)
        if stage_check is not None and name != "eval":  # eval's checkpoint exists only after training
            stage_check(stage_cfg)


def _run_stage(name: str, args: list[str], run_dir: Path) -> float:
    from training.errors import TrainingError

    command = "eval" if name == "eval_teacher" else name
    stage_dir = run_dir / name
    argv = [sys.executable, "-m", "alloy.cli", command, *args, f"hydra.run.dir={stage_dir}"]
    log.info("stage %s: alloy %s", name, " ".join(args))
    start = time.perf_counter()
    code = subprocess.call(argv)
    if code != 0:
        raise TrainingError(f"stage {name} failed (exit {code}); its log is {stage_dir / (command + '.log')}")
    return time.perf_counter() - start


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def summarize(cfg: DictConfig, run_dir: Path, seconds: dict[str, float]) -> dict:
    """One summary of the run from the stages' own outputs: dataset, training, policy vs teacher success."""
    summary = {"env": cfg.env, "dataset": dataset_id(cfg), "stage_seconds": seconds}
    train_metrics = _read_json(run_dir / "train" / "checkpoints" / "last" / "metrics.json")
    if train_metrics:
        summary["train"] = train_metrics
    for name in ("eval", "eval_teacher"):
        report = _read_json(run_dir / name / "report.json")
        if report:
            overall = report["overall"]
            summary[name] = {k: overall.get(k) for k in ("success_rate", "success_ci", "episodes",
                                                         "length_mean", "failure_reasons")}
            summary[name]["latency_ms_per_action_p50"] = report.get("latency_ms", {}).get("per_action", {}).get("p50")
    lines = [f"# alloy pipeline: {cfg.env}", "", f"dataset `{summary['dataset']}`", "",
             "| policy | success | 95% CI | episodes | mean length |", "| --- | --- | --- | --- | --- |"]
    for name, label in (("eval", "trained policy"), ("eval_teacher", "teacher")):
        if name in summary:
            s = summary[name]
            lo, hi = s["success_ci"]
            lines.append(f"| {label} | {s['success_rate']:.1%} | [{lo:.2f}, {hi:.2f}] | {s['episodes']} | "
                         f"{s['length_mean']:.1f} |")
    lines += ["", "| stage | seconds |", "| --- | --- |"] + [f"| {k} | {v:.1f} |" for k, v in seconds.items()]
    from policies.atomic import atomic_write_json, atomic_write_text

    atomic_write_json(run_dir / "summary.json", summary, newline=False)
    atomic_write_text(run_dir / "summary.md", "\n".join(lines) + "\n")
    return summary


def run(cfg: DictConfig) -> None:
    from training.data import list_datasets

    run_dir = Path(cfg.run_dir)
    commands = stage_commands(cfg, run_dir)
    if "collect" in commands and cfg.reuse_data and dataset_id(cfg) in list_datasets():
        log.info("reusing dataset %s (reuse_data=false collects it again)", dataset_id(cfg))
        del commands["collect"]
    seconds = {name: _run_stage(name, args, run_dir) for name, args in commands.items()}
    summarize(cfg, run_dir, seconds)
    print((run_dir / "summary.md").read_text())
    print(f"results: {run_dir}")
