"""Collection: target selection, seeds, Minari datasets that replay, only_success, the CLI with workers."""

import json

import minari
import numpy as np
import pytest

from alloy import cli
from training.collect import collect, dataset_id_for, episode_seed, select_targets
from training.data import WindowDataset
from training.datasets_io import data_root
from training.errors import TrainingError


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_DATA_DIR", str(tmp_path / "data"))


def test_select_targets_and_dataset_ids():
    mt10 = select_targets("metaworld_mt10")
    assert len(mt10) == 10 and mt10[0].dataset_id == "metaworld/reach-v3/expert-v0"
    assert mt10[0].env_kwargs == {"terminate_on_success": True}
    picked = select_targets("metaworld_mt50", tasks=["soccer-v3"], name="demo")
    assert [t.dataset_id for t in picked] == ["metaworld/soccer-v3/demo-v0"]
    nav = select_targets("nav", embodiment="holonomic")
    assert [t.dataset_id for t in nav] == ["nav/holonomic/planner-v0"]
    assert dataset_id_for("alloy/Nav-Diffdrive-v0", "planner") == "nav/diffdrive/planner-v0"
    with pytest.raises(TrainingError, match="known tasks"):
        select_targets("metaworld_mt10", tasks=["reach-v2"])
    with pytest.raises(TrainingError, match="suite=nav"):
        select_targets("metaworld_mt10", embodiment="holonomic")
    with pytest.raises(TrainingError, match="known: holonomic"):
        select_targets("nav", embodiment="hovercraft")


def test_episode_seeds_depend_only_on_seed_env_and_episode():
    a = [episode_seed(0, "metaworld/reach-v3", e) for e in range(20)]
    assert len(set(a)) == 20 and all(0 <= s < 2**31 for s in a)
    assert a == [episode_seed(0, "metaworld/reach-v3", e) for e in range(20)]
    assert a != [episode_seed(1, "metaworld/reach-v3", e) for e in range(20)]
    assert a != [episode_seed(0, "metaworld/push-v3", e) for e in range(20)]


def test_collected_dataset_opens_in_minari_and_replays_from_its_seeds():
    targets = select_targets("metaworld_mt10", tasks=["drawer-close-v3", "reach-v3"])
    results = collect(targets, episodes=2, seed=3, workers=1, progress=False, embed_instructions=False)
    assert [r.attempts for r in results] == [2, 2] and all(r.success_rate == 1.0 for r in results)

    data_root()
    ds = minari.load_dataset("metaworld/drawer-close-v3/expert-v0")
    assert ds.total_episodes == 2
    meta = ds.storage.metadata["alloy"]
    assert meta["suite"] == "metaworld_mt10" and meta["env_id"] == "metaworld/drawer-close-v3"
    assert meta["env_kwargs"] == {"terminate_on_success": True}
    assert meta["instruction"] == "push the drawer closed" and meta["task_index"] == 17
    assert meta["seeds"] == [episode_seed(3, "metaworld/drawer-close-v3", e) for e in range(2)]
    assert "scripted expert" in meta["teacher"] and meta["alloy_version"]

    episode = next(iter(ds.iterate_episodes()))
    assert episode.terminations[-1] and not episode.terminations[:-1].any()  # ends at its success
    env = ds.recover_environment()
    obs, _ = env.reset(seed=meta["seeds"][0])
    np.testing.assert_array_equal(obs["state"], episode.observations["state"][0])
    for t in range(len(episode.actions)):
        action = env.unwrapped.teacher_action()
        np.testing.assert_array_equal(action, episode.actions[t])
        obs, *_ = env.step(action)
    np.testing.assert_array_equal(obs["state"], episode.observations["state"][-1])

    windows = WindowDataset(["metaworld/drawer-close-v3/expert-v0", "metaworld/reach-v3/expert-v0"], 2, 8)
    windows.check_env(env.observation_space, env.action_space, "metaworld/drawer-close-v3")
    assert windows.obs_shapes == {"state": (39,), "task": (50,)}


def test_only_success_drops_failures_and_reports_every_attempt():
    # Five steps are too few for the expert: every rollout fails.
    targets = select_targets("metaworld_mt10", tasks=["pick-place-v3"], env_kwargs={"max_episode_steps": 5})
    results = collect(targets, episodes=2, workers=1, only_success=True, max_attempts_factor=2, progress=False,
                      embed_instructions=False)
    assert results[0].attempts == 4 and results[0].successes == 0 and results[0].kept == 0
    assert "metaworld/pick-place-v3/expert-v0" not in minari.list_local_datasets()
    kept = collect(targets, episodes=2, workers=1, only_success=False, progress=False, embed_instructions=False)
    assert kept[0].kept == 2 and kept[0].success_rate == 0.0
    data_root()
    ds = minari.load_dataset("metaworld/pick-place-v3/expert-v0")
    assert ds.total_steps == 10 and ds.storage.metadata["alloy"]["env_kwargs"]["max_episode_steps"] == 5


