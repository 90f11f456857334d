"""The physics is real: each robot realises only the part of a command its mechanics allow."""

import numpy as np
import pytest

from envs.nav.env import NavEnv
from envs.nav.layout import Layout, Obstacle

EMPTY = {"start": [0.0, 0.0, 0.0], "goal": [3.5, 3.5], "obstacles": []}


def drive(name, cmd, steps=20, **kwargs):
    env = NavEnv(name, **kwargs)
    env.reset(seed=0, options={"layout": EMPTY})
    for _ in range(steps):
        _, _, terminated, _, info = env.step(np.asarray(cmd, dtype=np.float64))
        if terminated:
            break
    return env, info


def test_holonomic_strafes_and_turns_in_place():
    env, _ = drive("holonomic", [0, 1, 0])
    x, y, yaw = env.pose()
    assert y > 1.2 and abs(x) < 0.05 and abs(yaw) < 0.05
    env, _ = drive("holonomic", [0, 0, 1], steps=5)
    x, y, yaw = env.pose()
    assert yaw > 0.5 and np.hypot(x, y) < 0.02


def test_diffdrive_cannot_strafe_but_turns_in_place():
    env, _ = drive("diffdrive", [0, 1, 0])
    x, y, yaw = env.pose()
    assert abs(y) < 0.02 and abs(x) < 0.02
    env, _ = drive("diffdrive", [0, 0, 1], steps=5)
    x, y, yaw = env.pose()
    assert yaw > 0.5 and np.hypot(x, y) < 0.05


def test_ackermann_cannot_turn_in_place_but_turns_while_driving():
    env, _ = drive("ackermann", [0, 0, 1])
    x, y, yaw = env.pose()
    assert abs(yaw) < 0.05 and np.hypot(x, y) < 0.05
    assert env.controller.steering(env.data) > 0.3  # the wheels did steer
    env, _ = drive("ackermann", [0.5, 0, 1], steps=10)
    _, _, yaw = env.pose()
    assert yaw > 0.3
    env, _ = drive("ackermann", [0, 1, 0])
    x, y, _ = env.pose()
    assert abs(y) < 0.02


def test_skidsteer_is_heavy_and_slow_to_turn():
    env, _ = drive("skidsteer", [1, 0, 0], steps=5)
    v_skid = env.body_velocity()[0]
    env, _ = drive("diffdrive", [1, 0, 0], steps=5)
    assert v_skid < 0.5 * env.body_velocity()[0]  # 0.5 m/s^2 against 1.5 m/s^2
    env, _ = drive("skidsteer", [0, 0, 1], steps=20)
    wz = env.body_velocity()[2]
    assert 0.1 < wz < 0.8 * env.params["max_yaw_rate"]  # turns, but slips
    env, _ = drive("skidsteer", [0, 1, 0])
    assert abs(env.pose()[1]) < 0.02


def test_speed_and_acceleration_limits_hold():
    env, _ = drive("diffdrive", [1, 0, 0], steps=2, max_speed=0.5, max_accel=0.5)
    assert env.body_velocity()[0] == pytest.approx(0.1, abs=0.03)  # 0.5 m/s^2 for 0.2 s
    env, _ = drive("diffdrive", [1, 0, 0], steps=30, max_speed=0.5, max_accel=2.0)
    assert env.body_velocity()[0] == pytest.approx(0.5, abs=0.02)


def test_mass_is_physical_and_the_servo_is_tuned_for_it():
    light, _ = drive("holonomic", [1, 0, 0], steps=3, mass=5.0, max_accel=5.0)
    heavy, _ = drive("holonomic", [1, 0, 0], steps=3, mass=40.0, max_accel=5.0)
    assert light.model.body_mass[light.controller.robot] == pytest.approx(5.0)
    assert heavy.model.body_mass[heavy.controller.robot] == pytest.approx(40.0)
    # Gains and force limits scale with the mass, so the commanded response is the same.
    assert light.body_velocity()[0] == pytest.approx(heavy.body_velocity()[0], abs=0.02)
    assert heavy.model.actuator_forcerange[0, 1] == pytest.approx(8 * light.model.actuator_forcerange[0, 1])


@pytest.mark.parametrize("name", ["holonomic", "diffdrive", "ackermann", "skidsteer"])
def test_collisions_are_detected_and_end_the_episode(name):
    wall = Obstacle("box", 1.2, 0.0, 0.2, 1.0)
    layout = Layout(start=(0.0, 0.0, 0.0), goal=(3.0, 0.0), obstacles=(wall,))
    env = NavEnv(name)
    env.reset(seed=0, options={"layout": layout})
    before = env.reset(seed=0, options={"layout": layout})[0]["lidar"][0]
    assert before == pytest.approx(1.0, abs=0.02)  # beam 0 looks ahead, at the box face
    for _ in range(100):
        _, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0, 0.0]))
        if terminated or truncated:
            break
    assert terminated and info["collision"] and not info["is_success"]
    assert reward < -5
    assert env.pose()[0] < 1.0  # stopped at the box, not through it


def test_walls_count_as_collisions():
    env = NavEnv("holonomic")
    env.reset(seed=0, options={"layout": {"start": [3.0, 0.0, 0.0], "goal": [-3.0, 0.0], "obstacles": []}})
    for _ in range(40):
        _, _, terminated, _, info = env.step(np.array([1.0, 0.0, 0.0]))
        if terminated:
            break
    assert info["collision"] and env.pose()[0] < env.arena_half


def test_reaching_the_goal_is_a_success():
    env = NavEnv("holonomic")
    env.reset(seed=0, options={"layout": {"start": [0.0, 0.0, 0.0], "goal": [1.0, 0.0], "obstacles": []}})
    for _ in range(30):
        _, reward, terminated, _, info = env.step(np.array([1.0, 0.0, 0.0]))
        if terminated:
            break
    assert info["is_success"] and not info["collision"] and reward > 5


def test_timeout_truncates():
    env = NavEnv("holonomic", time_limit=1.0)
    env.reset(seed=0)
    for _ in range(10):
        _, _, terminated, truncated, info = env.step(np.zeros(3))
    assert truncated and not terminated and info["time"] == pytest.approx(1.0)
