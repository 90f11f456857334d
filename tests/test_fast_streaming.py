"""Streaming scheme: buffer invariants, a shift that really re-noises what it labels, one unit system per process."""

import numpy as np
import pytest
import torch

from policies import DiffusionConfig, NetConfig, Policy, PolicySpec, SchemeConfig
from policies.errors import PolicyError
from policies.random_source import RandomSource
from policies.schemes.streaming import CLEAN, level_ladder, noise_to, signal_noise, step_to

TO, TP, DA, DS = 2, 9, 2, 3


def spec(process: str, net: str = "dit", ta: int = 2, calls: int = 2) -> PolicySpec:
    return PolicySpec(
        obs_dims={"state": DS}, action_dim=DA,
        net=NetConfig(name=net, d_model=32, n_heads=4, n_layers=1, obs_horizon=TO, pred_horizon=TP),
        diffusion=DiffusionConfig(name=process, num_train_steps=50, num_inference_steps=5),
        scheme=SchemeConfig(name="streaming", action_horizon=ta, stream_calls=calls))


def obs(b=3, seed=0):
    return {"state": np.random.default_rng(seed).standard_normal((b, DS)).astype(np.float32)}


@pytest.mark.parametrize("process", ["ddpm", "ddim", "edm"])
def test_levels_increase_along_the_horizon_and_head_is_clean(process):
    policy = Policy(spec(process))
    s = policy.scheme
    assert s.chunks == (TP - TO + 1) // 2 and s.levels == s.chunks * s.calls
    ladder = s.ladder(policy.process, "cpu")
    assert torch.all(ladder[1:] > ladder[:-1])  # strictly increasing noise with the index
    active = s.active.nonzero().flatten()
    for index, top in ((s.start_index, s.levels), (s.done_index, s.levels - s.calls)):
        a = index[active]
        assert torch.all(a[1:] >= a[:-1]) and a[-1] == top
    head = slice(s.start, s.start + s.action_horizon)
    assert torch.all(s.done_index[head] == 0)  # after a replanning the executed head is clean
    assert torch.all(s.start_index[head] == s.calls)
    # training draws chunk-wise levels that never decrease along the horizon (or one constant level)
    idx = s.training_levels(RandomSource.for_step(0, 0, 256, "cpu"), "cpu")[:, active]
    assert torch.all(idx[:, 1:] >= idx[:, :-1]) and idx.min() >= 1 and idx.max() <= s.levels


def test_clean_target_returns_the_denoised_estimate_exactly():
    policy = Policy(spec("ddim"))
    x, x0 = torch.randn(4, TP, DA), torch.randn(4, TP, DA)
    out = step_to(policy.process, x, x0, torch.full((4, TP), 20.0), torch.full((4, TP), CLEAN), 0.0, None)
    assert torch.equal(out, x0)
    sig = Policy(spec("edm")).process
    out = step_to(sig, x, x0, torch.full((4, TP), 2.0), torch.zeros(4, TP), 0.0, None)
    assert torch.allclose(out, x0)


@pytest.mark.parametrize("process", ["ddpm", "edm"])
def test_shift_renoises_every_entry_to_the_level_it_is_labelled_with(process):
    torch.manual_seed(0)
    policy = Policy(spec(process, ta=2, calls=2))
    s, proc = policy.scheme, policy.process
    ladder = s.ladder(proc, "cpu")
    n = 20000
    x0 = torch.randn(1, TP, DA).expand(n, -1, -1).contiguous() * 0.5  # known clean content per position
    done = ladder[s.done_index][None].expand(n, -1)
    buf = noise_to(proc, x0, torch.randn(n, TP, DA), done)  # correctly labelled post-replanning buffer
    shifted = s.shift(proc, buf)
    hi = s.start + s.chunks * s.action_horizon
    src = torch.arange(TP)
    src = torch.where(s.active, (src + s.action_horizon).clamp(max=hi - 1), src)
    src[: s.start] = torch.arange(s.start)
    new = ladder[s.start_index][None].expand(n, -1)
    a, sd = signal_noise(proc, new, shifted)
    z = (shifted.double() - a * x0[:, src].double()) / sd
    for p in s.active.nonzero().flatten().tolist():
        assert abs(float(z[:, p].mean())) < 0.05 and abs(float(z[:, p].std()) - 1) < 0.05, (p, z[:, p].std())
    # the tail really was noised up: its label rose from the last chunk's level to the top
    tail = s.start + (s.chunks - 1) * s.action_horizon
    assert s.done_index[hi - 1] < s.start_index[tail] == s.levels


@pytest.mark.parametrize("process", ["ddpm", "ddim", "edm"])
def test_inference_levels_are_training_levels(process):
    """One ladder in the process's own units for training and inference (no step-index / timestep mix-up)."""
    torch.manual_seed(0)
    policy = Policy(spec(process))
    seen = {"train": set(), "infer": set()}
    inner = policy.net.denoise

    def record(kind):
        def f(x, level, ctx):
            seen[kind].update(np.round(level.detach().flatten().numpy().astype(np.float64), 5).tolist())
            return inner(x, level, ctx)
        return f

    policy.net.denoise = record("train")
    batch = {"obs": {"state": torch.randn(64, TO, DS)}, "action": torch.rand(64, TP, DA) * 2 - 1}
    for step in range(5):
        policy.compute_loss(batch, RandomSource.for_step(0, step, 64, "cpu"))
    policy.net.denoise = record("infer")
    for _ in range(9):
        policy.act(obs())
    del policy.net.denoise
    assert seen["infer"] and seen["infer"] <= seen["train"], sorted(seen["infer"] - seen["train"])
    if process != "edm":  # DDPM/DDIM levels are training timesteps in [0, T)
        assert all(float(v).is_integer() and 0 <= v < 50 for v in seen["infer"])
    ladder = level_ladder(policy.process, policy.scheme.levels)
    assert ladder.shape == (policy.scheme.levels + 1,)


def test_calls_per_replanning_and_independent_env_resets():
    policy = Policy(spec("ddim", ta=2, calls=3))
    calls = []
    inner = policy.net.denoise
    policy.net.denoise = lambda x, level, ctx: (calls.append(x.shape[0]), inner(x, level, ctx))[1]
    policy.act(obs())  # warm start: all N levels once
    assert sum(1 for _ in calls) == policy.scheme.levels
    calls.clear()
    policy.act(obs())  # still executing the clean head
    assert calls == []
    policy.act(obs())  # replanning: stream_calls denoiser calls
    assert calls == [3] * 3
    calls.clear()
    policy.reset(np.array([False, True, False]))
    a = policy.act(obs())
    assert calls == [1] * policy.scheme.levels  # only the reset env is warmed up; the others are mid-head
    assert a.shape == (3, DA) and np.isfinite(a).all()
    del policy.net.denoise


def test_bad_streaming_settings_are_clear_errors():
    with pytest.raises(PolicyError, match="stream_chunks"):
        Policy(PolicySpec(obs_dims={"state": DS}, action_dim=DA, net=NetConfig(pred_horizon=TP, d_model=32),
                          scheme=SchemeConfig(name="streaming", action_horizon=4, stream_chunks=3)))
    with pytest.raises(PolicyError, match="diffusion process"):
        p = Policy(PolicySpec(obs_dims={"state": DS}, action_dim=DA, net=NetConfig(name="mlp", pred_horizon=TP),
                              diffusion=DiffusionConfig(name="regression"),
                              scheme=SchemeConfig(name="streaming", action_horizon=2)))
        p.act(obs())