def test_existing_dataset_needs_overwrite_before_any_rollout(monkeypatch):
    targets = select_targets("metaworld_mt10", tasks=["reach-v3"], env_kwargs={"max_episode_steps": 3})
    collect(targets, episodes=1, workers=1, only_success=False, progress=False, embed_instructions=False)
    import training.rollout as r

    monkeypatch.setattr(r, "RolloutEngine", lambda *a, **k: pytest.fail("rolled out before refusing to overwrite"))
    with pytest.raises(TrainingError, match="overwrite=true"):
        collect(targets, episodes=1, workers=1, progress=False, embed_instructions=False)


def test_saved_policy_teacher_that_cannot_load_is_a_clear_error(tmp_path):
    targets = select_targets("metaworld_mt10", tasks=["reach-v3"], teacher=str(tmp_path / "missing"))
    with pytest.raises(TrainingError, match="saved policy"):
        collect(targets, episodes=1, workers=1, teacher=str(tmp_path / "missing"), progress=False)
    empty = tmp_path / "empty_ckpt"
    empty.mkdir()
    with pytest.raises(TrainingError, match="cannot load|not a policy alloy can load"):
        collect(targets, episodes=1, workers=1, teacher=str(empty), progress=False)


def test_cli_collects_with_worker_processes(tmp_path):
    run_dir = tmp_path / "run"
    code = cli.main(["collect", "suite=metaworld_mt50", "tasks=[reach-v3,button-press-v3]", "episodes_per_task=2",
                     "workers=2", "progress=false", "embed_instructions=false", f"hydra.run.dir={run_dir}"])
    assert code in (0, None)
    report = json.loads((run_dir / "collect.json").read_text())
    assert report["suite"] == "metaworld_mt50" and report["episodes_per_env"] == 2
    assert [e["dataset_id"] for e in report["per_env"]] == ["metaworld/reach-v3/expert-v0",
                                                             "metaworld/button-press-v3/expert-v0"]
    assert all(e["attempts"] >= 2 and e["episodes_kept"] == 2 for e in report["per_env"])
    data_root()
    assert minari.load_dataset("metaworld/button-press-v3/expert-v0").total_episodes == 2


def test_cli_rejects_bad_values_before_writing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["collect", "episodes_per_task=0", f"hydra.run.dir={run_dir}"]) == 2
    assert "episodes_per_task" in capsys.readouterr().err
    assert cli.main(["collect", "suite=metaworld_mt11", f"hydra.run.dir={run_dir}"]) == 2
    assert "metaworld_mt50" in capsys.readouterr().err
    assert not run_dir.exists()


def test_saved_policy_teacher_rolls_out_through_from_pretrained(tmp_path):
    policies = pytest.importorskip("policies")
    build = pytest.importorskip("training.policy_build")
    from gymnasium import spaces

    from training.datasets_io import Episode, write_dataset

    # A tiny dataset in Meta-World's spaces (no instruction, so no encoder), a small policy saved from it.
    rng = np.random.default_rng(0)
    T = 12
    task = np.zeros((T + 1, 50), np.float32)
    task[:, 40] = 1.0
    write_dataset(
        "test/reach/x-v0",
        [Episode({"state": rng.standard_normal((T + 1, 39)).astype(np.float32), "task": task},
                 rng.uniform(-1, 1, (T, 4)).astype(np.float32), np.zeros(T), np.r_[np.zeros(T - 1, bool), True],
                 np.zeros(T, bool))],
        {"suite": "test"},
        observation_space=spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (39,), np.float32),
                                       "task": spaces.Box(0, 1, (50,), np.float32)}),
        action_space=spaces.Box(-1, 1, (4,), np.float32),
    )
    windows = WindowDataset("test/reach/x-v0", 2, 8)
    policy = build.build_policy(
        windows,
        policies.NetConfig(name="mlp", d_model=16, n_layers=1, pred_horizon=8, mlp_hidden=16),
        policies.DiffusionConfig(name="regression", num_inference_steps=2),
        policies.SchemeConfig(action_horizon=4),
    )
    ckpt = tmp_path / "ckpt"
    policy.save_pretrained(ckpt)

    targets = select_targets("metaworld_mt10", tasks=["reach-v3"], teacher=str(ckpt), env_kwargs={"max_episode_steps": 6})
    assert targets[0].dataset_id == "metaworld/reach-v3/policy-v0"
    results = collect(targets, episodes=1, workers=1, teacher=str(ckpt), only_success=False, progress=False,
                      embed_instructions=False)
    assert results[0].attempts == 1 and results[0].steps == 6
    data_root()
    meta = minari.load_dataset("metaworld/reach-v3/policy-v0").storage.metadata["alloy"]
    assert meta["teacher_kind"] == "policy" and meta["teacher_path"] == str(ckpt.resolve())
