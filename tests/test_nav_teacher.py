"""Layouts are feasible; the planner teacher succeeds and its plans go both ways around obstacles."""

import numpy as np
import pytest

from envs.nav.env import NavEnv
from envs.nav.layout import Layout, LayoutConfig, Obstacle, is_feasible, sample_layout
from envs.nav.teacher import evaluate_teacher


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
