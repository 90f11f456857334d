"""The nav envs as Gymnasium envs: registration, spaces, checker, determinism, bad input, parameters."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.errors import EnvError
from envs.nav import EMBODIMENTS, ENV_IDS
from envs.nav.env import NavEnv
from envs.wrappers import FlatObservation


def test_every_embodiment_is_registered():
    assert len(EMBODIMENTS) >= 4 and {"holonomic", "diffdrive", "ackermann"} <= set(EMBODIMENTS)
    assert ENV_IDS == tuple(f"alloy/Nav-{n.capitalize()}-v0" for n in EMBODIMENTS)
    for env_id in ENV_IDS:
        assert env_id in gym.registry


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_passes_gymnasium_env_checker(env_id):
    env = envs.make_env(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_spaces_are_identical_across_embodiments():
    spaces = [NavEnv(name).observation_space for name in EMBODIMENTS]
    for s in spaces[1:]:
        assert s == spaces[0]
    assert set(spaces[0].spaces) == {"state", "goal", "lidar", "embodiment"}
    assert spaces[0]["lidar"].shape[0] >= 16


@pytest.mark.parametrize("name", EMBODIMENTS)
def test_deterministic_under_seed(name):
    def rollout():
        env = NavEnv(name)
        obs, _ = env.reset(seed=7)
        rng = np.random.default_rng(0)
        out = [obs]
        for _ in range(15):
            obs, *_ = env.step(rng.uniform(-1, 1, 3))
            out.append(obs)
        return out

    a, b = rollout(), rollout()
    for oa, ob in zip(a, b):
        for k in oa:
            np.testing.assert_array_equal(oa[k], ob[k])


def test_same_seed_same_layout_for_every_robot():
    envs_ = {name: NavEnv(name) for name in EMBODIMENTS}
    for e in envs_.values():
        e.reset(seed=3)
    first = envs_["holonomic"].layout
    assert all(e.layout == first for e in envs_.values())


def test_observation_content_and_info():
    env = NavEnv("diffdrive")
    obs, info = env.reset(seed=1)
    assert {"is_success", "collision", "time"} <= set(info)
    assert info["time"] == 0.0 and not info["is_success"] and not info["collision"]
    gx, gy = env.layout.goal
    x, y, _ = env.pose()
    assert np.isclose(np.linalg.norm(obs["goal"]), np.hypot(gx - x, gy - y), atol=1e-4)
    emb = obs["embodiment"]
    assert emb[: len(EMBODIMENTS)].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert emb[len(EMBODIMENTS)] == pytest.approx(8.1, abs=1e-5)  # mass
    assert emb[-1] == 0.0  # cannot strafe
    assert np.all(obs["lidar"] > 0) and np.all(obs["lidar"] <= env.lidar_range)
    _, _, _, _, info = env.step(np.zeros(3))
    assert info["time"] == pytest.approx(0.1)


@pytest.mark.parametrize("bad", [np.array([np.nan, 0, 0]), np.zeros(2), np.zeros((1, 3)), "fast"])
def test_bad_action_raises(bad):
    env = NavEnv("holonomic")
    env.reset(seed=0)
    with pytest.raises(EnvError):
        env.step(bad)


def test_out_of_range_actions_are_clipped_not_rejected():
    env = NavEnv("holonomic")
    env.reset(seed=0)
    env.step(np.array([5.0, 0.0, 0.0]))
    assert np.all(np.abs(env.data.act[:2]) <= env.params["max_speed"] + 1e-9)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("holonomic", {"mass": 0.5}),
        ("diffdrive", {"max_speed": 9.0}),
        ("ackermann", {"steering_limit": 1.2}),
        ("holonomic", {"wheel_base": 0.3}),  # does not apply to a disc
        ("diffdrive", {"randomize": {"mass": [1.0, 5.0]}}),
        ("diffdrive", {"randomize": {"mass": [9.0, 5.0]}}),
        ("diffdrive", {"num_obstacles": (5, 99)}),
        ("skidsteer", {"clearance": 0.2}),  # narrower than the robot
        ("tank", {}),
    ],
)
def test_bad_parameters_raise(name, kwargs):
    with pytest.raises(EnvError):
        NavEnv(name, **kwargs)


def test_unknown_env_id_lists_known_ids():
    with pytest.raises(EnvError, match="alloy/Nav-Holonomic-v0"):
        envs.make_env("alloy/Nav-Tank-v0")


def test_parameters_change_the_robot_and_randomise_per_episode():
    env = NavEnv("diffdrive", mass=20.0, wheel_base=0.3, randomize={"max_speed": [0.3, 0.6]})
    speeds = set()
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        p = env.episode_params
        assert 0.3 <= p["max_speed"] <= 0.6
        speeds.add(p["max_speed"])
        assert env.model.body_subtreemass[env.controller.robot] == pytest.approx(20.0)
        wheel_y = env.model.body_pos[env.controller.wheel_bodies, 1]
        assert sorted(wheel_y) == pytest.approx([-0.15, 0.15])
        assert obs["embodiment"][len(EMBODIMENTS) + 2] == pytest.approx(p["max_speed"], abs=1e-5)
    assert len(speeds) == 4


def test_flat_observation_wrapper_has_fixed_key_order():
    env = FlatObservation(envs.make_env("alloy/Nav-Ackermann-v0"))
    obs, _ = env.reset(seed=0)
    raw = env.unwrapped._observation()
    assert env.keys == ("state", "goal", "lidar", "embodiment")
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    for k, sl in env.slices.items():
        np.testing.assert_array_equal(obs[sl], raw[k])


def test_reward_rewards_progress_and_penalises_collision():
    env = NavEnv("holonomic", reward_progress=2.0, reward_collision=-7.0)
    env.reset(seed=0, options={"layout": {"start": [0, 0, 0], "goal": [3, 0], "obstacles": []}})
    _, r, *_ = env.step(np.array([1.0, 0.0, 0.0]))
    d = env.unwrapped._distance
    assert r == pytest.approx(2.0 * (3.0 - d), rel=1e-6) and r > 0


def _wall_between():
    """Start and goal on either side of a long wall: the straight line to the goal runs into it."""
    return {"start": [-2.0, 0.0, 0.0], "goal": [2.0, 0.0],
            "obstacles": [{"kind": "box", "x": 0.0, "y": -1.2, "sx": 0.2, "sy": 2.8}]}  # y in [-4, 1.6]


def test_geodesic_progress_pays_for_the_way_around_not_the_dead_end():
    """Driving straight at a wall shortens the straight-line distance but not the obstacle-free one: the euclidean
    metric rewards it, the geodesic one charges for it; sideways toward the gap it is the other way round."""
    rewards = {}
    for metric in ("euclidean", "geodesic"):
        env = NavEnv("holonomic", progress_metric=metric)
        for name, cmd in (("at_wall", [1.0, 0.0, 0.0]), ("to_gap", [0.0, 1.0, 0.0])):
            env.reset(seed=0, options={"layout": _wall_between()})
            rewards[metric, name] = sum(env.step(np.array(cmd))[1] for _ in range(5))
    assert rewards["euclidean", "at_wall"] > 0 and rewards["geodesic", "at_wall"] < rewards["euclidean", "at_wall"]
    assert rewards["geodesic", "to_gap"] > rewards["geodesic", "at_wall"]
    assert rewards["euclidean", "to_gap"] < rewards["euclidean", "at_wall"]


def test_geodesic_distance_is_continuous_and_never_below_the_straight_line():
    env = NavEnv("holonomic", progress_metric="geodesic")
    env.reset(seed=0, options={"layout": _wall_between()})
    field, goal = env.unwrapped._geodesic, np.array([2.0, 0.0])
    xs = np.stack([np.linspace(-2.2, -0.6, 161), np.full(161, 1.75)], axis=1)  # past the wall's end, 1 cm apart
    d = np.array([field.distance(p) for p in xs])
    assert np.all(np.isfinite(d)) and np.max(np.abs(np.diff(d))) < 0.03
    assert np.all(d >= np.linalg.norm(goal - xs, axis=1) - 0.15)  # grid resolution 0.1 m
    start = np.array([-2.0, 0.0])
    assert field.distance(start) > np.linalg.norm(goal - start) + 1.0  # around the wall, not through it


def test_privileged_info_and_heading_shaping_follow_the_way_around():
    """`info['privileged']`: obstacle-free distance (over the arena diagonal), the body-frame direction it falls
    fastest, elapsed time; `reward_heading` pays the change of that direction's cosine, so it telescopes."""
    env = NavEnv("skidsteer", progress_metric="geodesic", reward_progress=0.0, reward_success=0.0,
                 reward_collision=0.0, reward_heading=1.0)
    _, info = env.reset(seed=0, options={"layout": _wall_between()})
    p0 = info["privileged"]
    diagonal = 2 * env.arena_half * np.sqrt(2)
    assert p0[0] * diagonal == pytest.approx(env._geodesic.distance((-2.0, 0.0)), rel=1e-5)
    assert p0[1] < 0.9 and p0[2] > 0.3 and p0[3] == 0.0  # the way around the wall is to the robot's left
    total = 0.0
    for _ in range(20):  # turn left, onto the way around
        _, r, *_, info = env.step(np.array([0.0, 0.0, 1.0]))
        total += r
    p1 = info["privileged"]
    assert p1[1] > p0[1] and p1[3] == pytest.approx(20 / env.max_episode_steps)
    assert total == pytest.approx(p1[1] - p0[1], abs=1e-5)
    # the descent direction is the central difference of the distance where the field is smooth
    field, (x, y, _) = env._geodesic, env.pose()
    h = 0.05
    grad = np.array([field.distance((x + h, y)) - field.distance((x - h, y)),
                     field.distance((x, y + h)) - field.distance((x, y - h))]) / (2 * h)
    np.testing.assert_allclose(field.gradient((x, y)), grad, atol=0.05)
    # computed only when asked for (an asymmetric critic, the heading reward): it costs time every step
    assert "privileged" not in NavEnv("skidsteer").reset(seed=0)[1]
    assert "privileged" in NavEnv("skidsteer", privileged_info=True).reset(seed=0)[1]


