"""Residual RL (`alloy rl`): the specialist starts as its base, the base stays frozen, the residual's scale and the
exploration schedule are honoured, checkpoints round-trip and resume, PPO and SAC train, bad input is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alloy import cli
from policies.interface import observation_for
from policies.residual import ResidualPolicy
from training.evaluation import load_policy
from training.rl.config import RLConfig
from training.rl.train import ResidualRL
from training.rl.vec_env import ResidualVecEnv, exploration_probability

ENV = "alloy/Nav-Diffdrive-v0"
FAST = ["num_envs=1", "eval_num_envs=1", "eval_episodes=2", "final_eval_episodes=0", "progress=false", "device=cpu",
        "ppo.n_steps=32", "ppo.batch_size=32", "ppo.n_epochs=2"]


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


def observations(env_id: str, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    import gymnasium as gym

    import envs  # noqa: F401

    env = gym.make(env_id)
    rows = []
    for i in range(n):
        obs, _ = env.reset(seed=seed + i)
        rows.append(obs)
    env.close()
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def rl_run(base, tmp_path, **overrides) -> ResidualRL:
    cfg = RLConfig(base=str(base), env=ENV, num_envs=2, workers=None, eval_num_envs=1, progress=False, device="cpu")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return ResidualRL(cfg, tmp_path / "run")


def test_exploration_probability_rises_to_one():
    assert exploration_probability(0, 0) == 1.0  # no ramp: always the residual
    assert [exploration_probability(t, 100) for t in (0, 25, 50, 100, 1000)] == [0.0, 0.25, 0.5, 1.0, 1.0]


def test_the_specialist_starts_as_its_base_and_the_scale_is_honoured(nav_base, tmp_path):
    run = rl_run(nav_base, tmp_path)
    obs = observations(ENV, 4)
    from training.rl.algos import build_model

    venv = ResidualVecEnv(run.make_vec, run.base, run.obs_dims,
                          np.concatenate([run.obs_scale[k] for k in run.obs_dims]), 0.5, seed=0)
    try:
        for algo in ("ppo", "sac"):
            run.cfg.algo = algo
            run.spec = run.spec.__class__(**{**run.spec.to_dict(), "algo": algo, "squash": algo == "sac",
                                             "state_std": algo == "sac",
                                             "activation": "tanh" if algo == "ppo" else "relu"})
            model = build_model(algo, venv, run.cfg.net, run.cfg.ppo, run.cfg.sac, 0, "cpu")
            specialist = run.specialist(model)
            reference = load_policy(nav_base, "cpu")
            torch.manual_seed(0)  # the base samples its initial noise from torch's generator
            got = specialist.act(obs)
            torch.manual_seed(0)
            want = np.clip(reference.act(observation_for(reference, obs)), -1.0, 1.0)
            np.testing.assert_array_equal(got, want)  # at step 0 the specialist acts as its base
            # SB3's own deterministic action is the zero residual too
            features = venv.reset()
            action, _ = model.predict(features, deterministic=True)
            assert np.abs(action).max() == 0.0
    finally:
        venv.close()

    # the scale multiplies the residual: a constant residual of 0.5 moves every action by scale * 0.5
    actor = run.specialist(model).actor
    with torch.no_grad():
        actor.mu.bias.fill_(0.5 if not actor.spec.squash else float(np.arctanh(0.5)))
    for scale in (0.1, 0.4):
        actor.spec.scale = scale
        policy, reference = ResidualPolicy(load_policy(nav_base, "cpu"), actor), load_policy(nav_base, "cpu")
        torch.manual_seed(1)  # (building a policy draws initial weights from the generator too)
        got = policy.act(obs)
        torch.manual_seed(1)
        want = np.clip(reference.act(observation_for(reference, obs)) + scale * 0.5, -1.0, 1.0)
        np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_an_asymmetric_critic_sees_the_privileged_values_and_the_actor_does_not(nav_base, tmp_path, algo):
    from training.rl.algos import build_model

    run = rl_run(nav_base, tmp_path, critic_privileged=True, algo=algo)
    assert run.privileged == 4  # nav: geodesic distance, its descent direction (cos, sin), elapsed time
    scale = np.concatenate([run.obs_scale[k] for k in run.obs_dims])
    venv = ResidualVecEnv(run.make_vec, run.base, run.obs_dims, scale, 1.0, seed=0, privileged=run.privileged)
    try:
        features = venv.reset()
        width = run.spec.feature_dim
        assert features.shape == (2, width + 4)
        np.testing.assert_array_less(0.0, features[:, width])  # the distance to the goal
        features, *_ = venv.step(np.zeros((2, 3), dtype=np.float32))
        np.testing.assert_allclose(features[:, -1], 1 / 300)  # one step of the 30 s limit at 10 Hz
        model = build_model(algo, venv, run.cfg.net, run.cfg.ppo, run.cfg.sac, 0, "cpu", privileged=run.privileged)
    finally:
        venv.close()
    torch.manual_seed(0)
    for p in model.policy.parameters():  # a random actor and critic, so both depend on their inputs
        p.data.normal_(0.0, 0.3)
    obs = torch.as_tensor(features)
    changed = obs.clone()
    changed[:, width:] += torch.tensor([0.5, -1.0, 1.0, 0.3])
    with torch.no_grad():
        if algo == "ppo":
            act = lambda x: model.policy.get_distribution(x).distribution.mean  # noqa: E731
            value = model.policy.predict_values
        else:
            act = lambda x: model.actor(x, deterministic=True)  # noqa: E731
            value = lambda x: model.critic(x, torch.zeros(len(x), 3))[0]  # noqa: E731
        torch.testing.assert_close(act(obs), act(changed))  # the actor cannot see them
        assert not torch.allclose(value(obs), value(changed))  # the critic does
        # the specialist is that actor on the observation alone, the privileged inputs' weights dropped
        run.vecnorm = None
        specialist = run.specialist(model)
        mean, _ = specialist.actor(obs[:, :width])
        if algo == "sac":
            mean = torch.tanh(mean)
        torch.testing.assert_close(mean, act(obs), atol=1e-5, rtol=1e-5)


class CountingBase:
    """A deterministic base with per-env state: its action depends on the steps since the env's last reset."""

    obs_spec = {"goal": (2,)}
    action_dim = 3

    def __init__(self):
        self.count = None

    def reset(self, mask=None):
        if mask is None or self.count is None:
            self.count = None
        else:
            self.count[np.asarray(mask, dtype=bool)] = 0

    def act(self, obs):
        goal = np.asarray(obs["goal"], dtype=np.float32)
        if self.count is None:
            self.count = np.zeros(len(goal))
        self.count += 1
        t = self.count[:, None] * np.array([0.05, -0.03, 0.02])
        return np.tanh(t + goal[:, :1] * np.array([0.3, 0.1, -0.2])).astype(np.float32)


