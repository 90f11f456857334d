"""MoDE expert caching: fused experts give the routed mixture's actions, on by default, never stale."""

import numpy as np
import pytest
import torch

from policies import DiffusionConfig, NetConfig, Policy, PolicySpec, SchemeConfig
from policies.expert_cache import ExpertCache
from policies.nets.mode import MoDE

TO, TP, DA, DS = 2, 8, 2, 4


def mode_policy(process="edm", scheme="chunk", experts=4, top_k=2):
    torch.manual_seed(0)
    p = Policy(PolicySpec(
        obs_dims={"state": DS}, action_dim=DA,
        net=NetConfig(name="mode", d_model=32, n_heads=4, n_layers=3, num_experts=experts, top_k=top_k,
                      obs_horizon=TO, pred_horizon=TP),
        diffusion=DiffusionConfig(name=process, num_train_steps=50, num_inference_steps=6),
        scheme=SchemeConfig(name=scheme, action_horizon=2, stream_calls=2)))
    with torch.no_grad():  # spread the routers so that different levels pick different experts
        for block in p.net.blocks:
            block.moe.router.proj.weight.normal_(0, 1.0)
    return p.eval()


def rollout(policy, cached: bool, steps=6, seed=0):
    policy.reset()
    if policy.expert_cache is not None:
        policy.expert_cache.enabled = cached
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    return np.stack([policy.act({"state": rng.standard_normal((5, DS)).astype(np.float32)}) for _ in range(steps)])


@pytest.mark.parametrize("process,scheme", [("edm", "chunk"), ("ddim", "chunk"), ("ddpm", "streaming"),
                                            ("edm", "streaming"), ("edm", "truncated")])
def test_fused_experts_give_the_same_actions_as_routed_experts(process, scheme):
    policy = mode_policy(process, scheme)
    if scheme == "truncated":
        policy.scheme.set_anchors(torch.randn(policy.scheme.num_anchors, TP, DA) * 0.3)
    assert isinstance(policy.expert_cache, ExpertCache) and policy.expert_cache.enabled  # on by default
    cached = rollout(policy, True)
    assert policy.expert_cache.hits > 0
    uncached = rollout(policy, False)
    assert np.abs(cached - uncached).max() <= 1e-5


def test_fused_denoise_equals_unfused_with_per_position_levels():
    policy = mode_policy()
    net, cache = policy.net, policy.expert_cache
    x, ctx = torch.randn(7, TP, DA), net.encode(torch.randn(7, TO, DS))
    level = torch.linspace(-1.5, 5.0, TP)[None].expand(7, -1)  # a different level (and routing) per position
    with torch.no_grad():
        want = MoDE.denoise(net, x, level, ctx)
        for _ in range(2):  # a miss that builds the entry, then a hit
            got = cache.denoise(net, x, level, ctx)
            assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert cache.hits == 1 and cache.misses == 1


def test_weight_changes_drop_stale_entries():
    policy = mode_policy()
    before = rollout(policy, True)
    with torch.no_grad():
        for block in policy.net.blocks:
            block.moe.experts[0].w_down.weight.mul_(3.0)
            block.moe.router.proj.weight.neg_()
    assert np.abs(rollout(policy, True) - rollout(policy, False)).max() <= 1e-5
    assert np.abs(rollout(policy, True) - before).max() > 1e-4


def test_training_never_uses_the_cache():
    policy = mode_policy().train()
    with torch.enable_grad():
        batch = {"obs": {"state": torch.randn(4, TO, DS)}, "action": torch.rand(4, TP, DA) * 2 - 1}
        loss, parts = policy.compute_loss(batch)
        loss.backward()
    assert "balance" in parts and policy.expert_cache.hits == 0 and policy.expert_cache.misses == 0
    assert Policy(PolicySpec(obs_dims={"state": DS}, action_dim=DA, net=NetConfig(name="dit", d_model=32),
                             scheme=SchemeConfig())).expert_cache is None
