"""Layouts are feasible; the planner teacher (a Dijkstra cost-to-go field) succeeds, its plans go both ways
around obstacles, and by default it uses the holonomic robot's freedom (sideways motion) that the other robots
cannot copy."""

import math

import numpy as np
import pytest

from envs.errors import EnvError
from envs.nav.env import NavEnv, evaluate_teacher
from envs.nav.layout import Layout, LayoutConfig, Obstacle, is_feasible, sample_layout
from envs.nav.teacher import GOAL_TURN_RATE, HEADINGS, PlannerTeacher, wrap_angle


def test_sampled_layouts_are_feasible_and_far_enough():
    cfg = LayoutConfig(num_obstacles=(6, 12), obstacle_size=(0.3, 0.8))
    rng = np.random.default_rng(0)
    for _ in range(30):
        layout = sample_layout(rng, cfg)
        assert is_feasible(layout, cfg)
        assert np.hypot(*(np.subtract(layout.goal, layout.start[:2]))) >= cfg.min_goal_distance
        assert 6 <= len(layout.obstacles) <= 12


def test_infeasible_layout_is_detected():
    wall = Obstacle("box", 0.0, 0.0, 0.2, 4.0)  # splits the arena in two
    layout = Layout(start=(-2.0, 0.0, 0.0), goal=(2.0, 0.0), obstacles=(wall,))
    assert not is_feasible(layout, LayoutConfig())


def test_teacher_succeeds_on_holonomic_episodes_fast():
    result = evaluate_teacher("holonomic", episodes=20, seed=1000)
    assert result["success_rate"] >= 0.95, result


@pytest.mark.slow
def test_teacher_succeeds_on_200_holonomic_episodes():
    result = evaluate_teacher("holonomic", episodes=200, seed=0)
    assert result["success_rate"] >= 0.98, result


def _side_of_obstacle(teacher_randomize, seed):
    block = Obstacle("cylinder", 0.0, 0.0, 0.6)
    layout = Layout(start=(-2.5, 0.0, 0.0), goal=(2.5, 0.0), obstacles=(block,))
    env = NavEnv("holonomic", teacher_randomize=teacher_randomize)
    env.reset(seed=seed, options={"layout": layout})
    path = env.teacher.plan(layout.start[:2])
    mid = path[np.argmin(np.abs(path[:, 0]))]
    return np.sign(mid[1])


def test_randomised_plans_pass_on_both_sides():
    sides = [_side_of_obstacle(True, seed) for seed in range(16)]
    assert sides.count(1.0) >= 2 and sides.count(-1.0) >= 2, sides


def test_plans_are_deterministic_without_randomisation():
    sides = {_side_of_obstacle(False, seed) for seed in range(6)}
    assert len(sides) == 1


def test_teacher_is_reset_with_the_episode_and_seeded():
    env = NavEnv("holonomic")
    env.reset(seed=5)
    a = [env.teacher_action() for _ in range(1)]
    first = env.teacher
    env.reset(seed=5)
    assert env.teacher is not first
    np.testing.assert_array_equal(a[0], env.teacher_action())
    assert env.teacher_action().shape == (3,) and env.teacher_action().dtype == np.float32


def _rollout(env, seed, layout=None, max_steps=400):
    """Teacher rollout: actions, poses (x, y, yaw) after each step, and the final info."""
    env.reset(seed=seed, options={"layout": layout} if layout else None)
    actions, poses = [], []
    for _ in range(max_steps):
        actions.append(env.teacher_action())
        *_, terminated, truncated, info = env.step(actions[-1])
        poses.append(env.pose())
        if terminated or truncated:
            break
    return np.array(actions), np.array(poses), info


def test_whole_teacher_rollouts_are_deterministic_under_a_seed():
    env = NavEnv("holonomic")
    a1, p1, _ = _rollout(env, seed=11)
    a2, p2, _ = _rollout(env, seed=11)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(p1, p2)


