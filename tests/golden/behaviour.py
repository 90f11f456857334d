"""A fixed small run of collection, imitation training and evaluation whose numbers must not change.

`run(tmp)` collects planner demonstrations, trains a tiny DiT for a few steps and evaluates the teacher and the
trained policy on fixed seeds; tests/test_behaviour_unchanged.py compares the result with the figures this
script gave before the rollout engine and trainer were merged (tests/fixtures/golden_behaviour.json).
Only public entry points are used, so the same script runs against any version of the code.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def _digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def run(tmp: str | Path) -> dict:
    tmp = Path(tmp)
    os.environ["ALLOY_DATA_DIR"] = str(tmp / "data")
    import torch

    from policies import DiffusionConfig, NetConfig, SchemeConfig
    from training.collect import collect, select_targets
    from training.data import WindowDataset
    from training.datasets_io import read_episodes
    from training.evaluation import evaluate
    from training.policy_build import build_policy
    from training.trainer import Trainer, TrainerConfig

    out: dict = {}
    targets = select_targets("nav", embodiment="holonomic", name="golden")
    res = collect(targets, episodes=4, seed=3, workers=2, only_success=False, progress=False)
    arrays = read_episodes(targets[0].dataset_id)
    out["collect"] = {"lengths": arrays.lengths.tolist(), "attempts": res[0].attempts,
                      "successes": res[0].successes,
                      "obs": _digest([arrays.observations[k] for k in sorted(arrays.observations)]),
                      "actions": _digest([arrays.actions])}

    torch.manual_seed(0)
    ds = WindowDataset(targets[0].dataset_id, obs_horizon=2, pred_horizon=8)
    policy = build_policy(ds, NetConfig(name="dit", d_model=32, n_layers=2, pred_horizon=8, mlp_hidden=32,
                                        obs_keys=["state", "goal", "lidar"]),
                          DiffusionConfig(name="ddim", num_inference_steps=4), SchemeConfig(action_horizon=4))
    trainer = Trainer(policy, ds, TrainerConfig(max_steps=12, batch_size=16, lr=1e-3, warmup_steps=2, log_every=1,
                                                ckpt_every=0, progress=False),
                      tmp / "run", torch.device("cpu"), seed=5)
    trainer.fit()
    import csv

    with open(tmp / "run" / "train_log.csv") as f:
        out["losses"] = [float(r["loss"]) for r in csv.DictReader(f)]

    def outcomes(report_results):
        return [[r["index"], r["seed"], r["success"], r["reason"], r["length"], round(float(r["return"]), 5)]
                for r in report_results]

    rep = evaluate("teacher", "alloy/Nav-Diffdrive-v0", episodes=5, num_envs=3, seed=11, progress=False)
    out["eval_teacher"] = outcomes(sorted(rep["episode_records"], key=lambda r: r["index"]))
    torch.manual_seed(1)
    rep = evaluate(trainer.ema_policy, "alloy/Nav-Holonomic-v0", episodes=3, num_envs=2, seed=0, progress=False,
                   asynchronous=False)
    out["eval_policy"] = outcomes(sorted(rep["episode_records"], key=lambda r: r["index"]))
    return out


if __name__ == "__main__":
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(run(d), indent=1))
