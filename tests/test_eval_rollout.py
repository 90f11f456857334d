"""The evaluation loop on small envs with alloy's conventions: seeding, batching, failures, interrupts, video."""

from __future__ import annotations

import json
import os

import gymnasium as gym
import numpy as np
import pytest

from training.errors import TrainingError
from training.evaluation import episode_seed, evaluate


class ToyReach(gym.Env):
    """A point that must reach a goal: Dict obs (state, goal), info is_success, a teacher, faults on demand.

    `fault` ("raise", "nan", "die", "reset_raise") strikes at step 3 (or at reset) of the episodes whose reset
    seed is even, so which episodes fail is known from the seeds alone.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, speed: float = 0.2, fault: str = "", max_steps: int = 40, render_mode=None):
        self.observation_space = gym.spaces.Dict({
            "state": gym.spaces.Box(-2, 2, (2,), np.float32),
            "goal": gym.spaces.Box(-2, 2, (2,), np.float32),
        })
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.speed, self.fault, self.max_steps, self.render_mode = speed, fault, max_steps, render_mode
        self.dt = 0.05
        self.faulty = False

    def _obs(self):
        return {"state": self.state.astype(np.float32), "goal": self.goal.astype(np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.faulty = seed is not None and seed % 2 == 0 and bool(self.fault)
        if self.faulty and self.fault == "reset_raise":
            raise RuntimeError("reset exploded")
        self.state = self.np_random.uniform(-1, 1, 2)
        self.goal = self.np_random.uniform(-1, 1, 2)
        self.t = 0
        return self._obs(), {"is_success": False}

    def step(self, action):
        self.t += 1
        if self.faulty and self.t == 3:
            if self.fault == "raise":
                raise RuntimeError("step exploded")
            if self.fault == "die":
                os._exit(3)
            if self.fault == "nan":
                self.state = np.array([np.nan, 0.0])
        self.state = self.state + self.speed * np.clip(action, -1, 1)
        dist = float(np.linalg.norm(self.goal - self.state))
        success = dist < 0.05
        return self._obs(), -dist, success, self.t >= self.max_steps, {"is_success": success}

    def teacher_action(self):
        return np.clip((self.goal - self.state) / self.speed, -1, 1).astype(np.float32)

    def render(self):
        img = np.zeros((24, 32, 3), np.uint8)
        x, y = ((np.clip(self.state, -1, 1) + 1) / 2 * [31, 23]).astype(int)
        img[y, x] = 255
        img[:, :, 2] = self.t * 5
        return img


class Proportional:
    """A deterministic policy: half the teacher's gain, so episodes differ in length but end in success."""

    obs_spec = {"state": (2,), "goal": (2,)}
    action_dim = 2

    def __init__(self, gain=2.5):
        self.gain, self.starts, self.calls, self._fresh = gain, [], 0, None

    def reset(self, mask=None):
        self._fresh = mask

    def act(self, obs):
        self.calls += 1
        batch = obs["state"].shape[0]
        fresh = np.ones(batch, bool) if self._fresh is None else np.asarray(self._fresh)
        for i in np.flatnonzero(fresh):
            self.starts.append(tuple(np.round(np.concatenate([obs["state"][i], obs["goal"][i]]), 6)))
        self._fresh = np.zeros(batch, bool)
        return np.clip(self.gain * (obs["goal"] - obs["state"]), -1, 1).astype(np.float32)


class Still(Proportional):
    """Never moves: every episode times out."""

    def act(self, obs):
        super().act(obs)
        return np.zeros_like(obs["state"])


def run(policy, tmp_path=None, **kw):
    args = dict(episodes=5, num_envs=2, seed=7, asynchronous=False, progress=False, env_fn=ToyReach)
    args.update(kw)
    return evaluate(policy, ["toy"], run_dir=tmp_path, **args)


def outcomes(report):
    return [(r["index"], r["seed"], r["success"], r["reason"], r["length"], round(r["return"], 9))
            for r in report["episode_records"]]


def faulty_indices(seed, n):
    return {i for i in range(n) if episode_seed(seed, i) % 2 == 0}


def test_teacher_succeeds_and_report_has_schema(tmp_path):
    report = run("teacher", tmp_path)
    overall = report["overall"]
    assert overall["episodes"] == 5 and overall["success_rate"] == 1.0
    assert overall["success_ci"][0] < 1.0 and overall["success_ci"][1] == 1.0
    assert report["per_env"]["toy"]["episodes"] == 5
    for key in ("p50", "p90", "p99"):
        assert report["latency_ms"]["per_call"][key] is not None
    assert report["env_steps"] == sum(r["length"] for r in report["episode_records"])
    assert report["env_steps_per_s"] > 0
    assert overall["time_to_success_mean"] == pytest.approx(overall["steps_to_success_mean"] * 0.05)
    assert report["config"]["seed"] == 7 and report["versions"]["gymnasium"]
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["overall"]["success_rate"] == 1.0 and not on_disk["partial"]
    assert "| toy | 5 |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "success.png").stat().st_size > 0 and (tmp_path / "latency.png").stat().st_size > 0


