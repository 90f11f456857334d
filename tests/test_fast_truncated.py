"""Truncated diffusion from anchors: k-means anchors saved with the policy, truncated training, mode scoring."""

import numpy as np
import pytest
import torch

from policies import DiffusionConfig, NetConfig, Policy, PolicySpec, SchemeConfig
from policies.errors import PolicyError
from policies.random_source import RandomSource
from policies.schemes.anchors import fit_anchors, fit_policy_anchors

TO, TP, DA, DS, K = 2, 6, 2, 3, 3


class Windows:
    """A stand-in window dataset: three clearly separated kinds of action chunk, chosen by the observation."""

    def __init__(self, n=300, seed=0):
        rng = np.random.default_rng(seed)
        self.kind = rng.integers(0, 3, n)
        centres = np.array([-0.8, 0.0, 0.8])
        self.state = np.zeros((n, TO, DS), np.float32)
        self.state[np.arange(n), :, 0] = self.kind[:, None] - 1.0
        self.action = (centres[self.kind][:, None, None] + 0.02 * rng.standard_normal((n, TP, DA))).astype(np.float32)
        self.stats = {"state": {"min": np.full(DS, -1.0), "max": np.full(DS, 1.0)},
                      "action": {"min": np.full(DA, -1.0), "max": np.full(DA, 1.0)}}

    def __len__(self):
        return len(self.kind)

    def gather(self, idx):
        idx = np.asarray(idx)
        return {"obs": {"state": self.state[idx]}, "action": self.action[idx]}


def make(process="ddim", net="dit", **scheme):
    p = Policy(PolicySpec(
        obs_dims={"state": DS}, action_dim=DA,
        net=NetConfig(name=net, d_model=32, n_heads=4, n_layers=1, mlp_hidden=64, obs_horizon=TO, pred_horizon=TP),
        diffusion=DiffusionConfig(name=process, num_train_steps=100, num_inference_steps=5),
        scheme=SchemeConfig(name="truncated", action_horizon=2, num_anchors=K, **scheme)))
    data = Windows()
    p.normalizer.fit(data.stats)
    return p, data


def test_kmeans_finds_the_modes():
    data = Windows()
    anchors = fit_anchors(data.action, K, seed=0)
    assert anchors.shape == (K, TP, DA)
    assert np.allclose(np.sort(anchors.mean(axis=(1, 2))), [-0.8, 0.0, 0.8], atol=0.02)


def test_anchors_are_saved_and_reloaded_with_the_policy(tmp_path):
    policy, data = make()
    with pytest.raises(PolicyError, match="anchors are not fitted"):
        policy.compute_loss(_batch(data), RandomSource.for_step(0, 0, 32, "cpu"))
    anchors = fit_policy_anchors(policy, data)
    policy.save_pretrained(tmp_path / "p")
    loaded = Policy.from_pretrained(tmp_path / "p")
    assert bool(loaded.scheme.anchors_fitted)
    assert torch.equal(loaded.scheme.anchors, torch.from_numpy(anchors))
    obs = {"state": data.state[:4, -1]}
    torch.manual_seed(1)
    a = policy.eval().act(obs)
    torch.manual_seed(1)
    assert np.array_equal(a, loaded.act(obs))


def _batch(data, n=32, seed=0):
    idx = np.random.default_rng(seed).integers(0, len(data), n)
    g = data.gather(idx)
    return {"obs": {"state": torch.from_numpy(g["state"] if "state" in g else g["obs"]["state"])},
            "action": torch.from_numpy(g["action"])}


def _fit(policy, data, steps=120):
    """Fit the anchors, train a few steps, return the policy in eval mode."""
    fit_policy_anchors(policy, data)
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    for step in range(steps):
        loss, _ = policy.compute_loss(_batch(data, 64, step), RandomSource.for_step(0, step, 64, "cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy.eval()


@pytest.mark.parametrize("process", ["ddpm", "edm"])
def test_learns_to_pick_and_refine_the_right_mode(process):
    torch.manual_seed(0)
    policy, data = make(process, train_modes=2 if process == "edm" else 0)
    _fit(policy, data)
    idx = np.arange(30)
    action = policy.act({"state": data.state[idx, -1]})
    want = data.action[idx, TO - 1]
    assert np.abs(action - want).max() < 0.2, np.abs(action - want).max()
    # one replanning = trunc_steps denoiser calls (over all anchors at once)
    assert policy.scheme.calls_per_action() == 2 / 2


def test_bad_truncated_settings_are_clear_errors():
    with pytest.raises(PolicyError, match="train_modes"):
        make(train_modes=1)
    with pytest.raises(PolicyError, match="no anchors"):
        p = Policy(PolicySpec(obs_dims={"state": DS}, action_dim=DA, net=NetConfig(d_model=32, pred_horizon=TP),
                              scheme=SchemeConfig(action_horizon=2)))
        p.normalizer.fit(Windows().stats)
        fit_policy_anchors(p, Windows())


@pytest.mark.parametrize("process", ["ddim", "edm"])
def test_prior_selection_picks_the_mode_first_and_denoises_only_it(process):
    """select=prior: the score head ranks the anchors from the context; one mode per row is denoised."""
    torch.manual_seed(0)
    policy, data = make(process, select="prior")
    _fit(policy, data)
    idx = np.arange(30)
    rows = []
    denoise = policy.net.denoise
    policy.net.denoise = lambda x, *rest: rows.append(x.shape[0]) or denoise(x, *rest)
    action = policy.act({"state": data.state[idx, -1]})
    assert rows == [30] * 2  # trunc_steps calls, each over the 30 chosen modes (not 30 * K)
    assert np.abs(action - data.action[idx, TO - 1]).max() < 0.2
    chosen = policy.scheme.last_scores.argmax(dim=1).numpy()  # the anchor of the demonstrated kind of chunk
    centres = policy.scheme.anchors.numpy().mean(axis=(1, 2))
    assert np.allclose(centres[chosen], np.array([-0.8, 0.0, 0.8])[data.kind[idx]], atol=0.05)


def test_prior_plan_matches_its_reference():
    policy, data = make("ddim", select="prior")
    fit_policy_anchors(policy, data)
    policy.eval()
    policy.act({"state": data.state[:3, -1]})
    ctx = policy.encode_current()
    with torch.inference_mode():
        torch.manual_seed(5)
        fast = policy.scheme.plan(policy, ctx)
    torch.manual_seed(5)
    with torch.no_grad():
        ref = policy.scheme.plan_reference(policy, ctx)
    assert fast.shape == (3, TP, DA) and torch.allclose(fast, ref, atol=1e-6)


def test_unknown_selection_is_a_clear_error():
    with pytest.raises(PolicyError, match="select must be"):
        make(select="best")
