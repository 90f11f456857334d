"""Bad datasets end in one-line DatasetErrors: missing ids, corrupt files, mismatching spaces, bad arguments."""

import json

import numpy as np
import pytest
from gymnasium import spaces

from training.data import WindowDataset, compute_stats, list_datasets
from training.datasets_io import Episode, dataset_dir, open_dataset, write_dataset
from training.errors import DatasetError


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_DATA_DIR", str(tmp_path / "data"))


def _write(dataset_id, state_dim=3, action_dim=2, lengths=(4, 6), overwrite=False, scale=1.0):
    eps = []
    for T in lengths:
        eps.append(
            Episode(
                observations={"state": scale * np.arange((T + 1) * state_dim, dtype=np.float32).reshape(T + 1, state_dim)},
                actions=np.zeros((T, action_dim), np.float32),
                rewards=np.zeros(T),
                terminations=np.r_[np.zeros(T - 1, bool), True],
                truncations=np.zeros(T, bool),
            )
        )
    write_dataset(
        dataset_id,
        eps,
        {"suite": "test"},
        observation_space=spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)}),
        action_space=spaces.Box(-1, 1, (action_dim,), np.float32),
        overwrite=overwrite,
    )


def _one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message
    return message


def test_missing_dataset_lists_existing_ones():
    with pytest.raises(DatasetError) as e:
        WindowDataset("metaworld/reach-v3/expert-v0")
    assert "alloy collect" in _one_line(e)
    _write("test/a/x-v0")
    _write("test/b/x-v0")
    assert list_datasets() == ["test/a/x-v0", "test/b/x-v0"]
    with pytest.raises(DatasetError) as e:
        WindowDataset(["test/a/x-v0", "test/c/x-v0"])
    message = _one_line(e)
    assert "'test/c/x-v0' not found" in message and "test/a/x-v0, test/b/x-v0" in message


def test_truncated_data_file_is_a_clear_error():
    _write("test/a/x-v0", lengths=(50, 60, 70))
    data_file = next((dataset_dir("test/a/x-v0") / "data").glob("*.hdf5"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 3])
    with pytest.raises(DatasetError) as e:
        WindowDataset("test/a/x-v0")
    message = _one_line(e)
    assert "corrupt or truncated" in message and "collect it again" in message


def test_corrupt_metadata_is_a_clear_error():
    _write("test/a/x-v0")
    (dataset_dir("test/a/x-v0") / "data" / "metadata.json").write_text("{not json")
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        open_dataset("test/a/x-v0")


def test_mismatch_with_env_names_key_and_shapes():
    from envs.metaworld import make_metaworld_env

    _write("test/a/x-v0", state_dim=3)
    ds = WindowDataset("test/a/x-v0", obs_horizon=2, pred_horizon=4)
    env = make_metaworld_env("reach-v3")
    with pytest.raises(DatasetError) as e:
        ds.check_env(env.observation_space, env.action_space, "metaworld/reach-v3")
    message = _one_line(e)
    assert "'state'" in message and "(3,)" in message and "(39,)" in message and "metaworld/reach-v3" in message


def test_mismatch_with_policy_names_key_and_shapes():
    _write("test/a/x-v0", state_dim=3, action_dim=2)
    ds = WindowDataset("test/a/x-v0", obs_horizon=2, pred_horizon=4)
    ds.check_policy({"state": (3,)}, 2)  # fits
    with pytest.raises(DatasetError) as e:
        ds.check_policy({"state": (2, 5)}, 2)
    assert "'state'" in _one_line(e) and "(3,)" in str(e.value) and "(5,)" in str(e.value)
    with pytest.raises(DatasetError) as e:
        ds.check_policy({"state": (3,), "lidar": (16,)}, 2)
    assert "'lidar'" in _one_line(e)
    with pytest.raises(DatasetError) as e:
        ds.check_policy({"state": (3,)}, 4)
    assert "action" in _one_line(e) and "(2,)" in str(e.value) and "(4,)" in str(e.value)


