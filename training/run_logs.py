"""The run's scalar logs: one CSV file and TensorBoard event files, both safe to resume."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)


class RunLogs:
    """CSV + TensorBoard scalars; on resume, CSV rows past the checkpoint step are dropped (they are redone).

    `prefix` names the TensorBoard tag group of rows without one (`train/<key>`); keys that already hold a `/`
    (`eval/success_rate`, SB3's `rollout/ep_rew_mean`) keep their own."""

    def __init__(self, run_dir: Path, start_step: int, csv_name: str = "train_log.csv", prefix: str = "train"):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = run_dir / csv_name
        self.prefix = prefix
        self.rows: list[dict] = []
        if start_step and self.csv_path.exists():
            with open(self.csv_path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= start_step]
        self.fields: list[str] | None = list(self.rows[0]) if self.rows else None
        self._rewrite()
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step or None)
        except ImportError:  # tensorboard is a dependency; keep training if it is broken
            log.warning("tensorboard is unavailable; logging to CSV only")

    def _rewrite(self) -> None:
        if self.fields is None:
            return
        with open(self.csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)

    def write(self, row: dict) -> None:
        """Append one row; a key not seen before adds a column (the file is rewritten with it)."""
        self.rows.append(row)
        new = [k for k in row if k != "step" and k not in (self.fields or [])]
        if self.fields is None or new:
            self.fields = (self.fields or ["step"]) + new
            self._rewrite()
        else:
            with open(self.csv_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k if "/" in k else f"{self.prefix}/{k}", v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
