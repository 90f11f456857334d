"""`alloy train` end to end on a tiny synthetic dataset: SIGKILL + resume equals an uninterrupted run, NaN stops
cleanly with the last good checkpoint kept, and mismatched inputs give one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

from training.datasets_io import Episode, write_dataset

REPO = Path(__file__).resolve().parents[1]
DATASET = "test/synthetic/teacher-v0"


def write_synthetic(dataset_id: str = DATASET, episodes: int = 6, T: int = 30, seed: int = 0) -> None:
    """A point that a smooth feedback law drives home; small enough to train in a second."""
    rng = np.random.default_rng(seed)
    eps = []
    for e in range(episodes):
        x = np.zeros((T + 1, 3), np.float32)
        x[0, :2] = rng.uniform(-1, 1, 2)
        acts = np.zeros((T, 2), np.float32)
        for t in range(T):
            acts[t] = np.tanh(-x[t, :2] + 0.3 * np.sin(t / 5))
            x[t + 1, :2] = x[t, :2] + 0.1 * acts[t]
            x[t + 1, 2] = (t + 1) / T
        eps.append(Episode(observations={"state": x}, actions=acts, rewards=np.zeros(T),
                           terminations=np.r_[np.zeros(T - 1, bool), True], truncations=np.zeros(T, bool), seed=e,
                           success=True))
    write_dataset(dataset_id, eps, {"suite": "test"},
                  observation_space=spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (3,), np.float32)}),
                  action_space=spaces.Box(-1, 1, (2,), np.float32))


@pytest.fixture()
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_DATA_DIR", str(tmp_path / "data"))
    write_synthetic()
    return tmp_path / "data"


SMALL = ["policy=dit", "policy.d_model=32", "policy.n_layers=2", "policy.pred_horizon=8", "policy.dropout=0.1",
         "scheme.action_horizon=4", "diffusion=ddpm", "trainer.batch_size=16", "trainer.lr=1e-3",
         "trainer.warmup_steps=10", "trainer.progress=false", "device=cpu", f"dataset={DATASET}"]


def alloy(args, run_dir, data_dir, popen=False):
    env = {**os.environ, "ALLOY_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "alloy.cli", "train", *args, f"hydra.run.dir={run_dir}"]
    if popen:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def final_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    last = run_dir / "checkpoints/last"
    out = {f"ema.{k}": v for k, v in load_file(str(last / "model.safetensors")).items()}
    out.update({k: v for k, v in load_file(str(last / "train_state.safetensors")).items() if not k.startswith("rng.")})
    return out


def checkpoint_step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "checkpoints/last/train_state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def test_resume_after_sigkill_ends_bit_identical(tmp_path, data_dir):
    steps = 150
    args = SMALL + [f"trainer.max_steps={steps}", "trainer.ckpt_every=10", "trainer.log_every=10"]
    whole = alloy(args, tmp_path / "whole", data_dir)
    assert whole.returncode == 0, whole.stderr[-2000:]

    proc = alloy(args, tmp_path / "killed", data_dir, popen=True)
    deadline = time.time() + 120
    while checkpoint_step(tmp_path / "killed") < 20 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint_step(tmp_path / "killed")
    assert 20 <= killed_at < steps, f"the run was not killed mid-way (checkpoint step {killed_at})"

    resumed = alloy(args + ["resume=true"], tmp_path / "killed", data_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {killed_at}" in resumed.stderr or f"at step {killed_at}" in (tmp_path / "killed/train.log").read_text()

    a, b = final_tensors(tmp_path / "whole"), final_tensors(tmp_path / "killed")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    # the log of the resumed run has each step once
    rows = (tmp_path / "killed/train_log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(10, steps + 1, 10))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
    from policies import DiffusionConfig, NetConfig, SchemeConfig
    from training.data import WindowDataset
    from training.errors import TrainingError
    from training.policy_build import build_policy
    from training.trainer import Trainer, TrainerConfig

    ds = WindowDataset(DATASET, obs_horizon=2, pred_horizon=8)
    policy = build_policy(ds, NetConfig(name="mlp", pred_horizon=8, mlp_hidden=32), DiffusionConfig(name="regression"),
                          SchemeConfig(action_horizon=4))
    real = policy.compute_loss

    def nan_at_step_7(batch, rs=None):
        loss, parts = real(batch, rs)
        return (loss * float("nan"), parts) if trainer.step == 7 else (loss, parts)

    policy.forward = nan_at_step_7
    trainer = Trainer(policy, ds, TrainerConfig(max_steps=20, batch_size=8, ckpt_every=5, progress=False),
                      tmp_path / "run", torch.device("cpu"))
    with pytest.raises(TrainingError, match="loss is nan at step 7; training stopped and the last good checkpoint is kept"):
        trainer.fit()
    assert checkpoint_step(tmp_path / "run") == 5
    from policies import Policy

    kept = Policy.from_pretrained(tmp_path / "run/checkpoints/last")
    assert all(torch.isfinite(v).all() for v in kept.state_dict().values() if v.is_floating_point())


def test_cli_errors_are_one_line(tmp_path, data_dir):
    bad_key = alloy(SMALL + ["trainer.max_steps=2", "policy.obs_keys=[lidar]"], tmp_path / "a", data_dir)
    assert bad_key.returncode == 2
    assert "error: policy.obs_keys names 'lidar' but the dataset has only state (3,)" in bad_key.stderr
    missing = alloy(SMALL[:-1] + ["trainer.max_steps=2", "dataset=test/nothing-v0"], tmp_path / "b", data_dir)
    assert missing.returncode == 2 and "error: dataset 'test/nothing-v0' not found" in missing.stderr
    no_run = alloy(SMALL + ["trainer.max_steps=2", "resume=true"], tmp_path / "c", data_dir)
    assert no_run.returncode == 0, no_run.stderr[-2000:]  # nothing to resume: a fresh run, and it says so
    assert "nothing to resume" in (tmp_path / "c/train.log").read_text() and checkpoint_step(tmp_path / "c") == 2
