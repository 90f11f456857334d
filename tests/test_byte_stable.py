"""Files written for others to hash are byte-identical for identical content, whatever the process: a seeded policy,
a training checkpoint, the JSON / npz helpers and a dataset's cached statistics, each written by two interpreters
with different hash seeds (the dataset's files with different modification times)."""

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from policies.atomic import npz_bytes, write_safetensors

TESTS = Path(__file__).resolve().parent

WRITE_ALL = """
import random, sys
import numpy as np, torch
sys.path.insert(0, {tests!r})
from test_policy_checkpoint import fitted_policy
from policies.atomic import atomic_write_json, atomic_write_npz
from training.checkpoint import save_checkpoint

out = {out!r}
random.seed(0); np.random.seed(0)
policy = fitted_policy("mdt")
policy.save_pretrained(out + "/policy")
opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
policy.zero_grad(); sum(p.sum() for p in policy.parameters()).backward(); opt.step()
torch.manual_seed(3)
save_checkpoint(out + "/checkpoints/last", policy, policy, opt, {{"step": 7, "ema_updates": 7, "elapsed_s": 1.5}},
                {{"step": 7, "loss": 0.25}}, {{"trainer": {{"lr": 0.001, "max_steps": 10}}, "seed": 0}})
atomic_write_json(out + "/manifest.json", {{"b": 1, "a": {{"z": [1, 2], "y": "x"}}}})
atomic_write_npz(out + "/alloy_stats.npz", {{"state/min": np.arange(3.0), "state/count": np.asarray(4, np.int64)}})

# the statistics training caches beside a dataset, of the same data files with another modification time (as a copy
# of the dataset made elsewhere has)
import os, shutil
from training.data import STATS_FILE, dataset_stats
from training.datasets_io import dataset_dir
folder = dataset_dir({dataset!r})
(folder / STATS_FILE).unlink(missing_ok=True)
for f in (folder / "data").glob("*"):
    os.utime(f, ns=({mtime_ns}, {mtime_ns}))
dataset_stats({dataset!r})
shutil.copy(folder / STATS_FILE, out + "/dataset_stats.npz")
"""
DATASET = "test/stable/teacher-v0"


def write_everything(out: Path, hash_seed: str, data: Path, mtime_ns: int) -> dict[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1", "ALLOY_DATA_DIR": str(data)}
    code = WRITE_ALL.format(tests=str(TESTS), out=str(out), dataset=DATASET, mtime_ns=mtime_ns)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def test_same_content_same_bytes_in_two_processes(tmp_path, monkeypatch):
    from test_train_resume import write_synthetic

    monkeypatch.setenv("ALLOY_DATA_DIR", str(tmp_path / "data"))
    write_synthetic(DATASET, episodes=2, T=8)
    a = write_everything(tmp_path / "a", "0", tmp_path / "data", 1_600_000_000 * 10**9)
    b = write_everything(tmp_path / "b", "12345", tmp_path / "data", 1_700_000_000 * 10**9)
    expected = {"policy/config.yaml", "policy/model.safetensors", "checkpoints/last/config.yaml",
                "checkpoints/last/model.safetensors", "checkpoints/last/train_state.safetensors",
                "checkpoints/last/train_state.json", "checkpoints/last/metrics.json", "manifest.json",
                "alloy_stats.npz", "dataset_stats.npz"}
    assert set(a) == expected
    assert {k for k in a if a[k] != b[k]} == set()


def _header(path: Path) -> dict:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n])


def test_safetensors_metadata_is_sorted_and_round_trips(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = {"b": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a": torch.ones(2, dtype=torch.int64),
               "c": torch.zeros(3, dtype=torch.bfloat16)}
    meta = {"version": "1", "format": "alloy-policy", "net": "mdt", "spec": '{"x": "\u00e9"}'}
    write_safetensors(tmp_path / "m.safetensors", tensors, meta)
    header = _header(tmp_path / "m.safetensors")
    assert list(header["__metadata__"]) == sorted(meta)
    assert struct.unpack("<Q", (tmp_path / "m.safetensors").read_bytes()[:8])[0] % 8 == 0  # data stays aligned
    loaded = load_file(str(tmp_path / "m.safetensors"))
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        assert f.metadata() == meta
    again = tmp_path / "again.safetensors"
    write_safetensors(again, tensors, dict(reversed(list(meta.items()))))
    assert again.read_bytes() == (tmp_path / "m.safetensors").read_bytes()


def test_policy_weights_header_is_sorted(tmp_path):
    from test_policy_checkpoint import fitted_policy

    fitted_policy("dit").save_pretrained(tmp_path / "p")
    assert list(_header(tmp_path / "p/model.safetensors")["__metadata__"]) == ["format", "net", "spec", "version"]


def test_npz_has_fixed_dates_and_loads_back():
    arrays = {"state/min": np.arange(4.0), "action/count": np.asarray(9, np.int64)}
    data = npz_bytes(arrays)
    assert {i.date_time for i in zipfile.ZipFile(io.BytesIO(data)).infolist()} == {(1980, 1, 1, 0, 0, 0)}
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        assert f.files == list(arrays)
        assert all(np.array_equal(f[k], v) and f[k].dtype == v.dtype for k, v in arrays.items())
    assert npz_bytes(arrays) == data
