"""Trainer pieces: periodic evaluation and best-checkpoint selection, EMA warmup, lr schedule, data order,
language table from multi-task datasets, logs and metrics."""

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces
from test_train_resume import DATASET, write_synthetic

from policies import DiffusionConfig, NetConfig, Policy, SchemeConfig
from training.batches import StepBatchSampler
from training.datasets_io import Episode, write_dataset
from training.ema import EMA
from training.lr import lr_at


@pytest.fixture()
def dataset(tmp_path, monkeypatch):
    from training.data import WindowDataset

    monkeypatch.setenv("ALLOY_DATA_DIR", str(tmp_path / "data"))
    write_synthetic()
    return WindowDataset(DATASET, obs_horizon=2, pred_horizon=8)


def small_policy(ds, net="dit", process="ddim"):
    from training.policy_build import build_policy

    return build_policy(ds, NetConfig(name=net, d_model=32, n_layers=2, pred_horizon=8, mlp_hidden=32),
                        DiffusionConfig(name=process, num_inference_steps=4), SchemeConfig(action_horizon=4))


def test_periodic_evaluation_keeps_the_best_checkpoint(tmp_path, dataset):
    from training.trainer import Trainer, TrainerConfig

    rates = iter([0.2, 0.6, 0.4])
    seen = []

    def evaluator(policy, step):
        seen.append((step, policy.training))
        return {"overall": {"success_rate": next(rates)}}

    trainer = Trainer(small_policy(dataset), dataset,
                      TrainerConfig(max_steps=6, batch_size=8, eval_every=2, ckpt_every=0, progress=False, log_every=2),
                      tmp_path / "run", torch.device("cpu"), evaluator=evaluator)
    metrics = trainer.fit()
    assert seen == [(2, False), (4, False), (6, False)]  # the EMA policy, in eval mode
    assert metrics["best"] == {"step": 4, "success_rate": 0.6}
    best = json.loads((tmp_path / "run/checkpoints/best/train_state.json").read_text())
    assert best["step"] == 4
    assert json.loads((tmp_path / "run/checkpoints/last/train_state.json").read_text())["step"] == 6
    Policy.from_pretrained(tmp_path / "run/checkpoints/best")
    saved = json.loads((tmp_path / "run/metrics.json").read_text())
    assert [e["success_rate"] for e in saved["evals"]] == [0.2, 0.6, 0.4] and saved["samples_per_s"] > 0
    rows = (tmp_path / "run/train_log.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,lr,grad_norm,diffusion") and len(rows) == 4
    assert any((tmp_path / "run/tb").iterdir())
    reports = sorted((tmp_path / "run/evals").glob("step_*.json"))  # every evaluation's full report is kept
    assert [json.loads(p.read_text())["overall"]["success_rate"] for p in reports] == [0.2, 0.6, 0.4]
    assert [p.name for p in reports][0] == "step_0000002.json"


def test_eval_every_zero_never_evaluates(tmp_path, dataset):
    from training.trainer import Trainer, TrainerConfig

    def evaluator(policy, step):
        raise AssertionError("evaluation must be disabled")

    Trainer(small_policy(dataset), dataset, TrainerConfig(max_steps=3, batch_size=8, eval_every=0, progress=False),
            tmp_path / "run", torch.device("cpu"), evaluator=evaluator).fit()
    assert not (tmp_path / "run/checkpoints/best").exists()


def test_ema_follows_the_diffusion_policy_warmup_form():
    ema = EMA(torch.nn.Linear(2, 2), power=0.75, inv_gamma=1.0, max_decay=0.9999)
    assert ema.decay(0) == 0.0 and ema.decay(1) == 0.0
    assert ema.decay(10) == pytest.approx(1 - (1 + 9) ** -0.75)
    assert ema.decay(10**9) == 0.9999
    src = torch.nn.Linear(2, 2)
    ema.update(src)  # decay 0: a copy
    assert torch.equal(ema.model.weight, src.weight)


def test_lr_warms_up_then_follows_a_cosine():
    assert lr_at(0, 1.0, 10, 110) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 110) == pytest.approx(1.0)
    assert lr_at(60, 1.0, 10, 110) == pytest.approx(0.5)
    assert lr_at(110, 1.0, 10, 110, min_lr=0.1) == pytest.approx(0.1)


def test_data_order_is_a_function_of_seed_and_step_and_ranks_split_it():
    full = StepBatchSampler(100, 8, 0, 40, seed=3)
    batches = list(full)
    assert [b.tolist() for b in StepBatchSampler(100, 8, 17, 40, seed=3)] == [b.tolist() for b in batches[17:]]
    epoch = np.concatenate(batches[:12])
    assert len(set(epoch.tolist())) == 96  # one epoch: no repeats
    r0, r1 = StepBatchSampler(100, 8, 0, 5, 3, rank=0, world_size=2), StepBatchSampler(100, 8, 0, 5, 3, rank=1, world_size=2)
    for a, b, whole in zip(r0, r1, batches):
        assert np.concatenate([a, b]).tolist() == whole.tolist()
    mixed = StepBatchSampler(30, 64, 0, 50, 0, weights=np.array([0.9, 0.1]), samples_per_dataset=np.array([10, 20]))
    share = np.mean(np.concatenate(list(mixed)) < 10)
    assert 0.85 < share < 0.95


def test_language_table_maps_each_task_to_its_instruction(tmp_path, monkeypatch):
    from envs import language
    from training.data import WindowDataset

    monkeypatch.setenv("ALLOY_DATA_DIR", str(tmp_path / "data"))
    rng = np.random.default_rng(0)
    vectors = {}
    for task, sentence in ((0, "open the drawer"), (2, "press the button")):
        vectors[task] = rng.standard_normal(384).astype(np.float32)
        language._write(language._cache_file(sentence, language.cache_dir()), vectors[task])
        T = 12
        obs = {"state": rng.standard_normal((T + 1, 3)).astype(np.float32),
               "task": np.tile(np.eye(3, dtype=np.float32)[task], (T + 1, 1))}
        ep = Episode(observations=obs, actions=rng.uniform(-1, 1, (T, 2)).astype(np.float32), rewards=np.zeros(T),
                     terminations=np.r_[np.zeros(T - 1, bool), True], truncations=np.zeros(T, bool))
        write_dataset(f"test/t{task}/x-v0", [ep], {"suite": "test", "instruction": sentence},
                      observation_space=spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (3,), np.float32),
                                                     "task": spaces.Box(0, 1, (3,), np.float32)}),
                      action_space=spaces.Box(-1, 1, (2,), np.float32))
    ds = WindowDataset(["test/t0/x-v0", "test/t2/x-v0"], obs_horizon=2, pred_horizon=8)
    policy = small_policy(ds, "mdt", "edm")
    assert policy.spec.lang_dim == 384 and policy.feature_keys == ["state"]
    np.testing.assert_array_equal(policy.lang_table[0].numpy(), vectors[0])
    np.testing.assert_array_equal(policy.lang_table[2].numpy(), vectors[2])
    assert not policy.lang_table[1].any()
    loss, parts = policy.compute_loss(ds.__getitems__(np.arange(16)))
    assert {"foresight", "contrastive"} <= set(parts) and torch.isfinite(loss)
