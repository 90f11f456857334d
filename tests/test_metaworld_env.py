"""Meta-World v3 envs: ids, spaces, seeded reproducibility, truncation, the scripted teacher, suites."""

import numpy as np
import pytest

import envs
from envs import metaworld
from envs.errors import EnvError
from envs.suites import SUITES, suite_env_ids, suite_of


def test_task_lists_and_instructions():
    from metaworld.policies import ENV_POLICY_MAP

    assert metaworld.TASKS == sorted(ENV_POLICY_MAP) and len(metaworld.TASKS) == 50
    assert set(metaworld.MT10) <= set(metaworld.TASKS) and len(metaworld.MT10) == 10
    assert set(metaworld.INSTRUCTIONS) == set(metaworld.TASKS)
    assert len(set(metaworld.INSTRUCTIONS.values())) == 50  # every task says something different
    assert metaworld.INSTRUCTIONS["drawer-open-v3"] == "open the drawer"


def test_spaces_one_hot_and_attributes():
    env = envs.make_env("metaworld/drawer-open-v3")
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["state"].shape == (39,) and obs["state"].dtype == np.float32
    assert obs["task"].shape == (50,) and obs["task"].sum() == 1.0
    u = env.unwrapped
    assert obs["task"].argmax() == u.task_index == metaworld.TASKS.index("drawer-open-v3")
    assert u.task_name == "drawer-open-v3" and u.instruction == "open the drawer"
    assert env.action_space.shape == (4,) and info["is_success"] is False
    env.close()


def test_seeded_reset_is_reproducible_and_unseeded_resets_vary():
    env = metaworld.make_metaworld_env("pick-place-v3")
    a, _ = env.reset(seed=7)
    b, _ = env.reset(seed=7)
    c, _ = env.reset()
    np.testing.assert_array_equal(a["state"], b["state"])
    assert not np.allclose(a["state"][-3:], c["state"][-3:]) or not np.allclose(a["state"][4:7], c["state"][4:7])
    # A fresh env with the same seed replays the same trajectory under the same actions.
    other = metaworld.make_metaworld_env("pick-place-v3")
    x, _ = other.reset(seed=7)
    env.reset(seed=7)
    for _ in range(5):
        act = env.unwrapped.teacher_action()
        s1 = env.step(act)[0]["state"]
        s2 = other.step(other.unwrapped.teacher_action())[0]["state"]
        np.testing.assert_array_equal(s1, s2)


def test_truncation_at_max_episode_steps_and_step_after_end():
    env = metaworld.make_metaworld_env("reach-v3", max_episode_steps=7)
    env.reset(seed=1)
    flags = [env.step(np.zeros(4, np.float32))[2:4] for _ in range(7)]
    assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])
    with pytest.raises(EnvError, match="reset"):
        env.step(np.zeros(4, np.float32))


def test_full_length_episode_truncates_at_500():
    env = metaworld.make_metaworld_env("reach-v3")
    env.reset(seed=3)
    steps, truncated = 0, False
    while not truncated:
        *_, terminated, truncated, _ = env.step(np.zeros(4, np.float32))
        assert not terminated
        steps += 1
    assert steps == 500


def test_scripted_teacher_succeeds_and_terminate_on_success():
    env = metaworld.make_metaworld_env("drawer-close-v3", terminate_on_success=True)
    env.reset(seed=0)
    for steps in range(1, 501):  # noqa: B007 - read after the loop
        action = env.unwrapped.teacher_action()
        assert action.dtype == np.float32 and np.all(np.abs(action) <= 1.0)
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert terminated and info["is_success"] and steps < 500


def test_bad_input_raises_env_error():
    with pytest.raises(EnvError, match="known tasks"):
        envs.make_env("metaworld/not-a-task-v3")
    with pytest.raises(EnvError, match="out of range"):
        metaworld.make_metaworld_env("reach-v3", max_episode_steps=501)
    env = metaworld.make_metaworld_env("reach-v3")
    env.reset(seed=0)
    with pytest.raises(EnvError, match="shape"):
        env.step(np.zeros(3))
    with pytest.raises(EnvError, match="NaN"):
        env.step(np.array([0, np.nan, 0, 0]))


def test_gym_make_and_list_env_ids():
    import gymnasium as gym

    env = gym.make("metaworld/button-press-v3")
    assert env.unwrapped.task_name == "button-press-v3"
    assert "metaworld/reach-v3" in envs.list_env_ids()


def test_suites():
    assert suite_env_ids("metaworld_mt10") == [f"metaworld/{t}" for t in metaworld.MT10]
    assert len(suite_env_ids("metaworld_mt50")) == 50
    assert suite_of("metaworld/reach-v3") == "metaworld_mt10"
    assert suite_of("metaworld/soccer-v3") == "metaworld_mt50"
    with pytest.raises(EnvError) as e:
        suite_env_ids("mt11")
    assert all(s in str(e.value) for s in SUITES)


def test_render_turns_upside_down_corner_cameras_upright():
    env = metaworld.make_metaworld_env("drawer-open-v3", render_mode="rgb_array", width=64, height=48)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    raw = env.unwrapped._sim.render()  # Meta-World's own frame of the same state
    np.testing.assert_array_equal(frame, raw[::-1, ::-1])
    env.close()
