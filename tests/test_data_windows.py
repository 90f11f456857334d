"""WindowDataset against hand-built episodes: Diffusion Policy padding, goals, mixing, statistics."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from training.data import WindowDataset, compute_stats
from training.datasets_io import Episode, dataset_dir, write_dataset

D_STATE = 3


def _episode(e: int, T: int) -> Episode:
    """Values encode (episode, step), so every gathered row says where it came from."""
    t = np.arange(T + 1, dtype=np.float32)
    state = np.stack([e * 1000 + t, -t, np.full_like(t, e)], axis=1)
    other = np.stack([t * 2.0], axis=1)
    ta = np.arange(T, dtype=np.float32)
    actions = np.stack([e * 1000 + ta + 0.5, ta * 0.25], axis=1)
    return Episode(
        observations={"state": state, "other": other},
        actions=actions,
        rewards=np.zeros(T),
        terminations=np.r_[np.zeros(T - 1, bool), True],
        truncations=np.zeros(T, bool),
        seed=e,
        success=True,
    )


def _write(dataset_id: str, lengths: list[int], first: int = 0, instruction: str | None = None) -> list[Episode]:
    episodes = [_episode(first + i, T) for i, T in enumerate(lengths)]
    obs_space = spaces.Dict(
        {
            "state": spaces.Box(-np.inf, np.inf, (D_STATE,), np.float32),
            "other": spaces.Box(-np.inf, np.inf, (1,), np.float32),
        }
    )
    meta = {"suite": "test", "instruction": instruction} if instruction else {"suite": "test"}
    write_dataset(
        dataset_id,
        episodes,
        meta,
        observation_space=obs_space,
        action_space=spaces.Box(-1, 1, (2,), np.float32),
    )
    return episodes


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_DATA_DIR", str(tmp_path / "data"))


def _reference_windows(episodes, To, Tp, Ta=None):
    """Diffusion Policy's sampler, written out per sample: start positions from -(To-1) to T-Tp+pad_after, rows
    before the episode repeat the first row, rows after it repeat the last row."""
    pad_after = (Ta - 1) if Ta is not None else Tp - To
    out = []
    for ep in episodes:
        T = len(ep.actions)
        obs = {k: v[:T] for k, v in ep.observations.items()}  # observations aligned with actions
        for start in range(-(To - 1), T - Tp + pad_after + 1):
            rows = [min(max(start + i, 0), T - 1) for i in range(Tp)]
            t = start + To - 1
            out.append(
                {
                    "obs": {k: v[rows[:To]] for k, v in obs.items()},
                    "action": ep.actions[rows],
                    "goal": ep.observations["state"][T],
                    "t": t,
                }
            )
    return out


@pytest.mark.parametrize("To,Tp,Ta", [(2, 4, None), (2, 6, 3), (1, 3, None), (3, 5, 1)])
def test_windows_match_diffusion_policy_padding(To, Tp, Ta):
    episodes = _write("test/a/x-v0", [5, 1, 7, 2])
    ds = WindowDataset("test/a/x-v0", obs_horizon=To, pred_horizon=Tp, action_horizon=Ta, future_steps=3)
    ref = _reference_windows(episodes, To, Tp, Ta)
    assert len(ds) == len(ref)
    batch = ds.gather(np.arange(len(ds)))
    for i, r in enumerate(ref):
        for k in ("state", "other"):
            np.testing.assert_array_equal(batch["obs"][k][i], r["obs"][k])
        np.testing.assert_array_equal(batch["action"][i], r["action"])
        np.testing.assert_array_equal(batch["goal"][i], r["goal"])
        e = int(r["goal"][2])
        T = len(episodes[e].actions)
        np.testing.assert_array_equal(batch["future_state"][i], episodes[e].observations["state"][min(r["t"] + 3, T)])


def test_episode_start_and_end_by_hand():
    _write("test/a/x-v0", [4])
    ds = WindowDataset("test/a/x-v0", obs_horizon=2, pred_horizon=4)
    first, last = ds[0], ds[len(ds) - 1]
    # At t=0 the first observation and the first action repeat before the start.
    assert first["obs"]["state"][:, 0].tolist() == [0.0, 0.0]
    assert first["action"][:, 0].tolist() == [0.5, 0.5, 1.5, 2.5]
    # At t=T-1 the last action repeats after the end; the goal is the final (T-th) state.
    assert last["obs"]["state"][:, 0].tolist() == [2.0, 3.0]
    assert last["action"][:, 0].tolist() == [2.5, 3.5, 3.5, 3.5]
    assert last["goal"][0].item() == 4.0
    assert first["dataset_index"].dtype == torch.int64 and first["lang"].shape == (384,)
    assert float(first["lang"].abs().sum()) == 0.0  # no instruction: zeros


def test_getitems_returns_collated_torch_batch_and_loader_iterates():
    _write("test/a/x-v0", [6, 9])
    ds = WindowDataset("test/a/x-v0", obs_horizon=2, pred_horizon=8)
    batch = ds.__getitems__([0, 3, 5])
    assert batch["obs"]["state"].shape == (3, 2, D_STATE) and batch["obs"]["state"].dtype == torch.float32
    assert batch["action"].shape == (3, 8, 2) and batch["goal"].shape == (3, D_STATE)
    assert batch["future_state"].shape == (3, D_STATE) and batch["lang"].shape == (3, 384)
    seen = []
    for b in ds.loader(batch_size=5, num_batches=3):  # one epoch = 15 samples, each exactly once
        assert b["action"].shape == (5, 8, 2)
        seen += (b["action"][:, 1, 0]).tolist()  # action at the current step identifies the sample
    assert len(set(seen)) == 15 == len(ds)


def test_mixing_weights_control_dataset_frequency():
    _write("test/a/x-v0", [20, 20])
    _write("test/b/x-v0", [10], first=50)
    ds = WindowDataset(["test/a/x-v0", "test/b/x-v0"], obs_horizon=2, pred_horizon=4, weights=[1.0, 3.0])
    assert ds.samples_per_dataset.tolist() == [40, 10]
    counts = np.zeros(2)
    for idx in ds.sampler(batch_size=256, num_batches=40, seed=1):
        b = ds.gather(idx)
        counts += np.bincount(b["dataset_index"], minlength=2)
        # dataset_index agrees with where the rows came from
        assert np.all((b["goal"][:, 2] >= 50) == (b["dataset_index"] == 1))
    assert abs(counts[1] / counts.sum() - 0.75) < 0.02


def test_stats_are_exact_cached_and_merge_across_datasets(monkeypatch):
    a = _write("test/a/x-v0", [5, 3])
    b = _write("test/b/x-v0", [4], first=7)
    stats = compute_stats(["test/a/x-v0", "test/b/x-v0"])
    assert (dataset_dir("test/a/x-v0") / "alloy_stats.npz").is_file()
    eps = a + b
    for key in ("state", "other"):
        rows = np.concatenate([e.observations[key] for e in eps]).astype(np.float64)
        np.testing.assert_allclose(stats[key]["mean"], rows.mean(0), rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(stats[key]["std"], rows.std(0), rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(stats[key]["min"], rows.min(0))
        np.testing.assert_array_equal(stats[key]["max"], rows.max(0))
    acts = np.concatenate([e.actions for e in eps]).astype(np.float64)
    np.testing.assert_array_equal(stats["action"]["max"], acts.max(0))

    import training.data as data

    def fail(*_):
        raise AssertionError("statistics were recomputed instead of read from disk")

    monkeypatch.setattr(data, "read_episodes", fail)
    again = compute_stats(["test/a/x-v0", "test/b/x-v0"])
    np.testing.assert_array_equal(again["state"]["mean"], stats["state"]["mean"])


@pytest.mark.parametrize("mode", ["limits", "gaussian"])
def test_normaliser_round_trip_from_dataset_stats(mode):
    normalizer = pytest.importorskip("policies.normalizer")
    _write("test/a/x-v0", [6, 4])
    ds = WindowDataset("test/a/x-v0", obs_horizon=2, pred_horizon=4)
    norm = normalizer.Normalizer({"state": D_STATE, "action": 2}, mode=mode).double()
    norm.fit(ds.stats)
    batch = ds.__getitems__(np.arange(len(ds)))
    for key, x in (("state", batch["obs"]["state"]), ("action", batch["action"])):
        x = x.double()
        y = norm.normalize(key, x)
        if mode == "limits":
            assert y.min() >= -1 - 1e-12 and y.max() <= 1 + 1e-12
        torch.testing.assert_close(norm.unnormalize(key, y), x, rtol=0, atol=1e-9)


def test_lang_comes_from_the_cached_instruction_embedding(tmp_path):
    from envs import language

    vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    language._write(language._cache_file("open the drawer", language.cache_dir()), vector)
    _write("test/a/x-v0", [3], instruction="open the drawer")
    ds = WindowDataset("test/a/x-v0", obs_horizon=2, pred_horizon=4)
    np.testing.assert_array_equal(ds[0]["lang"].numpy(), vector)
