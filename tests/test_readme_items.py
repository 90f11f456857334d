"""The README as a new user tries it (issue 21): what each command says and does when used as written, and for what
a user tries next (the teacher's advice, --help, wrong groups, --cfg job, bench data, Gymnasium envs, videos, plots)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from alloy import cli

# ------------------------------------------------------------------------------------------------ item 2: advice


def test_low_yield_advice_points_at_the_heading_not_at_more_attempts():
    from training.collect import low_yield_advice

    advice = low_yield_advice("alloy/Nav-Diffdrive-v0", {}, "teacher")
    assert "+env_kwargs.teacher_heading=path" in advice and "diffdrive cannot" in advice
    assert "raise max_attempts_factor" not in advice
    path = low_yield_advice("alloy/Nav-Ackermann-v0", {"teacher_heading": "path"}, "teacher")
    assert "max_attempts_factor" in path and "alloy rl" in path
    assert "teacher_heading" not in low_yield_advice("metaworld/reach-v3", {}, "teacher")
    assert "saved policy" in low_yield_advice("alloy/Nav-Diffdrive-v0", {}, "/some/policy")


def test_collect_warns_before_and_prints_the_cause_after(caplog, capsys):
    from alloy.commands import collect as collect_command
    from training.collect import TargetResult, select_targets

    targets = select_targets("nav", embodiment="diffdrive")
    with caplog.at_level(logging.WARNING, logger="alloy.collect"):
        collect_command.warn_misfit_teacher(targets, "teacher")
        collect_command.warn_misfit_teacher(select_targets("nav", embodiment="diffdrive",
                                                           env_kwargs={"teacher_heading": "path"}), "teacher")
    assert len(caplog.records) == 1 and "teacher_heading=path" in caplog.records[0].getMessage()
    result = TargetResult(targets[0].env_id, targets[0].dataset_id, attempts=60, successes=12, kept=12)
    (line,) = collect_command.shortfalls(targets, [result], 20, "teacher")
    assert "kept 12 of 20" in line and "+env_kwargs.teacher_heading=path" in line


# ------------------------------------------------------------------------------------------------ item 3: --help


def help_of(capsys, *argv) -> str:
    assert cli.main([*argv, "--help"]) == 0
    return capsys.readouterr().out


def test_help_lists_only_the_commands_own_groups_and_its_values(capsys):
    train = help_of(capsys, "train")
    assert "policy: dit, mdt, mlp, mode  (default: dit)" in train and "dataset=???" in train
    assert "quickstart" not in train  # a pipeline recipe
    for group in ("suite:", "embodiment:", "robot:", "student:"):
        assert group not in train
    evaluation = help_of(capsys, "eval")
    assert "policy=teacher" in evaluation and "env=???" in evaluation and "run_dir=<dir>" in evaluation
    assert "no config group" in evaluation and "dit, mdt" not in evaluation
    collect = help_of(capsys, "collect")
    assert "suite: metaworld_mt10, metaworld_mt50, nav" in collect and "embodiment=" in collect
    assert "policy:" not in collect and "diffusion:" not in collect
    pipeline = help_of(capsys, "pipeline")
    assert "  experiment: full, quickstart  (default: quickstart)" in pipeline  # not train's recipes


@pytest.mark.parametrize("argv, words", [
    (["train", "suite=nav", "embodiment=diffdrive"], ["does not take suite=", "dataset=nav/diffdrive/planner-v0"]),
    (["eval", "suite=nav"], ["does not take suite=", "pass env=nav"]),
    (["eval", "embodiment=diffdrive"], ["pass env=alloy/Nav-Diffdrive-v0"]),
    (["rl", "embodiment=skidsteer", "base=x", "env=y"], ["pass robot=skidsteer"]),
    (["collect", "robot=diffdrive"], ["suite=nav embodiment=diffdrive"]),
    (["pipeline", "experiment=nav_dit"], ["experiment=full|quickstart"]),
    (["train", "experiment=quickstart", "dataset=x"], ["recipe of alloy pipeline"]),
    (["eval", "policy=dit", "env=nav"], ["network for alloy train", "checkpoints/best"]),
])
def test_a_group_of_another_command_is_one_line_with_what_to_type(tmp_path, capsys, argv, words):
    assert cli.main([*argv, f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Could not override" not in err[0]
    assert all(w in err[0] for w in words), err[0]
    assert not (tmp_path / "run").exists()


def test_run_dir_is_where_the_run_writes(tmp_path):
    out = tmp_path / "here"
    assert cli.main(["eval", "env=metaworld/reach-v3", "episodes=1", "num_envs=1", "max_episode_steps=3",
                     "progress=false", f"run_dir={out}"]) == 0
    assert json.loads((out / "report.json").read_text())["overall"]["episodes"] == 1


# ------------------------------------------------------------------------------------------------ item 4


def test_cfg_job_prints_a_config_with_a_required_value_unset(tmp_path, capsys):
    assert cli.main(["train", "policy=mode", "--cfg", "job"]) == 0
    captured = capsys.readouterr()
    assert "dataset: ???" in captured.out and "name: mode" in captured.out
    assert "dataset is required to run" in captured.err
    assert cli.main(["train", "policy=mode", "trainer.nope=1", "--cfg", "job"]) == 2  # still validated


def test_bench_data_finds_the_datasets_of_another_name(tmp_path, monkeypatch, capsys):
    from training.data_bench import resolve_ids, similar_patterns
    from training.errors import DatasetError

    monkeypatch.setenv("ALLOY_DATA_DIR", str(tmp_path / "data"))
    assert cli.main(["collect", "suite=metaworld_mt50", "tasks=[reach-v3]", "episodes=1", "name=expert10",
                     "num_envs=1", "progress=false", "embed_instructions=false", f"hydra.run.dir={tmp_path / 'c'}"]) == 0
    assert similar_patterns("metaworld/*/expert-v0", ["metaworld/reach-v3/expert10-v0"]) == [
        ("metaworld/*/expert10-v0", 1)]
    with pytest.raises(DatasetError, match=r"pass datasets=\[metaworld/\*/expert10-v0\]"):
        resolve_ids(["metaworld/*/expert-v0"])
    assert cli.main(["bench", "data", "num_batches=2", "warmup_batches=1", "batch_size=4", "device=cpu",
                     f"hydra.run.dir={tmp_path / 'b'}"]) == 0
    assert json.loads((tmp_path / "b" / "data.json").read_text())["samples_per_s"] > 0


# ------------------------------------------------------------------------------------------------ item 5: Gymnasium


@pytest.fixture(scope="module")
def pendulum_policy(tmp_path_factory):
    """An untrained MLP for Pendulum-v1's flat observation (the key `obs`) and 1-D action."""
    from policies import DiffusionConfig, NetConfig, Policy, PolicySpec, SchemeConfig

    spec = PolicySpec(obs_dims={"obs": 3}, action_dim=1,
                      net=NetConfig(name="mlp", language=False, obs_horizon=2, pred_horizon=4, mlp_hidden=16,
                                    mlp_layers=2),
                      diffusion=DiffusionConfig(name="regression"), scheme=SchemeConfig(action_horizon=2))
    return Policy(spec).save_pretrained(tmp_path_factory.mktemp("pendulum") / "policy")