def test_same_seed_same_outcomes_whatever_the_worker_layout():
    a = run(Proportional(), num_envs=2)
    b = run(Proportional(), num_envs=2)
    c = run(Proportional(), num_envs=3)
    d = run(Proportional(), num_envs=1)
    assert outcomes(a) == outcomes(b)
    assert sorted(outcomes(a)) == sorted(outcomes(c)) == sorted(outcomes(d))
    assert [r["seed"] for r in a["episode_records"]] != [r["seed"] for r in run(Proportional(), seed=8)["episode_records"]]


@pytest.mark.parametrize("workers", [None, 1, 2, 3])
def test_every_process_layout_matches_sync(workers):
    """None: a group per core, this process stepping the first; 1-2: grouped workers only; 3: one process per env."""
    report = run(Proportional(), asynchronous=True, num_envs=3, workers=workers)
    assert sorted(outcomes(report)) == sorted(outcomes(run(Proportional())))
    assert report["config"]["vector_env"]["kind"] == ("async" if workers == 3 else "grouped")


def test_policy_threads_leave_the_worker_cores_free_and_are_restored():
    import torch

    class Counting(Proportional):
        def act(self, obs):
            self.threads = torch.get_num_threads()
            return super().act(obs)

    before, policy = torch.get_num_threads(), Counting()
    torch.set_num_threads(2)
    try:
        report = run(policy, asynchronous=True, num_envs=3, workers=3)  # 3 worker processes: no core left over
        assert policy.threads == 1 and report["config"]["policy_threads"] == 1 and torch.get_num_threads() == 2
        assert run(policy, asynchronous=False)["config"]["policy_threads"] == 2  # no workers: all threads
    finally:
        torch.set_num_threads(before)


def test_different_policies_see_the_same_initial_states():
    mover, still = Proportional(), Still()
    run(mover, episodes=4, num_envs=2)
    report = run(still, episodes=4, num_envs=3)
    assert sorted(mover.starts) == sorted(still.starts) and len(set(mover.starts)) == 4
    assert report["overall"]["failure_reasons"]["timeout"] == 4


def test_every_episode_counted_once_when_episodes_do_not_divide_envs():
    report = run(Proportional(), episodes=5, num_envs=4)
    assert sorted(r["index"] for r in report["episode_records"]) == list(range(5))


@pytest.mark.parametrize("asynchronous", [False, True])
@pytest.mark.parametrize("fault,reason", [("raise", "exception"), ("nan", "instability"), ("reset_raise", "exception")])
def test_faulty_episodes_fail_with_their_reason_and_evaluation_carries_on(fault, reason, asynchronous):
    n = 6
    report = run("teacher", episodes=n, num_envs=2, asynchronous=asynchronous, env_kwargs={"fault": fault})
    bad = faulty_indices(7, n)
    assert 0 < len(bad) < n
    by_index = {r["index"]: r for r in report["episode_records"]}
    assert sorted(by_index) == list(range(n))
    for i, r in by_index.items():
        assert r["success"] == (i not in bad)
        if i in bad:
            assert r["reason"] == reason and r["error"]
    assert report["overall"]["failure_reasons"][reason] == len(bad)


def test_worker_that_dies_fails_its_episode_and_the_others_are_replayed():
    n = 6
    report = run("teacher", episodes=n, num_envs=3, asynchronous=True, workers=3, env_kwargs={"fault": "die"})
    bad = faulty_indices(7, n)
    by_index = {r["index"]: r for r in report["episode_records"]}
    assert sorted(by_index) == list(range(n))
    for i in bad:
        assert by_index[i]["reason"] == "exception" and "worker process died" in by_index[i]["error"]
    reference = run("teacher", episodes=n, num_envs=3)
    good = [o for o in outcomes(reference) if o[0] not in bad]
    assert good == [o for o in sorted(outcomes(report)) if o[0] not in bad]


def test_grouped_worker_that_dies_fails_the_episodes_it_held_and_the_rest_carry_on():
    n = 6
    report = run("teacher", episodes=n, num_envs=4, asynchronous=True, workers=2, env_kwargs={"fault": "die"})
    assert report["config"]["vector_env"] == {"kind": "grouped", "groups": 2, "worker_processes": 2, "parent_steps": False}
    bad = faulty_indices(7, n)
    by_index = {r["index"]: r for r in report["episode_records"]}
    assert sorted(by_index) == list(range(n))
    failed = {i for i, r in by_index.items() if not r["success"]}
    assert bad <= failed  # a dead worker also takes the episode of the env it stepped beside the faulty one
    for i in failed:
        assert by_index[i]["reason"] == "exception" and "worker process died" in by_index[i]["error"]
    reference = {o[0]: o for o in outcomes(run("teacher", episodes=n, num_envs=3))}
    for i in set(range(n)) - failed:
        assert by_index[i]["success"] and reference[i][:3] == (i, by_index[i]["seed"], True)


