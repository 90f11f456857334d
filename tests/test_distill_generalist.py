"""`alloy distill`: labels come from the specialist of each env's robot while the student acts, the beta schedule,
the descriptor reaches the student, KL against a closed form, resume of an interrupted run, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alloy import cli
from distill.config import BetaSchedule
from distill.generalist import beta_for_round
from distill.objectives import GaussianDistillation, gaussian_kl
from policies.interface import observation_for

HOLO, DIFF = "alloy/Nav-Holonomic-v0", "alloy/Nav-Diffdrive-v0"


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


class ConstantPolicy:
    """Says the same action everywhere; counts the rows it was asked about."""

    obs_spec = None

    def __init__(self, value: float, action_dim: int = 3):
        self.value, self.action_dim, self.rows = value, action_dim, 0
        self.last_std = None

    def reset(self, mask=None):
        pass

    def act(self, obs):
        n = len(next(iter(obs.values())))
        self.rows += n
        self.last_std = np.full((n, self.action_dim), 0.1 * abs(self.value) + 0.01, np.float32)
        return np.full((n, self.action_dim), self.value, np.float32)


def test_beta_schedules():
    lin = BetaSchedule(kind="linear", start=1.0, end=0.0)
    assert [beta_for_round(lin, r, 5) for r in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    short = BetaSchedule(kind="linear", start=0.8, end=0.2, rounds_to_end=2)
    assert [round(beta_for_round(short, r, 5), 6) for r in range(5)] == [1.0, 0.5, 0.2, 0.2, 0.2]
    exp = BetaSchedule(kind="exponential", start=1.0, end=0.1, decay=0.5)
    assert [beta_for_round(exp, r, 5) for r in range(5)] == [1.0, 0.5, 0.25, 0.125, 0.1]


def test_labels_come_from_each_robots_specialist_while_the_student_drives():
    """A multi-robot rollout: the router labels every state of a robot's slots with that robot's specialist."""
    from gymnasium.vector import AutoresetMode

    from envs.vector import make_vec_env
    from training.collect import episode_seed
    from training.evaluation.guard import RolloutGuard
    from training.rollout import EpisodeRecorder, RolloutEngine
    from training.rollout.engine import EpisodeTask, Mixing
    from training.rollout.routed import RoutedPolicy

    slots = [HOLO, HOLO, DIFF, DIFF]
    router = RoutedPolicy([ConstantPolicy(0.25), ConstantPolicy(-0.5)], [0, 0, 1, 1], std_floor=0.05)
    student = ConstantPolicy(0.0)
    recorder = EpisodeRecorder()

    def make():
        return make_vec_env(slots, 4, 0, False, wrappers=(RolloutGuard,), autoreset_mode=AutoresetMode.DISABLED,
                            time_limit=2.0)

    tasks = [EpisodeTask(j * 3 + e, episode_seed(0, env, j * 3 + e), env_id=env)
             for j, env in enumerate((HOLO, DIFF)) for e in range(3)]
    engine = RolloutEngine(student, "robots", make, 4, labeller=router, mixing=Mixing(router, 0.5),
                           hooks=(recorder,), slot_env_ids=slots)
    with engine:
        results = engine.run(tasks)
    assert sorted(r.env_id for r in results) == [DIFF] * 3 + [HOLO] * 3
    episodes = recorder.sorted_episodes()
    assert len(episodes) == 6
    drivers = set()
    for ep in episodes:
        want = 0.25 if ep.infos["env_id"] == HOLO else -0.5
        assert np.all(ep.infos["labels"] == want)  # the robot's own specialist, whoever drove
        np.testing.assert_allclose(ep.infos["label_std"], max(0.1 * abs(want) + 0.01, 0.05), rtol=1e-6)  # floored
        executed = 0.0 if ep.infos["driver"] == "A" else want
        assert np.all(ep.actions == executed)
        drivers.add(ep.infos["driver"])
    assert drivers == {"A", "B"}  # with beta 0.5 both drove some episodes (drawn from the seeds)
    # each specialist was only ever asked about its own robot's two slots
    assert router.policies[0].rows == router.policies[1].rows


def test_kl_matches_the_closed_form_and_taid_ends_at_kl():
    mp, sp, mq, sq = torch.tensor([0.3]), torch.tensor([0.2]), torch.tensor([-0.1]), torch.tensor([0.5])
    closed = np.log(0.5 / 0.2) + (0.2 ** 2 + 0.4 ** 2) / (2 * 0.5 ** 2) - 0.5
    assert float(gaussian_kl(mp, sp, mq, sq)) == pytest.approx(closed, rel=1e-6)
    assert float(gaussian_kl(mq, sq, mq, sq)) == pytest.approx(0.0, abs=1e-7)

    class Student:  # a Gaussian "policy" with mean m and log std s
        def __init__(self):
            self.m = torch.zeros(1, 2, 3, requires_grad=True)
            self.s = torch.full((1, 2, 3), -1.0, requires_grad=True)

        def action_distribution(self, batch, rs=None):
            return self.m, self.s

        def normalize_actions(self, a, std=None):
            return a, std

    batch = {"action": torch.full((1, 2, 3), 0.5), "action_std": torch.full((1, 2, 3), 0.2)}
    st = Student()
    kl, _ = GaussianDistillation("kl", 10).loss(st, batch, None)
    want = gaussian_kl(torch.tensor(0.5), torch.tensor(0.2), torch.tensor(0.0), torch.exp(torch.tensor(-1.0)))
    assert float(kl.detach()) == pytest.approx(float(want), rel=1e-6)
    taid = GaussianDistillation("taid", 10)
    taid.t = 1.0
    loss, parts = taid.loss(st, batch, None)
    assert float(loss.detach()) == pytest.approx(float(kl.detach()), rel=1e-5)
    loss.backward()
    assert st.m.grad is not None and st.m.grad.abs().sum() > 0
    # the schedule never falls behind its linear ramp and ends at t_end
    taid = GaussianDistillation("taid", 10)
    ts = []
    for _ in range(10):
        taid._last_loss = 1.0
        taid.after_step()
        ts.append(taid.t)
    assert ts == sorted(ts) and ts[-1] == pytest.approx(1.0) and ts[0] >= 0.4


@pytest.fixture(scope="module")
def tiny_specialist(nav_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("spec")
    assert cli.main(["rl", f"base={nav_base}", f"env={DIFF}", "total_steps=32", "ppo.n_steps=32", "ppo.batch_size=32",
                     "ppo.n_epochs=1", "num_envs=1", "eval_every=0", "ckpt_every=0", "final_eval_episodes=0",
                     "eval_num_envs=1", "eval_episodes=1", "progress=false", "device=cpu",
                     "+randomize.mass=[6.0,10.0]", f"hydra.run.dir={root}"]) == 0
    return root / "checkpoints" / "last"


def distill_args(nav_base, spec, run_dir, *extra):
    return ["distill", f'specialists=["{HOLO}={nav_base}","{spec}"]', "rounds=2", "episodes_per_round=1",
            "steps_per_round=6", "envs_per_robot=1", "eval_episodes=1", "eval_num_envs=2", "compare=false",
            "trainer.batch_size=16", "trainer.progress=false", "progress=false", "device=cpu",
            "trainer.ckpt_every=3", f"hydra.run.dir={run_dir}", *extra]


def test_distill_runs_resumes_and_the_descriptor_reaches_the_student(nav_base, tiny_specialist, tmp_path):
    run_dir = tmp_path / "run"
    assert cli.main(distill_args(nav_base, tiny_specialist, run_dir)) == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert set(report["robots"]) == {HOLO, DIFF}
    assert (run_dir / "rounds" / "round_000.npz").is_file() and (run_dir / "rounds" / "round_001.npz").is_file()
    from training.evaluation import load_policy

    student = load_policy(run_dir / "checkpoints" / "last", "cpu")
    assert "embodiment" in student.obs_spec
    # changing only the descriptor changes the action
    from test_rl_residual import observations

    obs = observations(DIFF, 2)
    a = student.act(observation_for(student, obs))
    student.reset()
    other = {k: v.copy() for k, v in obs.items()}
    other["embodiment"][:, :4] = [1.0, 0.0, 0.0, 0.0]  # the holonomic one-hot
    assert not np.allclose(a, student.act(observation_for(student, other)))

    # resume: a run killed after its first round continues from the saved round and checkpoint
    state = json.loads((run_dir / "checkpoints" / "last" / "train_state.json").read_text())
    assert state["step"] == 12
    resumed = tmp_path / "resumed"
    assert cli.main(distill_args(nav_base, tiny_specialist, resumed, "rounds=1")) == 0
    assert not (resumed / "rounds" / "round_001.npz").exists()
    assert cli.main(distill_args(nav_base, tiny_specialist, resumed, "resume=true")) == 0
    assert (resumed / "rounds" / "round_001.npz").is_file()
    assert json.loads((resumed / "checkpoints" / "last" / "train_state.json").read_text())["step"] == 12
    # round 0's data was not collected again: the saved file is unchanged
    assert (resumed / "rounds" / "round_000.npz").read_bytes() == (run_dir / "rounds" / "round_000.npz").read_bytes()


@pytest.mark.parametrize("extra, words", [
    (["specialists=[]"], ["no specialists"]),
    (["student=dit_stream", "policy.obs_keys=[goal,lidar]"], ["embodiment"]),
    (["objective=kl", "student=dit_stream"], ["Gaussian student"]),
    (["method=online"], ["online", "dagger"]),
])
def test_bad_input_is_one_line_and_writes_nothing(nav_base, tiny_specialist, tmp_path, capsys, extra, words):
    run_dir = tmp_path / "run"
    assert cli.main(distill_args(nav_base, tiny_specialist, run_dir, *extra)) == 2
    line = one_error_line(capsys)
    assert all(w in line for w in words), line
    assert not run_dir.exists()


def test_two_specialists_for_one_robot_and_mismatched_specs(nav_base, tiny_specialist, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = distill_args(nav_base, tiny_specialist, run_dir)
    args[1] = f'specialists=["{HOLO}={nav_base}","{tiny_specialist}","{tiny_specialist}"]'
    assert cli.main(args) == 2
    assert "keep one" in one_error_line(capsys)
    args[1] = f'specialists=["{nav_base}"]'
    assert cli.main(args) == 2
    assert "does not record which robot" in one_error_line(capsys)
    args[1] = f'specialists=["metaworld/reach-v3={nav_base}","{tiny_specialist}"]'
    assert cli.main(args) == 2
    assert "metaworld/reach-v3" in one_error_line(capsys)
    assert not run_dir.exists()
