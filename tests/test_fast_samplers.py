"""Precomputed sampler constants: the fast paths `Policy.act` runs give the reference samplers' results bit for bit."""

import numpy as np
import pytest
import torch

from policies import DiffusionConfig, NetConfig, Policy, PolicySpec, SchemeConfig
from policies.diffusion import build_process
from policies.random_source import RandomSource

TO, TP, DA, DS = 2, 9, 2, 3


def fake_denoise(x, level):
    """A deterministic stand-in for a denoiser with outputs of a realistic size."""
    lv = level.float()
    lv = lv[:, None, None] if lv.dim() == 1 else lv[..., None]
    return torch.tanh(0.8 * x + 0.01 * lv) * 1.3


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
@pytest.mark.parametrize("prediction,clip", [("epsilon", True), ("epsilon", False), ("sample", True)])
@pytest.mark.parametrize("steps", [1, 7, 50])
def test_vp_steps_equal_diffusers_scheduler_step(kind, prediction, clip, steps):
    process = build_process(DiffusionConfig(name=kind, num_train_steps=50, num_inference_steps=steps,
                                            prediction=prediction, clip_sample=clip))
    shape = (3, TP, DA)
    g = torch.Generator().manual_seed(0)
    fast = process.sample(fake_denoise, shape, "cpu", generator=g)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    for t in process.scheduler.timesteps:
        out = fake_denoise(x, torch.full(shape[:1], float(t))).float()
        x = process.scheduler.step(out, t, x, generator=g).prev_sample
    assert torch.equal(fast, x)


@pytest.mark.parametrize("sampler,schedule", [("euler", "exponential"), ("dpm_solver_2", "karras")])
def test_edm_cached_preconditioning_equals_recomputing_it(sampler, schedule):
    process = build_process(DiffusionConfig(name="edm", num_inference_steps=6, sampler=sampler, schedule=schedule))
    shape = (4, TP, DA)

    def D(x, sigma):
        nv = torch.full(x.shape[:1], sigma)
        return process.denoised(fake_denoise(*process.net_input(x, nv)), x, nv)

    for _ in range(2):  # the second run uses the cached constants
        g = torch.Generator().manual_seed(1)
        fast = process.sample(fake_denoise, shape, "cpu", generator=g)
        g = torch.Generator().manual_seed(1)
        sig = process.sigmas.tolist()
        x = torch.randn(shape, generator=g) * sig[0]
        for s, s_next in zip(sig[:-1], sig[1:]):
            d = D(x, s)
            if s_next == 0:
                x = d
            elif sampler == "dpm_solver_2":
                s_mid = (s * s_next) ** 0.5
                d = D(d + (s_mid / s) * (x - d), s_mid)
                x = d + (s_next / s) * (x - d)
            else:
                x = d + (s_next / s) * (x - d)
        assert torch.equal(fast, x)


def policy(process: str, scheme: str, net: str = "dit") -> Policy:
    torch.manual_seed(0)
    p = Policy(PolicySpec(
        obs_dims={"state": DS}, action_dim=DA,
        net=NetConfig(name=net, d_model=32, n_heads=4, n_layers=1, obs_horizon=TO, pred_horizon=TP),
        diffusion=DiffusionConfig(name=process, num_train_steps=50, num_inference_steps=5),
        scheme=SchemeConfig(name=scheme, action_horizon=2, stream_calls=2, num_anchors=3, trunc_steps=2)))
    with torch.no_grad():
        for prm in p.parameters():
            prm.add_(torch.randn_like(prm) * 0.05)  # zero-initialised parts would hide mistakes
    if scheme == "truncated":
        p.scheme.set_anchors(torch.randn(3, TP, DA) * 0.4)
    return p.eval()