def test_default_heading_moves_sideways_much_more_than_facing_the_path():
    assert NavEnv("holonomic").teacher_heading == "goal"
    goal = evaluate_teacher("holonomic", episodes=10, seed=1000)
    path = evaluate_teacher("holonomic", episodes=10, seed=1000, teacher_heading="path")
    assert goal["success_rate"] == 1.0 and path["success_rate"] == 1.0, (goal, path)
    assert goal["lateral_share"] > 0.3 and goal["lateral_share"] > 2 * path["lateral_share"], (goal, path)


def test_heading_mode_changes_the_heading_not_the_route():
    for seed in range(3):
        _, goal, _ = _rollout(NavEnv("holonomic", teacher_heading="goal"), seed)
        _, path, _ = _rollout(NavEnv("holonomic", teacher_heading="path"), seed)
        n = min(len(goal), len(path))
        assert abs(len(goal) - len(path)) <= 1
        assert np.abs(goal[:n, :2] - path[:n, :2]).max() < 0.1  # same route, metres
        assert np.abs(wrap_angle_array(goal[:n, 2] - path[:n, 2])).max() > 0.5  # different heading


def wrap_angle_array(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def test_goal_heading_turns_toward_the_goal_at_a_limited_rate():
    # Start facing away from the goal: the robot must back off / strafe while slowly turning around.
    layout = Layout(start=(-3.3, 0.0, math.pi), goal=(3.3, 0.0), obstacles=())
    actions, poses, info = _rollout(NavEnv("holonomic"), seed=0, layout=layout)
    assert info["is_success"]
    assert np.abs(actions[:, 2]).max() <= GOAL_TURN_RATE + 1e-6
    assert actions[0, 0] < -0.5  # first moves backwards in its own frame
    bearing = np.abs([wrap_angle(math.atan2(-y, 3.3 - x) - yaw) for x, y, yaw in poses])
    assert bearing[0] > 2.5 and bearing.min() < 0.3
    assert np.all(np.diff(bearing[: int(np.argmin(bearing))]) < 0.02)  # a steady turn, no dithering


def test_hold_heading_keeps_the_start_yaw_around_an_obstacle():
    block = Obstacle("cylinder", 0.0, 0.0, 0.6)
    layout = Layout(start=(-2.5, 0.0, 1.2), goal=(2.5, 0.0), obstacles=(block,))
    actions, poses, info = _rollout(NavEnv("holonomic", teacher_heading="hold"), seed=0, layout=layout)
    assert info["is_success"]
    assert np.abs(wrap_angle_array(poses[:, 2] - 1.2)).max() < 0.05
    assert np.abs(poses[:, 1]).max() > 0.6  # it went around the obstacle, sideways in its frame


def test_unknown_heading_mode_is_an_error_naming_the_choices():
    with pytest.raises(EnvError, match="teacher_heading.*goal, hold, path"):
        NavEnv("holonomic", teacher_heading="sideways")
    layout = Layout(start=(-2.5, 0.0, 0.0), goal=(2.5, 0.0))
    with pytest.raises(EnvError, match="choose one of"):
        PlannerTeacher(layout, 4.0, 0.45, 0.2, seed=0, heading="sideways")
    assert set(HEADINGS) == {"goal", "hold", "path"}


def test_diffdrive_copies_the_path_heading_but_not_the_default():
    path = evaluate_teacher("diffdrive", episodes=10, seed=1000, teacher_heading="path")
    goal = evaluate_teacher("diffdrive", episodes=10, seed=1000)
    assert path["success_rate"] >= 0.9, path
    assert goal["success_rate"] <= 0.5, goal


@pytest.mark.slow
@pytest.mark.parametrize("embodiment", ["diffdrive", "ackermann", "skidsteer"])
def test_default_teacher_leaves_a_clear_gap_on_robots_that_cannot_strafe(embodiment):
    result = evaluate_teacher(embodiment, episodes=200, seed=0)
    assert result["success_rate"] < 0.5, result
