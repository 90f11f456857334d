"""The one rollout engine: labelled rollouts (DAgger), per-episode mixing, the recorder, in-memory datasets."""

import functools

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from envs import make_env
from envs.vector import make_vec_env
from training.data import MemoryEpisodes, WindowDataset
from training.evaluation import TeacherPolicy
from training.evaluation.guard import RolloutGuard
from training.rollout import EpisodeRecorder, EpisodeTask, Mixing, RolloutEngine, episode_seed, mix_draw

ENV = "alloy/Nav-Diffdrive-v0"
SHORT = {"max_episode_steps": 25}


class Const:
    """Drives every env with one fixed command."""

    obs_spec = None
    action_dim = 3

    def __init__(self, value):
        self.value = np.asarray(value, dtype=np.float32)
        self.resets = []

    def reset(self, mask=None):
        self.resets.append(None if mask is None else np.asarray(mask).copy())

    def act(self, obs):
        return np.tile(self.value, (len(next(iter(obs.values()))), 1))


def engine(policy, num_envs=3, asynchronous=True, **kw):
    make = functools.partial(make_vec_env, ENV, num_envs, 0, asynchronous, wrappers=(functools.partial(
        RolloutGuard, keep_info=False),), autoreset_mode=AutoresetMode.DISABLED, **SHORT)
    return RolloutEngine(policy, ENV, make, num_envs, **kw)


def tasks(n, seed=0):
    return [EpisodeTask(i, episode_seed(seed, i)) for i in range(n)]


def test_labels_come_from_each_envs_teacher_while_another_policy_drives():
    """A DAgger rollout with the nav planner as labeller: the recorded labels are exactly what that episode's own
    env's teacher says in each visited state (checked by replaying the executed actions in a fresh env)."""
    driver = Const([0.3, 0.0, 0.4])
    recorder = EpisodeRecorder()
    with engine(driver, labeller=TeacherPolicy(), hooks=[recorder]) as e:
        results = e.run(tasks(5))
    assert sorted(r.index for r in results) == list(range(5))
    episodes = recorder.sorted_episodes()
    assert len(episodes) == 5
    for ep in episodes:
        assert np.all(ep.actions == driver.value)  # the other policy acted
        labels = ep.infos["labels"]
        assert labels.shape == ep.actions.shape and not np.allclose(labels, driver.value)
        env = make_env(ENV, **SHORT)
        obs, _ = env.reset(seed=ep.seed)
        np.testing.assert_array_equal(obs["state"], ep.observations["state"][0])
        for t, action in enumerate(ep.actions):
            np.testing.assert_array_equal(env.unwrapped.teacher_action(), labels[t])
            obs, *_ = env.step(action)
            np.testing.assert_array_equal(obs["state"], ep.observations["state"][t + 1])
        env.close()


def test_mixing_picks_the_driver_per_episode_from_its_seed():
    a, b = Const([0.0, 0.0, 0.0]), Const([0.5, 0.0, 0.0])
    recorder = EpisodeRecorder()
    with engine(a, num_envs=2, asynchronous=False, mixing=Mixing(b, beta=0.5), hooks=[recorder]) as e:
        e.run(tasks(8, seed=3))
    drivers = []
    for ep in recorder.sorted_episodes():
        want = "B" if mix_draw(0.5, ep.seed) else "A"
        assert ep.infos["driver"] == want
        assert np.all(ep.actions == (b.value if want == "B" else a.value))
        drivers.append(want)
    assert set(drivers) == {"A", "B"}  # 8 episodes at beta 0.5: both drove
    assert all(not mix_draw(0.0, s) and mix_draw(1.0, s) for s in range(20))
    with pytest.raises(ValueError, match="beta must be in"):
        Mixing(b, beta=1.5)


def test_labeller_that_also_drives_acts_once_per_step():
    """DAgger's expert both labels and (with probability beta) drives: it is called once per step, and where it
    drives the executed action is its label."""
    calls = []

    class Counting(TeacherPolicy):
        def act(self, obs):
            calls.append(1)
            return super().act(obs)

    student, teacher = Const([0.1, 0.1, 0.0]), Counting()
    recorder = EpisodeRecorder()
    with engine(student, num_envs=2, asynchronous=False, labeller=teacher, mixing=Mixing(teacher, beta=0.5),
                hooks=[recorder]) as e:
        e.run(tasks(6, seed=1))
    steps = e.stats.call_ms.__len__() + len(e.stats.first_call_ms)
    assert len(calls) == steps
    for ep in recorder.episodes:
        if ep.infos["driver"] == "B":
            np.testing.assert_array_equal(ep.actions, ep.infos["labels"])


def test_in_memory_episodes_window_like_a_dataset_and_grow_between_rounds():
    recorder = EpisodeRecorder()
    with engine(Const([0.2, 0.0, 0.0]), num_envs=2, asynchronous=False, labeller=TeacherPolicy(),
                hooks=[recorder]) as e:
        e.run(tasks(4))
    eps = recorder.sorted_episodes()
    source = MemoryEpisodes("dagger", eps[:2], actions="labels")
    ds = WindowDataset([source], obs_horizon=2, pred_horizon=4)
    n0 = len(ds)
    assert n0 == sum(len(x) for x in eps[:2])
    batch = ds.gather([0])
    np.testing.assert_array_equal(batch["action"][0, 1], eps[0].infos["labels"][0])  # labels, not executed actions
    ds.extend("dagger", eps[2:])
    assert len(ds) == sum(len(x) for x in eps) and ds.samples_per_dataset.tolist() == [len(ds)]
    assert set(ds.stats) >= {"action", "state"}
    with pytest.raises(ValueError, match="no in-memory source named"):
        ds.extend("other", eps)
    with pytest.raises(ValueError, match="no labels"):
        WindowDataset([MemoryEpisodes("x", [_without_labels(eps[0])], actions="labels")], 2, 4)


def _without_labels(ep):
    import dataclasses

    return dataclasses.replace(ep, infos={})


def test_policy_interface_is_one_protocol():
    from policies import PolicyLike

    assert isinstance(TeacherPolicy(), PolicyLike) and isinstance(Const([0, 0, 0]), PolicyLike)
    assert not isinstance(object(), PolicyLike)