@pytest.mark.parametrize("process", ["ddpm", "ddim", "edm"])
def test_streaming_plan_equals_the_reference_warm_start_and_replanning(process):
    p = policy(process, "streaming")
    s = p.scheme
    p.act({"state": np.zeros((4, DS), np.float32)})  # fills the history
    ctx = p.encode_current()
    with torch.inference_mode():
        plan = s.plan(p.process, "cpu", torch.float32, 4)
        torch.manual_seed(3)
        warm = plan.warm(p, ctx)
        again = plan.replan(p, warm, ctx)
    torch.manual_seed(3)
    with torch.no_grad():
        ref_warm, _ = s.warm_start(p, ctx, 4, torch.device("cpu"))
        ref_again = s.replan(p, ref_warm, ctx)
    assert torch.equal(warm, ref_warm) and torch.equal(again, ref_again)


@pytest.mark.parametrize("process", ["ddpm", "ddim", "edm"])
def test_truncated_plan_equals_the_reference(process):
    p = policy(process, "truncated")
    p.act({"state": np.zeros((2, DS), np.float32)})
    ctx = p.encode_current()
    with torch.inference_mode():
        torch.manual_seed(5)
        fast = p.scheme.plan(p, ctx)
    torch.manual_seed(5)
    with torch.no_grad():
        ref = p.scheme.plan_reference(p, ctx)
    assert torch.equal(fast, ref)


@pytest.mark.parametrize("scheme", ["chunk", "streaming", "truncated"])
def test_act_restores_the_training_mode_and_training_still_works_after_it(scheme):
    """act samples in eval mode under inference_mode; the constants it caches never leak into autograd."""
    p = policy("ddpm", scheme).train()
    o = {"state": np.random.default_rng(0).standard_normal((3, DS)).astype(np.float32)}
    a = p.act(o)
    assert p.training and p.net.training and a.shape == (3, DA)
    batch = {"obs": {"state": torch.randn(4, TO, DS)}, "action": torch.rand(4, TP, DA) * 2 - 1}
    loss, _ = p.compute_loss(batch, RandomSource.for_step(0, 0, 4, "cpu"))
    loss.backward()
    p.eval()
    p.reset(np.array([True, False, True]))
    assert np.isfinite(p.act(o)).all() and not p.training


def test_normaliser_changes_reach_act():
    p = policy("ddim", "chunk")
    o = {"state": np.ones((1, DS), np.float32)}
    p.act(o)
    before = p._history[:, -1].clone()
    with torch.no_grad():
        p.normalizer.state_scale.fill_(3.0)  # in place: the cached feature affine must be rebuilt
    p.reset()
    p.act(o)
    assert not torch.equal(p._history[:, -1], before)
    assert torch.allclose(p._history[:, -1], 3.0 + p.normalizer.state_offset)


def test_expert_cache_folds_uniform_routing_and_never_reuses_a_mutated_level():
    p = policy("edm", "chunk", net="mode")
    net, cache = p.net, p.expert_cache
    with torch.no_grad():
        for block in net.blocks:
            block.moe.router.proj.weight.normal_(0, 1.0)
    from policies.nets.mode import MoDE

    x, ctx = torch.randn(2, TP, DA), net.encode(torch.randn(2, TO, DS))
    level = torch.full((2,), 0.3)
    with torch.no_grad():
        got = cache.denoise(net, x, level, ctx)
        assert torch.allclose(got, MoDE.denoise(net, x, level, ctx), atol=1e-5, rtol=0)
        entry = next(iter(cache._patterns.values()))
        assert all(b.scale is None for b in entry.blocks)  # one routing for all tokens: weights folded into W_down
        level.fill_(-1.2)  # same tensor, new values: found by identity, but its version changed
        got = cache.denoise(net, x, level, ctx)
        assert torch.allclose(got, MoDE.denoise(net, x, level, ctx), atol=1e-5, rtol=0)
        assert cache.misses == 2
        per_position = torch.linspace(-1.5, 5.0, TP)[None].expand(2, -1)
        cache.denoise(net, x, per_position, ctx)
        assert any(b.scale is not None for e in cache._patterns.values() for b in e.blocks)