def test_mixing_datasets_of_different_spaces_is_refused():
    _write("test/a/x-v0", state_dim=3)
    _write("test/b/x-v0", state_dim=5)
    with pytest.raises(DatasetError) as e:
        WindowDataset(["test/a/x-v0", "test/b/x-v0"])
    assert "'state'" in _one_line(e) and "(5,)" in str(e.value) and "(3,)" in str(e.value)


def test_bad_arguments():
    _write("test/a/x-v0")
    with pytest.raises(DatasetError, match="weights"):
        WindowDataset("test/a/x-v0", weights=[1.0, 2.0])
    with pytest.raises(DatasetError, match="action_horizon"):
        WindowDataset("test/a/x-v0", obs_horizon=2, pred_horizon=4, action_horizon=4)
    with pytest.raises(DatasetError, match="no window fits"):
        WindowDataset("test/a/x-v0", obs_horizon=2, pred_horizon=16, action_horizon=1)
    with pytest.raises(DatasetError, match="overwrite=true"):
        _write("test/a/x-v0")


def test_rewritten_dataset_gets_fresh_statistics():
    _write("test/a/x-v0")
    before = compute_stats("test/a/x-v0")["state"]["max"]
    _write("test/a/x-v0", overwrite=True, scale=2.0)
    after = compute_stats("test/a/x-v0")["state"]["max"]
    np.testing.assert_array_equal(after, 2.0 * before)


def test_alloy_metadata_is_stored_in_minari_metadata():
    _write("test/a/x-v0")
    meta = open_dataset("test/a/x-v0").storage.metadata
    assert meta["alloy"] == {"suite": "test"}
    assert json.loads(json.dumps(meta["alloy"])) == meta["alloy"]


def test_nan_in_the_data_names_the_dataset_key_and_episodes_and_says_to_recollect(tmp_path, capsys):
    """Was: "normaliser statistic 'state.min' contains NaN or inf; recompute the dataset statistics", which cannot
    fix data that holds NaN."""
    from alloy import cli

    _write("test/nan/x-v0", lengths=(4, 5, 6))
    eps = []
    for i, T in enumerate((4, 5, 6)):
        state = np.arange((T + 1) * 3, dtype=np.float32).reshape(T + 1, 3)
        if i == 1:
            state[2, 1] = np.nan
        eps.append(Episode(observations={"state": state}, actions=np.zeros((T, 2), np.float32), rewards=np.zeros(T),
                           terminations=np.r_[np.zeros(T - 1, bool), True], truncations=np.zeros(T, bool)))
    compute_stats("test/nan/x-v0")  # statistics cached from the clean data, then the data is replaced
    write_dataset("test/nan/x-v0", eps, {"suite": "test"}, overwrite=True,
                  observation_space=spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (3,), np.float32)}),
                  action_space=spaces.Box(-1, 1, (2,), np.float32))
    with pytest.raises(DatasetError) as e:
        WindowDataset("test/nan/x-v0", obs_horizon=2, pred_horizon=2)
    message = _one_line(e)
    assert "'test/nan/x-v0'" in message and "'state'" in message and "episode(s) 1 of 3" in message
    assert "re-collect" in message and "recompute" not in message
    code = cli.main(["train", "dataset=test/nan/x-v0", "policy=mlp", "policy.pred_horizon=2",
                     "scheme.action_horizon=1", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0] == f"error: {message}"


def test_normaliser_statistics_with_nan_do_not_advise_recomputing():
    from policies.errors import PolicyError
    from policies.normalizer import Normalizer

    with pytest.raises(PolicyError) as e:
        Normalizer({"state": 2}).fit({"state": {"min": [0.0, np.nan], "max": [1.0, 1.0]},
                                      "action": {"min": [0.0], "max": [1.0]}})
    assert "recompute" not in str(e.value) and "re-collect" in str(e.value)
