"""`alloy train`: imitation-learning training of a diffusion policy (denoiser x process x scheme) on datasets.

Data parallel: `torchrun --nproc_per_node=N -m alloy.cli train ... hydra.run.dir=<dir>` (give the run directory
explicitly so that every process agrees on it; only rank 0 writes checkpoints and logs).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
from typing import Any, Dict

from omegaconf import MISSING, DictConfig, OmegaConf

from policies.config import DiffusionConfig, NetConfig, SchemeConfig
from policies.config_fields import num
from training.trainer import TrainerConfig

HELP = "train a diffusion policy (policy=dit|mdt|mode|mlp, diffusion=ddpm|ddim|edm) on demonstration datasets"

log = logging.getLogger("alloy.train")


@dataclasses.dataclass
class Config:
    # One dataset id, several joined by '+', each optionally weighted as 'id:weight', or a glob over the local
    # datasets ('metaworld/*/expert-v0'). Weights make a weighted mixture; without them every window counts once.
    dataset: str = MISSING
    policy: NetConfig = dataclasses.field(default_factory=NetConfig)
    diffusion: DiffusionConfig = dataclasses.field(default_factory=DiffusionConfig)
    scheme: SchemeConfig = dataclasses.field(default_factory=SchemeConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    future_steps: int = num(-1, lo=-1, note="-1: pred_horizon")  # MDT foresight target: state this many steps ahead
    eval_env_kwargs: Dict[str, Any] = dataclasses.field(default_factory=dict)  # merged over the datasets' env kwargs
    resume: bool = False  # continue the run in hydra.run.dir from its checkpoints/last
    # torch threads of each training process on CPU; 0: the cores this process may use divided by the processes of
    # a torchrun on this machine (OpenMP threads spinning on a core another process needs slow both down badly)
    threads: int = num(0, lo=0, note="0: cores / local processes")
    overwrite: bool = False  # start afresh in a hydra.run.dir that already holds a checkpoint (replacing it)


def parse_datasets(spec: str) -> tuple[list[str], list[float] | None]:
    """Dataset ids and optional weights from 'a', 'a+b', 'a:0.7+b:0.3' or a glob like 'metaworld/*/expert-v0'."""
    from training.data import list_datasets
    from training.errors import DatasetError

    ids, weights = [], []
    for part in [p.strip() for p in str(spec).split("+") if p.strip()]:
        name, _, weight = part.partition(":")
        if any(c in name for c in "*?["):
            matched = [d for d in list_datasets() if fnmatch.fnmatch(d, name)]
            if not matched:
                have = list_datasets()
                shown = ", ".join(have[:6]) + (f" (+{len(have) - 6} more)" if len(have) > 6 else "")
                raise DatasetError(f"no local dataset matches {name!r}; the data root (ALLOY_DATA_DIR) holds: "
                                   f"{shown or 'none'}; make one with `alloy collect`")
        else:
            matched = [name]
        for m in matched:
            ids.append(m)
            try:
                weights.append(float(weight) if weight else None)
            except ValueError:
                raise DatasetError(f"dataset weight {weight!r} in {part!r} is not a number; write id:0.5") from None
    if not ids:
        raise DatasetError("no dataset given; pass dataset=<id>, dataset=<id1>+<id2> or a glob")
    given = [w for w in weights if w is not None]
    if given and len(given) != len(weights):
        raise DatasetError("give a weight to every dataset or to none (dataset=a:0.7+b:0.3)")
    return ids, (weights if given else None)


def make_evaluator(dataset, cfg: DictConfig):
    """Periodic rollout evaluation on the env ids the datasets were collected in (or trainer.eval_env_ids)."""
    from training.errors import TrainingError
    from training.evaluation import evaluate

    groups: dict[str, tuple[list[str], dict]] = {}
    extra = OmegaConf.to_container(cfg.eval_env_kwargs, resolve=True)
    if cfg.trainer.eval_env_ids:
        groups["{}"] = (list(cfg.trainer.eval_env_ids), dict(extra))
    else:
        for meta in dataset.metadata:
            env_id = meta.get("env_id")
            if not env_id:
                raise TrainingError("the datasets do not record their env id; set trainer.eval_env_ids=[...] or "
                                    "trainer.eval_every=0")
            kwargs = {**(meta.get("env_kwargs") or {}), **extra}
            key = json.dumps(kwargs, sort_keys=True)
            ids = groups.setdefault(key, ([], kwargs))[0]
            if env_id not in ids:
                ids.append(env_id)

    def run_eval(policy, step: int) -> dict:
        total, successes, per_env = 0, 0.0, {}
        for env_ids, kwargs in groups.values():
            report = evaluate(policy, env_ids, episodes=cfg.trainer.eval_episodes, num_envs=cfg.trainer.eval_num_envs,
                              seed=cfg.seed + 1_000_000, env_kwargs=kwargs, progress=False,
                              config={"train_step": step})
            n = report["overall"]["episodes"]
            total += n
            successes += (report["overall"]["success_rate"] or 0.0) * n
            per_env.update(report["per_env"])
        return {"overall": {"success_rate": successes / max(total, 1), "episodes": total}, "per_env": per_env}

    return run_eval


# What a run writes in its directory; `overwrite=true` removes the earlier run's before training starts.
RUN_OUTPUTS = ("checkpoints", "evals", "tb", "train_log.csv", "metrics.json")


def check(cfg: DictConfig) -> None:
    """Value checks before anything is written."""
    from alloy.config import ConfigError

    if cfg.resume and cfg.overwrite:
        raise ConfigError("resume=true continues the run in hydra.run.dir and overwrite=true replaces it; pass one")
    if cfg.trainer.min_lr > cfg.trainer.lr:
        raise ConfigError(f"invalid value for 'trainer.min_lr': {cfg.trainer.min_lr}; it must be <= trainer.lr "
                          f"({cfg.trainer.lr}), the cosine's peak")
    if cfg.run_dir:
        refuse_existing_run(cfg)
    if cfg.get("dataset") and not OmegaConf.is_missing(cfg, "dataset"):
        from training.data import list_datasets
        from training.datasets_io import dataset_dir
        from training.errors import DatasetError

        ids, _ = parse_datasets(cfg.dataset)  # unknown or unmatched datasets, bad weights: before the run dir exists
        unknown = [d for d in ids if not dataset_dir(d).is_dir()]
        if unknown:
            have = list_datasets()
            shown = ", ".join(have[:6]) + (f" (+{len(have) - 6} more)" if len(have) > 6 else "")
            raise DatasetError(f"dataset {unknown[0]!r} not found; the data root (ALLOY_DATA_DIR) holds: "
                               f"{shown or 'none'}; make one with `alloy collect`")


def refuse_existing_run(cfg: DictConfig) -> list[str]:
    """The checkpoints `cfg.run_dir` holds; TrainingError when it holds one and neither resume=true nor
    overwrite=true says what to do with it."""
    from pathlib import Path

    from training.checkpoint import existing_checkpoints
    from training.errors import TrainingError

    run_dir = Path(cfg.run_dir)
    found = existing_checkpoints(run_dir / "checkpoints")
    if found and not cfg.resume and not cfg.overwrite:
        raise TrainingError(f"{run_dir} already holds a training run (checkpoints/{found[0]}); pass resume=true to "
                            f"continue it, overwrite=true to replace it, or choose another hydra.run.dir")
    return found


def prepare_run_dir(cfg: DictConfig) -> bool:
    """Whether to resume: refuse a directory holding a checkpoint unless resume=true or overwrite=true, start
    fresh (and say so) where resume=true finds nothing to resume, and clear the earlier run for overwrite=true."""
    import os
    import shutil
    from pathlib import Path

    run_dir = Path(cfg.run_dir)
    found = refuse_existing_run(cfg)
    if cfg.resume and "last" in found:
        return True
    if cfg.resume:
        log.info("nothing to resume in %s (no checkpoints/last): starting a fresh run", run_dir)
    if cfg.overwrite and found and os.environ.get("RANK", "0") == "0":  # data parallel: rank 0 clears
        log.info("overwrite=true: removing the earlier run's checkpoints and logs in %s", run_dir)
        for name in RUN_OUTPUTS:
            path = run_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    return False


def training_threads(threads: int) -> int:
    """`threads`, or for 0 the cores this process may use shared among the torchrun processes of this machine."""
    import os

    if threads > 0:
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def run(cfg: DictConfig) -> None:
    from policies import DiffusionConfig as D
    from policies import NetConfig as N
    from policies import SchemeConfig as S
    from training.data import WindowDataset
    from training.policy_build import build_policy
    from training.runtime import resolve_device, seed_everything
    from training.trainer import Trainer
    from training.trainer import TrainerConfig as T

    def typed(cls, node):
        return cls(**OmegaConf.to_container(node, resolve=True))

    check(cfg)
    net, diffusion, scheme = typed(N, cfg.policy), typed(D, cfg.diffusion), typed(S, cfg.scheme)
    trainer_cfg = typed(T, cfg.trainer)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        import torch

        torch.set_num_threads(training_threads(cfg.threads))
        log.info("torch threads: %d (threads=%d)", torch.get_num_threads(), cfg.threads)
    seed_everything(cfg.seed)
    ids, weights = parse_datasets(cfg.dataset)
    dataset = WindowDataset(ids, obs_horizon=net.obs_horizon, pred_horizon=net.pred_horizon, weights=weights,
                            action_horizon=scheme.action_horizon,
                            future_steps=None if cfg.future_steps < 0 else cfg.future_steps)
    policy = build_policy(dataset, net, diffusion, scheme)
    dataset.check_policy(policy.obs_spec, policy.action_dim)
    n_params = sum(p.numel() for p in policy.parameters())
    log.info("%s x %s x %s: %.2fM parameters, %d windows from %d dataset(s), device %s", net.name, diffusion.name,
             scheme.name, n_params / 1e6, len(dataset), len(ids), device)
    evaluator = make_evaluator(dataset, cfg) if trainer_cfg.eval_every else None
    config = OmegaConf.to_container(cfg, resolve=True)
    resume = prepare_run_dir(cfg)
    trainer = Trainer(policy, dataset, trainer_cfg, cfg.run_dir, device, seed=cfg.seed, config=config,
                      evaluator=evaluator, resume=resume)
    if trainer.step >= trainer_cfg.max_steps:
        log.info("the run is already at step %d of %d; nothing to do", trainer.step, trainer_cfg.max_steps)
    start_step, start_s = trainer.step, trainer.elapsed
    metrics = trainer.fit()
    if trainer.dist.is_main:
        print(summary_line(metrics, start_step, start_s, trainer_cfg.batch_size, cfg.run_dir))


def summary_line(metrics: dict, start_step: int, start_s: float, batch_size: int, run_dir: str) -> str:
    """What this invocation did (a resumed run's earlier steps and time are not counted as its own)."""
    steps, seconds = metrics["step"] - start_step, metrics["train_wall_s"] - start_s
    rate = f"{steps * batch_size / seconds:.0f} samples/s" if steps and seconds > 0 else "no samples"
    resumed = f", resumed at step {start_step}, now at step {metrics['step']}" if start_step else ""
    best = metrics["best"]
    return (f"trained {steps} steps in {seconds:.1f} s ({rate}{resumed}); checkpoint: {run_dir}/checkpoints/last"
            + (f"; best eval success {best['success_rate']:.3f} at step {best['step']}" if best else ""))