class DivergingMujoco(gym.Env):
    """A real MuJoCo model whose motor is absurdly strong: the first push makes MuJoCo warn about bad qacc."""

    XML = """<mujoco><worldbody><body><joint name="j" type="slide"/><geom size="0.1" mass="1"/></body></worldbody>
             <actuator><motor joint="j" gear="1e14"/></actuator></mujoco>"""

    def __init__(self, render_mode=None):
        import mujoco

        self.model = mujoco.MjModel.from_xml_string(self.XML)
        self.data = mujoco.MjData(self.model)
        self.observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)})
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        import mujoco

        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        return {"state": np.concatenate([self.data.qpos, self.data.qvel])}, {}

    def step(self, action):
        import mujoco

        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data)
        return {"state": np.concatenate([self.data.qpos, self.data.qvel])}, 0.0, False, False, {"is_success": False}

    def teacher_action(self):
        return np.ones(1, np.float32)


def test_mujoco_divergence_is_an_instability_failure():
    report = evaluate("teacher", ["diverge"], episodes=2, num_envs=1, seed=0, asynchronous=False, progress=False,
                      env_fn=DivergingMujoco, max_episode_steps=50)
    assert report["overall"]["failure_reasons"]["instability"] == 2
    assert all("divergence" in r["error"] for r in report["episode_records"])


class Interrupting(Proportional):
    def act(self, obs):
        if self.calls == 60:
            raise KeyboardInterrupt
        return super().act(obs)


@pytest.mark.parametrize("asynchronous", [False, True])
def test_interrupt_writes_partial_report_of_finished_episodes(tmp_path, asynchronous):
    with pytest.raises(KeyboardInterrupt):
        run(Interrupting(gain=1.0), tmp_path, episodes=50, num_envs=2, asynchronous=asynchronous)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["partial"] is True
    finished = report["overall"]["episodes"]
    assert 0 < finished < 50 and len(report["episode_records"]) == finished


def test_video_is_written_tiled_and_readable(tmp_path):
    import imageio.v3 as iio

    report = run("teacher", tmp_path, episodes=4, num_envs=4, video=True, video_episodes=3, stop_on_success=False)
    assert report["files"]["videos"] == ["videos/toy.mp4"]
    frames = iio.imread(tmp_path / "videos" / "toy.mp4", index=None)
    longest = max(r["length"] for r in report["episode_records"] if r["index"] < 3)
    assert frames.shape == (longest + 1, 48, 64, 3)  # reset frame + one per step; 2x2 grid of 24x32 tiles


def test_env_kwargs_reach_the_env():
    slow = run(Proportional(), env_kwargs={"speed": 0.05})
    fast = run(Proportional())
    assert slow["overall"]["length_mean"] > fast["overall"]["length_mean"]
    assert slow["config"]["env_kwargs"] == {"speed": 0.05}


def test_max_episode_steps_and_stop_on_success():
    report = run(Still(), max_episode_steps=7)
    assert {r["length"] for r in report["episode_records"]} == {7}
    assert report["overall"]["failure_reasons"]["timeout"] == 5


class WrongObs(Proportional):
    obs_spec = {"state": (3,), "goal": (2,)}


class WrongAction(Proportional):
    action_dim = 4


class WrongBatch(Proportional):
    obs_spec = None
    action_dim = None

    def act(self, obs):
        return np.zeros((1, 2), np.float32)


def test_spec_mismatch_names_both_shapes():
    with pytest.raises(TrainingError, match=r"state: \(3,\).*state: \(2,\)"):
        run(WrongObs())
    with pytest.raises(TrainingError, match=r"action \(4,\), the env takes \(2,\)"):
        run(WrongAction())
    with pytest.raises(TrainingError, match=r"shape \(1, 2\).*\(2, 2\)"):
        run(WrongBatch())


@pytest.mark.parametrize("kw", [{"episodes": 0}, {"episodes": -3}, {"num_envs": 0}, {"num_envs": -1}])
def test_non_positive_counts_are_rejected(kw):
    with pytest.raises(TrainingError, match="positive"):
        run(Proportional(), **kw)


def test_grouped_infos_merge_in_env_order_with_masks():
    from envs.grouped_vector import _merge_infos

    a = {"x": np.array([1, 2]), "_x": np.array([True, True]), "d": {"y": np.array([5.0, 6.0]), "_y": np.array([True, False])}}
    b = {"z": np.array(["s"], dtype=object), "_z": np.array([True])}
    merged = _merge_infos([a, b], [2, 1])
    assert merged["x"].tolist() == [1, 2, 0] and merged["_x"].tolist() == [True, True, False]
    assert merged["z"].tolist() == [None, None, "s"] and merged["_z"].tolist() == [False, False, True]
    assert merged["d"]["_y"].tolist() == [True, False, False]
    same = _merge_infos([{"x": np.array([1]), "_x": np.array([True])}, {"x": np.array([2]), "_x": np.array([False])}], [1, 1])
    assert same["x"].tolist() == [1, 2] and same["_x"].tolist() == [True, False]