def test_a_gymnasium_env_in_eval_collect_and_train(tmp_path, monkeypatch, capsys, pendulum_policy):
    monkeypatch.setenv("ALLOY_DATA_DIR", str(tmp_path / "data"))
    assert cli.main(["eval", "env=Pendulum-v1", f"hydra.run.dir={tmp_path / 'e0'}"]) == 2
    assert "has none: pass policy=<saved policy dir>" in capsys.readouterr().err
    assert cli.main(["eval", f"policy={pendulum_policy}", "env=Pendulum-v1", "episodes=2", "num_envs=2",
                     "max_episode_steps=10", "progress=false", "device=cpu", f"run_dir={tmp_path / 'e1'}"]) == 0
    assert json.loads((tmp_path / "e1" / "report.json").read_text())["overall"]["episodes"] == 2
    common = ["env=Pendulum-v1", f"teacher={pendulum_policy}", "episodes=2", "num_envs=2", "progress=false",
              "device=cpu", "+env_kwargs.max_episode_steps=12"]
    assert cli.main(["collect", *common, f"run_dir={tmp_path / 'c0'}"]) == 2
    assert "only_success=false" in capsys.readouterr().err
    assert cli.main(["collect", *common, "only_success=false", f"run_dir={tmp_path / 'c1'}"]) == 0
    assert cli.main(["train", "dataset=gym/Pendulum-v1/policy-v0", "policy=mlp", "policy.language=false",
                     "policy.mlp_hidden=16", "policy.pred_horizon=4", "scheme.action_horizon=2",
                     "trainer.max_steps=2", "trainer.batch_size=4", "trainer.warmup_steps=1", "trainer.ckpt_every=2",
                     "trainer.eval_every=0", "trainer.progress=false", "device=cpu", f"run_dir={tmp_path / 't'}"]) == 0
    assert (tmp_path / "t" / "checkpoints" / "last" / "model.safetensors").is_file()


