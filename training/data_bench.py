"""How fast the window loader fills training batches (samples per second), so training is never data-bound.

The timed loop is what a trainer does each step: draw a batch of indices from the sampler, gather the windows
(`__getitems__`: obs, actions, goal, future state, language) as torch tensors, and move them to the device.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence
from typing import Any

import torch

from training.data import WindowDataset
from training.datasets_io import list_datasets
from training.errors import DatasetError


def resolve_ids(patterns: Sequence[str]) -> list[str]:
    """Dataset ids from ids or glob patterns (`metaworld/*/expert-v0`); DatasetError listing what exists."""
    existing = list_datasets()
    ids: list[str] = []
    for pattern in patterns:
        matched = [d for d in existing if fnmatch.fnmatch(d, pattern)] if any(c in pattern for c in "*?[") else [pattern]
        if not matched:
            raise DatasetError(
                f"no dataset matches {pattern!r}; existing datasets: {', '.join(existing) or 'none (run alloy collect)'}"
            )
        ids += [m for m in matched if m not in ids]
    return ids


def bench_loader(
    dataset_ids: Sequence[str],
    batch_size: int = 256,
    obs_horizon: int = 2,
    pred_horizon: int = 16,
    action_horizon: int | None = 8,
    num_batches: int = 500,
    warmup_batches: int = 20,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    weights: Sequence[float] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time `num_batches` batches through the DataLoader into `device`; returns the figure and its setup."""
    t0 = time.perf_counter()
    ds = WindowDataset(dataset_ids, obs_horizon, pred_horizon, weights=weights, action_horizon=action_horizon)
    build_s = time.perf_counter() - t0
    device = torch.device(device)
    loader = ds.loader(batch_size, num_batches=num_batches + warmup_batches, seed=seed, num_workers=num_workers,
                       pin_memory=device.type == "cuda")

    def to_device(batch):
        return {
            k: ({kk: vv.to(device, non_blocking=True) for kk, vv in v.items()} if isinstance(v, dict)
                else v.to(device, non_blocking=True))
            for k, v in batch.items()
        }

    it = iter(loader)
    for _ in range(warmup_batches):
        to_device(next(it))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    samples = 0
    for batch in it:
        batch = to_device(batch)
        samples += int(batch["action"].shape[0])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    return {
        "samples_per_s": samples / elapsed,
        "batches_per_s": num_batches / elapsed,
        "samples": samples,
        "seconds": elapsed,
        "batch_size": batch_size,
        "obs_horizon": obs_horizon,
        "pred_horizon": pred_horizon,
        "action_horizon": action_horizon,
        "num_workers": num_workers,
        "device": str(device),
        "datasets": list(dataset_ids),
        "windows": len(ds),
        "obs_shapes": {k: list(v) for k, v in ds.obs_shapes.items()},
        "action_dim": ds.action_dim,
        "build_seconds": build_s,
        "torch_threads": torch.get_num_threads(),
    }
