"""No vector env hangs alloy: rendering workers after the parent rendered, and workers that stop answering.

The first test is the reported hang: `alloy eval policy=teacher env=nav num_envs=2 video=true` wrote the first
robot's video and then waited forever, the second robot's worker (forked after this process had rendered with
OSMesa) blocked in its first GL call. The others check the timeouts that catch any stuck worker.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time

import gymnasium as gym
import numpy as np
import pytest

from envs.errors import EnvError, WorkerTimeout
from envs.grouped_vector import GroupedVectorEnv, worker_timeouts
from envs.rendering import headless_gl_backend, worker_start_method
from envs.vector import TimedAsyncVectorEnv, make_vec_env


# ------------------------------------------------------------------------------------------------ the reported hang
@pytest.mark.timeout(150)
@pytest.mark.parametrize("workers", [None, 2], ids=["grouped-local", "async"])
def test_eval_with_video_over_every_nav_robot_finishes(tmp_path, monkeypatch, workers):
    from envs import nav
    from training.evaluation import evaluate

    # the reported layout (one group per core, the first in this process) on any machine; a regression must fail
    # here, not wait for the default start timeout
    monkeypatch.setattr("envs.vector.available_cores", lambda: 2)
    monkeypatch.setenv("ALLOY_WORKER_START_TIMEOUT", "40")
    t0 = time.monotonic()
    report = evaluate("teacher", list(nav.ENV_IDS), episodes=2, num_envs=2, seed=0, video=True, run_dir=tmp_path,
                      progress=False, max_episode_steps=4, workers=workers,
                      env_kwargs={"render_width": 48, "render_height": 48})
    elapsed = time.monotonic() - t0
    expected = {"grouped": {"kind": "grouped", "groups": 2, "worker_processes": 1, "parent_steps": True},
                "async": {"kind": "async", "groups": 2, "worker_processes": 2, "parent_steps": False}}
    assert report["config"]["vector_env"] == expected["grouped" if workers is None else "async"]
    records = report["episode_records"]
    assert len(records) == 2 * len(nav.ENV_IDS)
    assert not [r for r in records if r["error"]], "an episode failed: a worker hung or died"
    assert len(report["files"]["videos"]) == len(nav.ENV_IDS)
    for video in report["files"]["videos"]:
        assert (tmp_path / video).stat().st_size > 0
    assert elapsed < 120


def test_rendering_workers_never_fork():
    assert worker_start_method(None, renders=True) in ("forkserver", "spawn")
    assert worker_start_method(None, renders=False) is None  # the platform default, as before
    assert worker_start_method("fork", renders=True) == "fork"  # an explicit choice is kept


@pytest.mark.parametrize("env, nvidia, expected", [
    ({"MUJOCO_GL": "glfw", "DISPLAY": ""}, True, "glfw"),
    ({"MUJOCO_GL": "EGL "}, False, "egl"),
    ({"MUJOCO_GL": "", "DISPLAY": ":0"}, True, None),
    ({"MUJOCO_GL": "", "DISPLAY": ""}, True, "egl"),
    ({"MUJOCO_GL": "", "DISPLAY": ""}, False, "osmesa"),
])
def test_one_headless_gl_rule(monkeypatch, env, nvidia, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setattr("envs.rendering.nvidia_driver_present", lambda: nvidia)
    assert headless_gl_backend() == expected


# ------------------------------------------------------------------------------------------------ stuck workers
class Sticky(gym.Env):
    """A trivial env that can block forever: in `__init__` (in a worker) or at step 2 of the episode whose
    worker claims `hang_file` first (removing it), so exactly one episode of a run gets stuck."""

    metadata = {"render_modes": []}

    def __init__(self, hang_file: str = "", hang_in_init: bool = False, render_mode=None):
        self.observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-1, 1, (2,), np.float32)})
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.hang_file = hang_file
        if hang_in_init and multiprocessing.parent_process() is not None:
            time.sleep(3600)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return {"state": np.zeros(2, np.float32)}, {"is_success": False}

    def step(self, action):
        self.t += 1
        if self.t == 2 and self.hang_file and multiprocessing.parent_process() is not None:
            try:
                os.unlink(self.hang_file)
            except FileNotFoundError:
                pass
            else:
                time.sleep(3600)  # stuck, as in a GL call that never returns
        return {"state": np.zeros(2, np.float32)}, 0.0, False, self.t >= 6, {"is_success": False}

    def teacher_action(self):
        return np.zeros(2, np.float32)


def _sticky_vec(tmp_path, workers, **kw):
    hang = tmp_path / "hang"
    hang.touch()
    vec = make_vec_env("sticky", 2, 0, workers=workers, env_fn=Sticky, hang_file=str(hang), worker_timeout=1.0,
                       context="fork", **kw)
    return vec


@pytest.mark.timeout(30)
@pytest.mark.parametrize("workers", [1, 2], ids=["grouped", "async"])
def test_stuck_worker_is_killed_and_named(tmp_path, workers):
    vec = _sticky_vec(tmp_path, workers)
    assert isinstance(vec, GroupedVectorEnv if workers == 1 else TimedAsyncVectorEnv)
    vec.reset(seed=0)
    vec.step(np.zeros((2, 2), np.float32))
    t0 = time.monotonic()
    with pytest.raises(WorkerTimeout) as caught:
        vec.step(np.zeros((2, 2), np.float32))
    assert time.monotonic() - t0 < 10
    e = caught.value
    assert isinstance(e, EnvError) and e.command == "step" and e.timeout_s == 1.0
    assert "gave no answer to 'step' within 1 s and was killed" in str(e) and e.reason == str(e)
    # what a rollout loop reads to fail the lost envs: the stuck worker is dead, and it held these envs
    for w in e.workers:
        assert not vec.processes[w].is_alive() and vec.processes[w].exitcode is not None
    assert list(e.env_indices) == [i for i, w in enumerate(vec.env_workers) if w in e.workers]
    assert e.env_indices and set(e.workers) <= set(vec.worker_failures)
    t0 = time.monotonic()
    vec.close()  # does not wait for the dead worker
    assert time.monotonic() - t0 < 10
    assert not any(p.is_alive() for p in vec.processes)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("workers", [1, 2], ids=["grouped", "async"])
def test_worker_stuck_while_building_its_envs_fails_construction(workers):
    t0 = time.monotonic()
    with pytest.raises(WorkerTimeout) as caught:
        make_vec_env("sticky", 2, 0, workers=workers, env_fn=Sticky, hang_in_init=True, worker_timeout=1.0,
                     worker_start_timeout=1.5, context="fork")
    assert time.monotonic() - t0 < 15
    assert caught.value.timeout_s == 1.5 and caught.value.command == "start"
    assert "ALLOY_WORKER_START_TIMEOUT" in str(caught.value)


@pytest.mark.timeout(45)
def test_eval_fails_the_stuck_episode_with_a_reason_and_returns(tmp_path, monkeypatch):
    from training.evaluation import evaluate

    hang = tmp_path / "hang"
    hang.touch()
    monkeypatch.setenv("ALLOY_WORKER_TIMEOUT", "1.5")
    t0 = time.monotonic()
    report = evaluate("teacher", ["sticky"], episodes=4, num_envs=2, seed=0, progress=False, workers=2,
                      env_fn=Sticky, env_kwargs={"hang_file": str(hang)})
    assert time.monotonic() - t0 < 30
    records = report["episode_records"]
    assert sorted(r["index"] for r in records) == [0, 1, 2, 3]
    failed = [r for r in records if r["error"]]
    assert len(failed) == 1, records
    assert failed[0]["reason"] == "exception" and "gave no answer to 'step'" in failed[0]["error"]
    assert not hang.exists()


def test_timeouts_are_configurable_and_checked(monkeypatch):
    monkeypatch.delenv("ALLOY_WORKER_TIMEOUT", raising=False)
    monkeypatch.delenv("ALLOY_WORKER_START_TIMEOUT", raising=False)
    assert worker_timeouts() == (60.0, 180.0)
    assert worker_timeouts(300) == (300.0, 300.0)  # the default start limit is never the shorter one
    assert worker_timeouts(5, 2) == (5.0, 2.0)
    assert worker_timeouts(math.inf, math.inf) == (None, None)
    monkeypatch.setenv("ALLOY_WORKER_TIMEOUT", "none")
    monkeypatch.setenv("ALLOY_WORKER_START_TIMEOUT", "30")
    assert worker_timeouts() == (None, 30.0)
    with pytest.raises(EnvError, match="positive"):
        worker_timeouts(0)
    with pytest.raises(EnvError, match="seconds"):
        worker_timeouts("soon")