@pytest.mark.parametrize("env, words", [("CartPole-v1", ["Discrete action space"]),
                                        ("Pendulum-v9", ["unknown env", "Pendulum-v1"])])
def test_gymnasium_envs_alloy_cannot_use_are_one_line(tmp_path, capsys, env, words):
    assert cli.main(["eval", "policy=/", f"env={env}", f"hydra.run.dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


# ------------------------------------------------------------------------------------------------ item 8: videos


def _robot_pixels(frame: np.ndarray, rgba) -> int:
    """Pixels of the colour's hue: its strongest channel high, its weakest low (lighting brightens the flat colour)."""
    order = np.argsort(rgba[:3])
    f = frame.astype(int)
    return int(((f[..., order[2]] > 200) & (f[..., order[0]] < 110) & (f[..., order[2]] - f[..., order[0]] > 120)).sum())


def test_nav_video_shows_the_body_and_a_heading_arrow():
    import envs
    from envs.nav.env import ARROW_RGBA, BODY_RGBA

    env = envs.make_env("alloy/Nav-Diffdrive-v0", render_mode="rgb_array", render_width=240, render_height=240)
    env.reset(seed=0, options={"layout": {"start": [0.0, 0.0, 0.0], "goal": [3.0, 3.0], "obstacles": []}})
    frame = env.render()
    body, arrow = _robot_pixels(frame, BODY_RGBA), _robot_pixels(frame, ARROW_RGBA)
    assert body > 40 and arrow > 15  # a disc of several pixels across and a visible arrow
    right = frame[100:140, 120:160]  # the robot sits at the centre facing +x: the arrow points right
    assert _robot_pixels(right, ARROW_RGBA) > 0.5 * arrow
    env.close()


def test_video_films_every_asked_episode_at_the_control_rate(tmp_path):
    import imageio.v3 as iio
    from test_eval_rollout import run

    report = run("teacher", tmp_path, episodes=4, num_envs=2, video=True, video_episodes=6, stop_on_success=False)
    assert report["config"]["video_episodes"] == 4 and report["config"]["video_episodes_requested"] == 6
    assert report["config"]["video_fps"] == {"toy": 10.0}
    frames = iio.imread(tmp_path / "videos" / "toy.mp4", index=None)
    assert frames.shape[1:] == (48, 64, 3)  # 4 episodes from 2 envs: a 2x2 grid of 24x32 tiles
    lengths = {r["index"]: r["length"] for r in report["episode_records"]}
    assert len(frames) == max(lengths.values()) + 1
    last = frames[-1].astype(int)  # every tile holds its episode's last frame, whose blue is 5 x its steps
    for k in range(4):
        tile = last[24 * (k // 2):24 * (k // 2) + 24, 32 * (k % 2):32 * (k % 2) + 32]
        assert abs(np.median(tile[..., 2]) - 5 * lengths[k]) < 12, (k, lengths)
    assert iio.immeta(tmp_path / "videos" / "toy.mp4")["fps"] == 10
    slow = run("teacher", tmp_path / "slow", episodes=2, num_envs=2, video=True, video_fps=5)
    assert slow["config"]["video_fps"] == {"toy": 5.0}
    assert iio.immeta(tmp_path / "slow" / "videos" / "toy.mp4")["fps"] == 5


def test_metaworld_videos_play_at_the_control_rate():
    import envs

    env = envs.make_env("metaworld/reach-v3")
    assert env.metadata["render_fps"] == round(1.0 / env.unwrapped._sim.dt) == 80  # 12.5 ms per step: real time
    env.close()


# ------------------------------------------------------------------------------------------------ item 9: plot title


def test_success_plot_title_names_policy_and_env():
    from training.evaluation.plots import success_title

    report = {"config": {"policy": "/home/u/outputs/train/2026-12-02_06-00-00/checkpoints/best", "env": "nav",
                         "env_ids": ["alloy/Nav-Holonomic-v0"]}, "overall": {"episodes": 20}, "per_env": {}}
    title = success_title(report)
    assert "checkpoints/best" in title and "on nav" in title and "20 episodes" in title
    report["config"].pop("env")
    assert "alloy/Nav-Holonomic-v0" in success_title(report)


# ------------------------------------------------------------------------------------------------ item 7: threads
def test_training_threads_share_the_cores_among_local_processes(monkeypatch):
    import os

    from alloy.commands.train import training_threads

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert training_threads(0) == cores and training_threads(3) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * cores))  # more torchrun processes than cores: one thread each
    assert training_threads(0) == 1
