"""Training checkpoints as directories, written atomically and read back without unpickling anything.

    <run_dir>/checkpoints/{last,best}/
        config.yaml            policy spec + the resolved training config (loadable by Policy.from_pretrained)
        model.safetensors      EMA weights, normaliser, language table (what evaluation and export use)
        train_state.safetensors raw weights, optimizer moments, RNG states (tensors only)
        train_state.json       step, EMA counter, optimizer hyper-parameters, NumPy/Python RNG state, timings
        metrics.json           the run's figures at this step

Every tensor goes to safetensors and every other value to JSON, so a foreign or damaged file is an error, never
code execution. The same state gives the same bytes in any process (sorted safetensors metadata, JSON in insertion
order). A write killed part-way is repaired by `policies.atomic.recover_dir`, which `load_train_state` and
`Policy.from_pretrained` apply before reading.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies.atomic import atomic_dir, recover_dir, write_safetensors
from training.errors import TrainingError

STATE_TENSORS = "train_state.safetensors"
STATE_JSON = "train_state.json"
METRICS = "metrics.json"
FORMAT = "alloy-train-state"


# ---------------------------------------------------------------------------------------------------- RNG
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {"numpy": [name, int(pos), int(has_gauss), float(cached)],
            "python": [version, list(internal), gauss_next]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng.numpy.keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


# ---------------------------------------------------------------------------------------------------- optimizer
def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, plain = {}, {}
    for pid, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                plain[f"{pid}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "plain": plain}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["plain"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


# ---------------------------------------------------------------------------------------------------- directories
def save_checkpoint(path: str | Path, ema_policy, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], metrics: dict[str, Any], config: dict[str, Any] | None,
                    extra_tensors: dict[str, torch.Tensor] | None = None,
                    sections: dict[str, Any] | None = None) -> Path:
    """Write one checkpoint directory atomically (rank 0 only). `extra_tensors` join the training state (an
    objective's own networks); `sections` are added to config.yaml (e.g. how a distilled student samples)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = optimizer_state(optimizer)
    rng_tensors, rng_meta = rng_state()
    tensors.update(opt_tensors)
    tensors.update(rng_tensors)
    tensors.update(extra_tensors or {})
    meta = {"format": FORMAT, **state, "optimizer": opt_meta, "rng": rng_meta}
    with atomic_dir(path) as tmp:
        ema_policy.write_files(tmp, {**(sections or {}), **({"train": config} if config else {})} or None)
        write_safetensors(tmp / STATE_TENSORS, tensors, metadata={"format": FORMAT})
        (tmp / STATE_JSON).write_bytes(json.dumps(meta).encode("utf-8"))
        (tmp / METRICS).write_bytes(json.dumps(metrics, indent=2, default=float).encode("utf-8"))
    return Path(path)


def existing_checkpoints(ckpt_dir: str | Path) -> list[str]:
    """The checkpoints (`last`, `best`) a run's `checkpoints/` holds, after the recovery rule (a write killed
    between its two renames still counts: its `.last.old` is renamed back)."""
    return [name for name in ("last", "best") if recover_dir(Path(ckpt_dir) / name).is_dir()]


def load_train_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and JSON of a checkpoint's training state; TrainingError when missing or unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = recover_dir(path)  # completes a crashed write's rollback, clears dead writers' temp dirs
    tfile, jfile = root / STATE_TENSORS, root / STATE_JSON
    if not tfile.is_file() or not jfile.is_file():
        raise TrainingError(f"no training state in {path} (needs {STATE_TENSORS} and {STATE_JSON}); resume from a "
                            f"run's checkpoints/last written by alloy train")
    try:
        meta = json.loads(jfile.read_text())
        tensors = load_file(str(tfile))
    except (SafetensorError, OSError, ValueError) as e:
        raise TrainingError(f"training state in {path} is unreadable ({type(e).__name__}: {str(e).splitlines()[0]}); "
                            f"the checkpoint is corrupt, start a fresh run") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TrainingError(f"{jfile} is not an alloy training state; resume only runs written by alloy train")
    return tensors, meta


def model_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