def test_clearance_penalty_grows_as_the_robot_nears_an_obstacle():
    """`reward_clearance` charges per step how far the nearest lidar return has come inside `clearance_margin` of
    the footprint: nothing in open space, more as the robot drives at an obstacle, and bad weights are refused."""
    layout = {"start": [-2.0, 0.0, 0.0], "goal": [3.5, 3.5],
              "obstacles": [{"kind": "box", "x": 0.0, "y": 0.0, "sx": 0.3, "sy": 0.3}]}
    weights = dict(reward_progress=0.0, reward_success=0.0, reward_collision=0.0)
    env = NavEnv("holonomic", reward_clearance=-0.5, clearance_margin=0.6, **weights)
    env.reset(seed=0, options={"layout": layout})
    penalties, gaps = [], []
    for _ in range(40):
        obs, r, terminated, *_ = env.step(np.array([0.5, 0.0, 0.0]))  # straight at the box
        penalties.append(r)
        gaps.append(float(obs["lidar"].min()) - env.footprint)
        if terminated:
            break
    penalties, gaps = np.array(penalties), np.array(gaps)
    assert penalties[0] == 0.0 and gaps[0] > 0.6  # far from everything: free
    near = gaps < 0.6
    assert near.any() and np.all(penalties[near] < 0) and np.all(penalties >= -0.5)
    np.testing.assert_allclose(penalties, -0.5 * np.clip(1 - gaps / 0.6, 0, 1), atol=1e-6)
    assert np.all(np.diff(penalties[near]) <= 1e-9)  # closer costs more
    with pytest.raises(EnvError, match="reward_clearance=0.3 must be <= 0"):
        NavEnv("holonomic", reward_clearance=0.3)
    with pytest.raises(EnvError, match="clearance_margin=0.0 must be in"):
        NavEnv("holonomic", clearance_margin=0.0)


def test_unknown_progress_metric_names_the_choices():
    with pytest.raises(EnvError, match="progress_metric='manhattan'.*euclidean, geodesic"):
        NavEnv("holonomic", progress_metric="manhattan")
