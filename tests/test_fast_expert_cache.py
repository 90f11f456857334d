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


# ---------------------------------------------------------------------------------------------- routed by embodiment
DE = 5  # descriptor dims


def robot_routed_policy(process="edm", scheme="chunk"):
    torch.manual_seed(0)
    p = Policy(PolicySpec(
        obs_dims={"state": DS, "embodiment": DE}, action_dim=DA,
        net=NetConfig(name="mode", d_model=32, n_heads=4, n_layers=3, num_experts=4, top_k=2, obs_horizon=TO,
                      pred_horizon=TP, route_keys=["embodiment"]),
        diffusion=DiffusionConfig(name=process, num_train_steps=50, num_inference_steps=6),
        scheme=SchemeConfig(name=scheme, action_horizon=2, stream_calls=2)))
    p.normalizer.fit({"state": {"min": -np.ones(DS), "max": np.ones(DS)},
                      "embodiment": {"min": np.zeros(DE), "max": np.ones(DE)},
                      "action": {"min": -np.ones(DA), "max": np.ones(DA)}})
    with torch.no_grad():
        for block in p.net.blocks:
            block.moe.router.proj.weight.normal_(0, 1.0)
        p.net.route_proj.weight.normal_(0, 3.0)  # robots far apart in routing space
    return p.eval()


def routing(net, obs, level):
    """Each block's router probabilities for every token, given the (B, To, F) normalised features."""
    ctx = net.encode(obs)
    route = net.routing_embedding(level, ctx.shape[1], TP, net.robot_token(ctx))
    flat = route.reshape(-1, route.shape[-1])
    return torch.stack([block.moe.router(flat)[0] for block in net.blocks])


def test_the_embodiment_router_sees_only_the_level_and_the_descriptor():
    net = robot_routed_policy().net
    a, b = DS, DS + DE  # the descriptor's place in the features
    assert net.dims.route_features == (a, b)
    obs = torch.randn(6, TO, DS + DE)
    other = obs.clone()
    other[..., :a] = torch.randn(6, TO, DS)  # everything but the descriptor changes
    other[:, :-1, a:b] = torch.randn(6, TO - 1, DE)  # and so do the descriptors of past steps
    level = torch.full((6,), 2.0)
    with torch.no_grad():
        assert torch.equal(routing(net, obs, level), routing(net, other, level))
        robots = obs.clone()
        robots[:, -1, a:b] = torch.randn(6, DE)  # another robot
        assert not torch.allclose(routing(net, obs, level), routing(net, robots, level))
        assert not torch.allclose(routing(net, obs, level), routing(net, obs, torch.full((6,), -1.0)))


def robot_batches(robots: np.ndarray, steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [{"state": rng.standard_normal((len(robots), DS)).astype(np.float32), "embodiment": robots}
            for _ in range(steps)]


@pytest.mark.parametrize("process,scheme", [("edm", "chunk"), ("ddim", "streaming")])
def test_per_robot_expert_caching_gives_the_uncached_actions(process, scheme):
    policy = robot_routed_policy(process, scheme)
    rng = np.random.default_rng(3)
    one_robot = np.repeat(rng.random((1, DE)).astype(np.float32), 4, axis=0)
    mixed = rng.random((4, DE)).astype(np.float32)
    for robots, hits in ((one_robot, True), (mixed, False)):
        out = {}
        for cached in (True, False):
            policy.reset()
            policy.expert_cache.enabled = cached
            policy.expert_cache.hits = 0
            torch.manual_seed(0)
            out[cached] = np.stack([policy.act(o) for o in robot_batches(robots, 5)])
            if cached:
                assert (policy.expert_cache.hits > 0) == hits  # a batch of several robots runs the routed forward
        assert np.abs(out[True] - out[False]).max() <= 1e-5


@pytest.mark.slow  # an ONNX export (a minute or more on 2 shared cores)
def test_a_robot_routed_mode_exports_one_graph_for_every_robot(tmp_path):
    from policies.export import export_policy, parity
    from policies.runtime import Runtime

    policy = robot_routed_policy()
    out = export_policy(policy, tmp_path / "a")
    mixed = np.random.default_rng(4).random((3, DE)).astype(np.float32)
    assert parity(policy, Runtime(out, seed=0), robot_batches(mixed, 4)) < 1e-4


@pytest.mark.parametrize("net,keys,words", [("dit", ["embodiment"], "no router"),
                                            ("mode", ["goal"], "not observation keys")])
def test_route_keys_that_cannot_work_are_refused(net, keys, words):
    from policies.errors import PolicyError

    with pytest.raises(PolicyError, match=words):
        PolicySpec(obs_dims={"state": DS, "embodiment": DE}, action_dim=DA,
                   net=NetConfig(name=net, d_model=32, n_heads=4, route_keys=keys)).validate()
