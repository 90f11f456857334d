"""`alloy bench env`: control steps per second of each navigation robot and the raw mj_step rate."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import List

from omegaconf import DictConfig

from policies.config_fields import num

HELP = "measure nav env control steps/s per embodiment and the raw mj_step rate of the same model (one process)"

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Config:
    steps: int = num(2000, lo=1)  # control steps timed per embodiment
    embodiments: List[str] = dataclasses.field(
        default_factory=lambda: ["holonomic", "diffdrive", "ackermann", "skidsteer"]
    )


def run(cfg: DictConfig) -> None:
    from envs.errors import EnvError
    from envs.nav.bench import bench_envs, format_table
    from envs.nav.embodiments import get_spec

    if cfg.steps <= 0:
        raise EnvError(f"steps must be a positive integer, got {cfg.steps}; use e.g. steps=2000")
    names = list(cfg.embodiments)
    if not names:
        raise EnvError("embodiments is empty; name at least one, e.g. embodiments=[holonomic]")
    for name in names:
        get_spec(name)
    report = bench_envs(names, steps=int(cfg.steps), seed=int(cfg.seed),
                        progress=lambda name: log.info("benchmarked %s", name))
    os.makedirs(cfg.run_dir, exist_ok=True)
    from policies.atomic import atomic_write_json

    path = os.path.join(cfg.run_dir, "env.json")
    atomic_write_json(path, report, newline=False)
    print(format_table(report))
    print(f"report: {path}")
