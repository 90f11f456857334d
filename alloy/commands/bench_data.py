"""`alloy bench data`: samples per second the dataset loader feeds into training batches."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import List, Optional

from omegaconf import DictConfig

from policies.config_fields import num

HELP = "measure the window loader: samples/s into training batches on the device (data.json)"

log = logging.getLogger(__name__)


DEFAULT_DATASETS = ["metaworld/*/expert-v0"]  # or, when none exist, the local Meta-World datasets of another name


@dataclasses.dataclass
class Config:
    datasets: List[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_DATASETS))
    batch_size: int = num(256, lo=1)
    obs_horizon: int = num(2, lo=1)
    pred_horizon: int = num(16, lo=1)
    action_horizon: Optional[int] = num(8, lo=1)
    num_batches: int = num(2000, lo=1)  # timed batches
    warmup_batches: int = num(20, lo=0)
    num_workers: int = num(0, lo=0)  # DataLoader worker processes
    threads: int = num(1, lo=1)


def run(cfg: DictConfig) -> None:
    import torch

    from training.data_bench import bench_loader, resolve_ids
    from training.errors import DatasetError
    from training.runtime import resolve_device

    for key in ("batch_size", "num_batches", "threads"):
        if cfg[key] < 1:
            raise DatasetError(f"{key} must be >= 1, got {cfg[key]}")
    if cfg.warmup_batches < 0 or cfg.num_workers < 0:
        raise DatasetError("warmup_batches and num_workers must be >= 0")
    torch.set_num_threads(int(cfg.threads))
    ids = resolve_ids(list(cfg.datasets), fallback=list(cfg.datasets) == DEFAULT_DATASETS)
    device = resolve_device(cfg.device)
    log.info("timing %d batches of %d from %d dataset(s) on %s", cfg.num_batches, cfg.batch_size, len(ids), device)
    report = bench_loader(
        ids,
        batch_size=int(cfg.batch_size),
        obs_horizon=int(cfg.obs_horizon),
        pred_horizon=int(cfg.pred_horizon),
        action_horizon=None if cfg.action_horizon is None else int(cfg.action_horizon),
        num_batches=int(cfg.num_batches),
        warmup_batches=int(cfg.warmup_batches),
        num_workers=int(cfg.num_workers),
        device=device,
        seed=int(cfg.seed),
    )
    os.makedirs(cfg.run_dir, exist_ok=True)
    from policies.atomic import atomic_write_json

    path = os.path.join(cfg.run_dir, "data.json")
    atomic_write_json(path, report, newline=False)
    print(f"{report['samples_per_s']:,.0f} samples/s ({report['batches_per_s']:.0f} batches/s of {report['batch_size']}, "
          f"To={report['obs_horizon']} Tp={report['pred_horizon']}) from {len(ids)} dataset(s), "
          f"{report['windows']} windows, on {report['device']}; report: {path}")
