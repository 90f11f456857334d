"""Collection in the navigation suite with the planner teacher: dataset id, embodiment metadata, windows."""

import minari
import numpy as np
import pytest

from training.collect import collect, select_targets
from training.data import WindowDataset
from training.datasets_io import data_root


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_DATA_DIR", str(tmp_path / "data"))


def test_planner_dataset_records_the_embodiment_and_feeds_windows():
    import envs

    targets = select_targets("nav", embodiment="holonomic", env_kwargs={"max_speed": 1.5})
    results = collect(targets, episodes=2, seed=1, workers=1, only_success=False, progress=False)
    assert results[0].dataset_id == "nav/holonomic/planner-v0" and results[0].attempts == 2

    data_root()
    ds = minari.load_dataset("nav/holonomic/planner-v0")
    meta = ds.storage.metadata["alloy"]
    assert meta["suite"] == "nav" and meta["env_id"] == "alloy/Nav-Holonomic-v0"
    assert meta["embodiment"] == "holonomic" and meta["env_kwargs"] == {"max_speed": 1.5}
    assert meta["embodiment_params"]["max_speed"] == 1.5 and "planner" in meta["teacher"]
    assert "instruction" not in meta

    windows = WindowDataset("nav/holonomic/planner-v0", obs_horizon=2, pred_horizon=8)
    env = envs.make_env("alloy/Nav-Holonomic-v0", max_speed=1.5)
    windows.check_env(env.observation_space, env.action_space, "alloy/Nav-Holonomic-v0")
    batch = windows.gather(np.arange(4))
    assert set(batch["obs"]) == {"state", "goal", "lidar", "embodiment"}
    assert batch["action"].shape == (4, 8, 3) and not batch["lang"].any()
    env.close()