def counting_base(group: int) -> CountingBase:
    return CountingBase()


@pytest.mark.parametrize("workers", [None, 2])
def test_the_base_acting_in_the_env_groups_acts_as_it_does_here(workers):
    """With a group policy every group of envs carries its own copy of the base: the residual env must see exactly
    what it sees when one base acts here for all envs, through episodes ending and restarting in every group."""
    from envs.vector import make_vec_env
    from training.rl.train import obs_layout

    def make(group: bool):
        def build():
            from gymnasium.vector import AutoresetMode

            return make_vec_env(ENV, 4, 0, True, autoreset_mode=AutoresetMode.DISABLED, workers=workers,
                                time_limit=2.0, group_policy=counting_base if group else None)
        return build

    import gymnasium as gym

    import envs  # noqa: F401

    probe = gym.make(ENV)
    dims, scales = obs_layout(probe.observation_space, [])
    probe.close()
    scale = np.concatenate([scales[k] for k in dims])
    here = ResidualVecEnv(make(False), CountingBase(), dims, scale, 0.5, seed=3)
    grouped = ResidualVecEnv(make(True), None, dims, scale, 0.5, seed=3)
    try:
        assert grouped.group_base and not here.group_base
        np.testing.assert_array_equal(grouped.reset(), here.reset())
        rng = np.random.default_rng(0)
        finished = 0
        for _ in range(45):
            action = rng.uniform(-1, 1, (4, 3)).astype(np.float32)
            got, want = grouped.step(action), here.step(action)
            for a, b in zip(got[:3], want[:3]):  # features, rewards, dones
                np.testing.assert_array_equal(a, b)
            for ia, ib in zip(got[3], want[3]):
                if "terminal_observation" in ib:
                    np.testing.assert_array_equal(ia["terminal_observation"], ib["terminal_observation"])
            finished += int(got[2].sum())
        assert finished >= 4  # every env restarted at least once (2 s episodes)
    finally:
        grouped.close()
        here.close()


def test_a_group_policy_refuses_a_reset_of_envs_that_did_not_finish():
    from gymnasium.vector import AutoresetMode

    from envs.grouped_vector import POLICY_ACTION
    from envs.vector import make_vec_env

    vec = make_vec_env(ENV, 2, 0, False, autoreset_mode=AutoresetMode.DISABLED, group_policy=counting_base)
    try:
        _, info = vec.reset(seed=[0, 1])
        assert info[POLICY_ACTION].shape == (2, 3)
        with pytest.raises(RuntimeError, match="did not finish"):
            vec.reset(seed=[None, None], options={"reset_mask": np.array([True, False])})
    finally:
        vec.close()


