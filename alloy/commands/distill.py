"""`alloy distill`: the per-robot specialists into one generalist conditioned on the robot (DAgger or offline)."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from distill.config import DistillConfig
from policies.config import DiffusionConfig, NetConfig, SchemeConfig
from training.trainer import TrainerConfig

HELP = "distil per-robot specialists into one generalist conditioned on the robot (DAgger or offline)"

log = logging.getLogger("alloy.distill")


@dataclasses.dataclass
class Config(DistillConfig):
    policy: NetConfig = dataclasses.field(default_factory=NetConfig)
    diffusion: DiffusionConfig = dataclasses.field(default_factory=DiffusionConfig)
    scheme: SchemeConfig = dataclasses.field(default_factory=SchemeConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    resume: bool = False


def _typed(cfg: DictConfig):
    from distill.config import BetaSchedule, Variant

    data = OmegaConf.to_container(cfg, resolve=True)
    names = {f.name for f in dataclasses.fields(DistillConfig)}
    dc = DistillConfig(**{k: v for k, v in data.items() if k in names})
    dc.beta = BetaSchedule(**data["beta"])
    dc.variants = [Variant(**v) for v in data["variants"]]
    student = {"policy": NetConfig(**data["policy"]), "diffusion": DiffusionConfig(**data["diffusion"]),
               "scheme": SchemeConfig(**data["scheme"])}
    return dc, student, TrainerConfig(**data["trainer"]), data


def check(cfg: DictConfig) -> None:
    """Value checks before anything is written (the specialists are loaded to check they fit together)."""
    from alloy.config import ConfigError
    from distill.errors import DistillError
    from distill.generalist import Distillation

    if not cfg.specialists:
        raise ConfigError("missing required value 'specialists': no specialists given; pass "
                          "'specialists=[\"<env id>=<base dir>\",<specialist dir>,...]' (residual specialists from "
                          "`alloy rl` record their robot)")
    for key in ("rounds", "episodes_per_round", "steps_per_round", "envs_per_robot", "eval_episodes",
                "eval_num_envs"):
        if cfg[key] < 1:
            raise DistillError(f"{key} must be >= 1, got {cfg[key]}")
    for key in ("noise_std", "label_std_floor", "round_eval_episodes"):
        if not math.isfinite(float(cfg[key])) or cfg[key] < 0:
            raise DistillError(f"{key} must be >= 0, got {cfg[key]}")
    if not 0.0 <= cfg.noisy_episodes <= 1.0:
        raise DistillError(f"noisy_episodes is a share of episodes in [0, 1], got {cfg.noisy_episodes}")
    b = cfg.beta
    if not (0.0 <= b.end <= 1.0 and 0.0 <= b.start <= 1.0) or b.kind not in ("linear", "exponential") or \
            not 0.0 < b.decay <= 1.0 or b.rounds_to_end < 0:
        raise DistillError("beta: kind linear|exponential, start and end in [0, 1], decay in (0, 1], rounds_to_end "
                           f">= 0; got {OmegaConf.to_container(b)}")
    dc, student, trainer_cfg, _ = _typed(cfg)
    Distillation(dc, student, trainer_cfg, "/nonexistent")
    rounds = Path(cfg.run_dir) / "rounds" if cfg.run_dir else None
    if rounds is not None and not cfg.resume and rounds.exists() and any(rounds.iterdir()):
        raise DistillError(f"{cfg.run_dir} already holds a distillation run; pass resume=true to continue it or "
                           f"choose another hydra.run.dir")


def run(cfg: DictConfig) -> None:
    import numpy as np

    from distill.generalist import EVAL_SEED_OFFSET, Distillation, write_report  # noqa: F401
    from training.evaluation import load_policy
    from training.runtime import resolve_device, seed_everything

    check(cfg)
    if resolve_device(cfg.device).type == "cpu":
        import torch

        from alloy.commands.train import training_threads

        torch.set_num_threads(training_threads(cfg.threads))
    run_dir = Path(cfg.run_dir)
    seed_everything(cfg.seed)
    dc, student, trainer_cfg, data = _typed(cfg)
    run = Distillation(dc, student, trainer_cfg, run_dir, resume=cfg.resume, config=data)
    log.info("%s distillation of %d specialists (%s) into %s x %s, objective %s, %d rounds x %d episodes per robot",
             dc.method, len(run.robots), ", ".join(r.split("/")[-1] for r in run.robots), student["policy"].name,
             student["diffusion"].name, run.objective_name, dc.rounds, dc.episodes_per_round)
    generalist_dir = run.fit()

    # the report: base vs specialist vs generalist on every robot, then the variants (seeds from `seed`)
    episodes, seed = int(dc.eval_episodes), int(dc.seed)
    generalist = load_policy(generalist_dir, cfg.device)
    gen = run._evaluate(generalist, episodes, seed, run_dir=run_dir / "eval" / "generalist", name="generalist")
    table = {r: {"generalist": gen["per_env"][r]} for r in run.robots}
    if dc.compare:
        base = next((s.policy.base_path for s in run.specialists if getattr(s.policy, "base_path", None)), None)
        if base is not None:
            rep = run._evaluate(load_policy(base, cfg.device), episodes, seed, run_dir=run_dir / "eval" / "base",
                                name="base")
            for r in run.robots:
                table[r]["base"] = rep["per_env"][r]
        for s in run.specialists:
            rep = run._evaluate(s.policy, episodes, seed, env_ids=[s.env_id], name=f"specialist {s.env_id}",
                                run_dir=run_dir / "eval" / f"specialist_{s.env_id.split('/')[-1]}")
            table[s.env_id]["specialist"] = rep["per_env"][s.env_id]
    variants = []
    for v in dc.variants:
        rep = run._evaluate(generalist, episodes, seed, env_ids=[v.env], kwargs=dict(v.kwargs), name="generalist",
                            run_dir=run_dir / "eval" / f"variant_{v.name}")
        variants.append({**dataclasses.asdict(v), "generalist": rep["per_env"][v.env]})

    def mean(col: str):
        vals = [row[col]["success_rate"] for row in table.values() if row.get(col)]
        return float(np.mean(vals)) if vals else None

    means = {col: mean(col) for col in ("base", "specialist", "generalist")}
    write_report(run_dir, table, variants, {
        "method": dc.method, "student": f"{student['policy'].name} x {student['diffusion'].name} x "
                                       f"{student['scheme'].name}",
        "objective": run.objective_name, "eval_episodes": episodes, "seed": seed, "means": means,
        "generalist": str(generalist_dir), "rounds": run.history})
    print(f"generalist {generalist_dir}: mean success over {len(run.robots)} robots {means['generalist']:.1%}"
          + (f" (base {means['base']:.1%}, specialists {means['specialist']:.1%})" if means.get("specialist")
             is not None and means.get("base") is not None else "") + f"; report: {run_dir / 'report.md'}")
