"""How fast the window loader fills training batches (samples per second), so training is never data-bound.

The timed loop is what a trainer does each step: draw a batch of indices from the sampler, gather the windows
(`__getitems__`: obs, actions, goal, future state, language) as torch tensors, and move them to the device.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Sequence
from typing import Any

import torch

from training.data import WindowDataset
from training.datasets_io import list_datasets
from training.errors import DatasetError

log = logging.getLogger(__name__)


def resolve_ids(patterns: Sequence[str], fallback: bool = False) -> list[str]:
    """Dataset ids from ids or glob patterns (`metaworld/*/expert-v0`); DatasetError saying which pattern to pass.

    With `fallback` (the command's default pattern), a glob that matches nothing is replaced by the local datasets of
    the same kind under another name (`metaworld/*/expert10-v0` after a collect with name=expert10), with a warning.
    """
    existing = list_datasets()
    ids: list[str] = []
    for pattern in patterns:
        matched = [d for d in existing if fnmatch.fnmatch(d, pattern)] if any(c in pattern for c in "*?[") else [pattern]
        alternatives = similar_patterns(pattern, existing) if not matched else []
        if alternatives and fallback:
            log.warning("no dataset matches %r; timing %s instead (pass datasets=[...] to choose)", pattern,
                        alternatives[0][0])
            matched = [d for d in existing if fnmatch.fnmatch(d, alternatives[0][0])]
        if not matched:
            raise DatasetError(_no_match_message(pattern, existing, alternatives))
        ids += [m for m in matched if m not in ids]
    return ids


def similar_patterns(pattern: str, existing: Sequence[str]) -> list[tuple[str, int]]:
    """Globs `<first>/*/<name>` of local datasets with the pattern's first part (e.g. `metaworld`) and any name,
    each with how many datasets it matches, most first."""
    first = pattern.split("/", 1)[0]
    counts: dict[str, int] = {}
    for d in existing:
        parts = d.split("/")
        if len(parts) >= 3 and parts[0] == first:
            glob = f"{first}/*/{parts[-1]}"
            counts[glob] = counts.get(glob, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _no_match_message(pattern: str, existing: Sequence[str], alternatives: list[tuple[str, int]]) -> str:
    if alternatives:
        found = ", ".join(f"{g} ({n} datasets)" for g, n in alternatives[:5])
        return f"no dataset matches {pattern!r}; the local ones of that kind: {found}; pass datasets=[{alternatives[0][0]}]"
    if existing:
        return f"no dataset matches {pattern!r}; existing datasets: {', '.join(existing)}; pass datasets=[<id or glob>]"
    return (f"no dataset matches {pattern!r} and no dataset exists yet; collect some first, e.g. alloy collect "
            f"suite=metaworld_mt50 episodes_per_task=10")


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