def test_gsde_specialist_has_sb3s_mean_and_state_dependent_std(nav_base, tmp_path):
    """With `ppo.use_sde` the extracted actor gives SB3's own action distribution: the same mean and the same
    state-dependent std, and the specialist still starts as its base (zero mean residual)."""
    from training.rl.algos import build_model, extract_actor

    run = rl_run(nav_base, tmp_path)
    run.cfg.ppo.use_sde, run.cfg.ppo.log_std_init = True, -2.0
    run.spec = run.spec.__class__(**{**run.spec.to_dict(), "sde": True})
    venv = ResidualVecEnv(run.make_vec, run.base, run.obs_dims,
                          np.concatenate([run.obs_scale[k] for k in run.obs_dims]), 1.0, seed=0)
    try:
        model = build_model("ppo", venv, run.cfg.net, run.cfg.ppo, run.cfg.sac, 0, "cpu")
        features = venv.reset()
        action, _ = model.predict(features, deterministic=True)
        assert np.abs(action).max() == 0.0
        with torch.no_grad():
            model.policy.action_net.weight.normal_(0.0, 0.1)  # a trained-looking actor
            model.policy.log_std.normal_(-2.0, 0.3)
            dist = model.policy.get_distribution(torch.as_tensor(features)).distribution
            actor = extract_actor(model, run.spec, run.obs_scale)
            mean, log_std = actor(torch.as_tensor(features))
        assert model.policy.log_std.shape == (run.cfg.net.actor[-1], 3)
        torch.testing.assert_close(mean, dist.mean, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(log_std.exp(), dist.stddev, atol=1e-6, rtol=1e-5)
        assert float(log_std.std()) > 0  # the std depends on the state
    finally:
        venv.close()


def test_training_leaves_the_base_untouched_and_resume_continues_at_the_saved_step(nav_base, tmp_path, capsys):
    before = {k: v.clone() for k, v in load_policy(nav_base, "cpu").state_dict().items()}
    run_dir = tmp_path / "run"
    common = ["rl", f"base={nav_base}", f"env={ENV}", "eval_every=64", "ckpt_every=32", "critic_warmup_steps=32",
              *FAST, f"hydra.run.dir={run_dir}"]
    args = [*common, "total_steps=64"]
    assert cli.main(args) == 0
    last = run_dir / "checkpoints" / "last"
    meta = json.loads((last / "train_state.json").read_text())
    assert meta["model"]["num_timesteps"] == 64 and meta["next_episode"] >= 1
    # the base copy inside the specialist is the base, byte for byte, and no weight of it moved
    specialist = load_policy(last, "cpu")
    assert isinstance(specialist, ResidualPolicy)
    for k, v in specialist.base.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(p.requires_grad for p in specialist.base.parameters())
    # the actor learned after the critic's warm-up (it is no longer the zero residual)
    assert specialist.actor.mu.weight.abs().sum() > 0

    # resume: the model comes back with the saved weights and optimiser moments, at the saved step
    from safetensors.torch import load_file

    from training.rl.algos import build_model, load_model_state, model_state

    run = ResidualRL(RLConfig(base=str(nav_base), env=ENV, num_envs=1, device="cpu", progress=False,
                              ppo=RLConfig().ppo.__class__(n_steps=32, batch_size=32, n_epochs=2)),
                     run_dir, resume=True)
    assert run.state_meta["model"]["num_timesteps"] == 64
    venv = ResidualVecEnv(run.make_vec, run.base, run.obs_dims,
                          np.concatenate([run.obs_scale[k] for k in run.obs_dims]), 1.0, seed=0)
    try:
        model = build_model("ppo", venv, run.cfg.net, run.cfg.ppo, run.cfg.sac, 0, "cpu")
        load_model_state(model, run.state_tensors, run.state_meta["model"])
        tensors, _ = model_state(model)
    finally:
        venv.close()
    saved = load_file(str(last / "train_state.safetensors"))
    for k, v in tensors.items():
        assert torch.equal(v, saved[k]), k
    assert model.num_timesteps == 64

    # the CLI resumes to a longer budget from there
    assert cli.main([*common, "total_steps=96", "resume=true"]) == 0
    meta = json.loads((last / "train_state.json").read_text())
    assert meta["model"]["num_timesteps"] == 96
    steps = [int(float(line.split(",")[0])) for line in (run_dir / "rl_log.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps) and steps[-1] == 96

    # a fresh run over it is refused
    assert cli.main(args) == 2
    assert "resume=true" in one_error_line(capsys)


def test_a_linear_learning_rate_falls_to_zero_at_total_steps_and_a_resumed_run_stays_on_the_line(nav_base, tmp_path,
                                                                                                 capsys):
    run_dir = tmp_path / "run"
    common = ["rl", f"base={nav_base}", f"env={ENV}", "eval_every=0", *FAST, "ppo.lr=0.001", "ppo.lr_schedule=linear",
              "critic_privileged=true", f"hydra.run.dir={run_dir}"]

    def rates() -> list[float]:
        lines = (run_dir / "rl_log.csv").read_text().splitlines()
        col = lines[0].split(",").index("train/learning_rate")
        return [float(row.split(",")[col]) for row in lines[1:] if row.split(",")[col]]

    # updates after env steps 32 and 64 of 64 (SB3 writes a rollout's row before its update: the last update's rate,
    # 0, is not in the log)
    assert cli.main([*common, "total_steps=64"]) == 0
    assert rates() == pytest.approx([0.0005])
    assert cli.main([*common, "total_steps=128", "resume=true"]) == 0  # the update after step 96 of the new 128
    assert rates() == pytest.approx([0.0005, 0.00025])
    # (the run has an asymmetric critic: resuming it without one is refused)
    assert cli.main([*common, "total_steps=160", "resume=true", "critic_privileged=false"]) == 2
    assert "other settings" in one_error_line(capsys)


def test_sac_trains_and_its_specialist_evaluates_through_alloy_eval(nav_base, tmp_path):
    run_dir = tmp_path / "sac"
    assert cli.main(["rl", f"base={nav_base}", f"env={ENV}", "algo=sac", "total_steps=48", "sac.learning_starts=16",
                     "sac.batch_size=16", "eval_every=48", "ckpt_every=48", *FAST, f"hydra.run.dir={run_dir}"]) == 0
    best = run_dir / "checkpoints" / "best"
    state = json.loads((best / "train_state.json").read_text())
    assert state["model"]["replay"]["pos"] > 0  # the replay buffer travels with the checkpoint
    eval_dir = tmp_path / "eval"
    assert cli.main(["eval", f"policy={best}", f"env={ENV}", "episodes=2", "num_envs=1", "progress=false",
                     f"hydra.run.dir={eval_dir}"]) == 0
    report = json.loads((eval_dir / "report.json").read_text())
    assert report["overall"]["episodes"] == 2


def test_a_tampered_base_copy_is_refused(nav_base, tmp_path):
    run = rl_run(nav_base, tmp_path)
    venv = ResidualVecEnv(run.make_vec, run.base, run.obs_dims,
                          np.concatenate([run.obs_scale[k] for k in run.obs_dims]), 1.0, seed=0)
    try:
        from training.rl.algos import build_model

        model = build_model("ppo", venv, run.cfg.net, run.cfg.ppo, run.cfg.sac, 0, "cpu")
        out = run.specialist(model).save_pretrained(tmp_path / "spec")
    finally:
        venv.close()
    weights = out / "base" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1
    weights.write_bytes(bytes(blob))
    from policies.errors import PolicyError

    with pytest.raises(PolicyError, match="hash"):
        load_policy(out, "cpu")


@pytest.mark.parametrize("override, words", [
    ("algo=dqn", ["dqn", "ppo, sac"]),
    ("total_steps=0", ["total_steps"]),
    ("residual.scale=-1", ["residual.scale"]),
    ("+randomize.mass=[1.0,100.0]", ["mass", "valid range"]),
    ("base=/no/such/dir", ["does not exist"]),
])
def test_bad_input_is_one_line_and_writes_nothing(nav_base, tmp_path, capsys, override, words):
    run_dir = tmp_path / "run"
    args = ["rl", f"base={nav_base}", f"env={ENV}", *FAST, f"hydra.run.dir={run_dir}", override]
    assert cli.main(args) == 2
    line = one_error_line(capsys)
    assert all(w in line for w in words), line
    assert not run_dir.exists()


def test_a_base_that_does_not_fit_the_env_or_is_not_a_policy(nav_base, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["rl", f"base={nav_base}", "env=metaworld/reach-v3", *FAST, f"hydra.run.dir={run_dir}"]) == 2
    line = one_error_line(capsys)
    assert "expects observation" in line and "metaworld/reach-v3" in line
    not_policy = tmp_path / "empty"
    not_policy.mkdir()
    assert cli.main(["rl", f"base={not_policy}", f"env={ENV}", *FAST, f"hydra.run.dir={run_dir}"]) == 2
    assert "not a policy" in one_error_line(capsys)
    assert not run_dir.exists()
    # an asymmetric critic on an env that knows nothing privileged
    assert cli.main(["rl", "base=none", "env=Pendulum-v1", "critic_privileged=true", *FAST,
                     f"hydra.run.dir={run_dir}"]) == 2
    assert "critic_privileged=false" in one_error_line(capsys)
    assert not run_dir.exists()
