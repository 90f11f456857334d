"""Denoisers x processes: every combination learns, samples the right shape, and keeps its structural promises."""

import numpy as np
import pytest
import torch

from policies import DiffusionConfig, NetConfig, Policy, PolicySpec, SchemeConfig
from policies.random_source import RandomSource

NETS = ["dit", "mdt", "mode", "mlp"]
PROCESSES = ["ddpm", "ddim", "edm", "regression"]
B, TO, TP, DA, DS, TASKS, LANG = 16, 2, 8, 2, 5, 3, 6


def small_spec(net: str, process: str, language: bool = True, **diff) -> PolicySpec:
    steps = {"ddpm": 20, "ddim": 5, "edm": 5, "regression": 1}[process]
    return PolicySpec(
        obs_dims={"state": DS, "task": TASKS} if language else {"state": DS},
        action_dim=DA,
        net=NetConfig(name=net, d_model=32, n_heads=4, n_layers=2, n_enc_layers=1, mlp_hidden=64, obs_horizon=TO,
                      pred_horizon=TP),
        diffusion=DiffusionConfig(name=process, num_train_steps=20 if process == "ddpm" else 100,
                                  num_inference_steps=steps, **diff),
        scheme=SchemeConfig(action_horizon=4),
        lang_dim=LANG if language else 0,
    )


def batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = torch.randn(B, TO, DS, generator=g)
    task = torch.randint(TASKS, (B,), generator=g)
    # Actions are a smooth function of the last state so that there is something to learn.
    action = torch.tanh(state[:, -1:, :DA] + torch.linspace(0, 1, TP)[None, :, None]) * 0.9
    return {"obs": {"state": state, "task": torch.eye(TASKS)[task][:, None].expand(B, TO, TASKS)},
            "action": action, "goal": torch.randn(B, DS, generator=g), "future_state": state[:, -1] * 0.5,
            "lang": torch.randn(TASKS, LANG, generator=g)[task]}


@pytest.mark.parametrize("process", PROCESSES)
@pytest.mark.parametrize("net", NETS)
def test_every_net_under_every_process_learns_and_samples(net, process):
    torch.manual_seed(0)
    policy = Policy(small_spec(net, process))
    data = batch()
    fixed = lambda: RandomSource.for_step(seed=1, step=0, batch=B, device="cpu")  # noqa: E731
    with torch.no_grad():
        before = policy.compute_loss(data, fixed())[0].item()
    opt = torch.optim.AdamW(policy.parameters(), lr=2e-3)
    for step in range(40):
        loss, _ = policy.compute_loss(data, RandomSource.for_step(seed=2, step=step, batch=B, device="cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = policy.compute_loss(data, fixed())[0].item()
    assert np.isfinite(after) and after < 0.9 * before, (before, after)

    obs = {"state": np.random.randn(3, DS).astype(np.float32), "task": np.eye(TASKS, dtype=np.float32)[[0, 1, 2]]}
    action = policy.act(obs)
    assert action.shape == (3, DA) and action.dtype == np.float32 and np.isfinite(action).all()


@pytest.mark.parametrize("net", NETS)
def test_denoisers_accept_per_position_noise_levels(net):
    policy = Policy(small_spec(net, "edm"))
    obs = torch.randn(4, TO, DS)
    ctx = policy.net.encode(obs, torch.randn(4, LANG))
    level = torch.rand(4, TP)
    out = policy.net.denoise(torch.randn(4, TP, DA), level, ctx)
    assert out.shape == (4, TP, DA)
    # Changing the level of the last position only changes the output (the per-position level is really used).
    level2 = level.clone()
    level2[:, -1] += 1.0
    assert not torch.allclose(out, policy.net.denoise(torch.randn(4, TP, DA) * 0 + 0, level2, ctx))


def _routes(net, x, level, ctx):
    chosen = []
    hooks = [b.moe.router.register_forward_hook(lambda m, i, o: chosen.append((o[1].clone(), o[2].clone())))
             for b in net.blocks]
    net.denoise(x, level, ctx)
    for h in hooks:
        h.remove()
    return chosen


def test_mode_routing_depends_on_the_noise_level_only():
    torch.manual_seed(0)
    policy = Policy(small_spec("mode", "edm")).eval()
    net = policy.net
    level = torch.full((4,), -0.3)
    ctx_a = net.encode(torch.randn(4, TO, DS), torch.randn(4, LANG))
    ctx_b = net.encode(torch.randn(4, TO, DS) * 3, torch.randn(4, LANG))
    ra = _routes(net, torch.randn(4, TP, DA), level, ctx_a)
    rb = _routes(net, torch.randn(4, TP, DA) * 5, level, ctx_b)
    for (ea, wa), (eb, wb) in zip(ra, rb):
        assert torch.equal(ea, eb) and torch.equal(wa, wb)
        # every token of a sample at one noise level uses the same experts
        assert (ea == ea[:1]).all()
    # the router does respond to the level: across a range of levels the choice changes somewhere
    levels = torch.linspace(-2, 1.2, 64)
    seen = {tuple(_routes(net, torch.zeros(64, TP, DA), levels, net.encode(torch.zeros(64, TO, DS),
                                                                          torch.zeros(64, LANG)))[0][0][i].tolist())
            for i in range(0, 64 * (1 + 1 + TO + TP), 1 + 1 + TO + TP)}
    assert len(seen) > 1


def test_mode_load_balancing_loss_is_reported_and_experts_have_no_bias():
    policy = Policy(small_spec("mode", "ddpm"))
    _, parts = policy.compute_loss(batch())
    assert "balance" in parts and parts["balance"] > 0
    for block in policy.net.blocks:
        assert len(block.moe.experts) == 4 and block.moe.router.top_k == 2
        for expert in block.moe.experts:
            assert all(m.bias is None for m in (expert.w_gate, expert.w_up, expert.w_down))


def test_mdt_reports_foresight_and_contrastive_losses():
    _, parts = Policy(small_spec("mdt", "edm")).compute_loss(batch())
    assert {"diffusion", "foresight", "contrastive"} <= set(parts)


@pytest.mark.parametrize("net", NETS)
def test_context_is_encoded_once_per_control_step(net):
    policy = Policy(small_spec(net, "ddpm"))
    calls = {"encode": 0, "denoise": 0}
    enc, den = policy.net.encode, policy.net.denoise

    def count_enc(*a, **k):
        calls["encode"] += 1
        return enc(*a, **k)

    def count_den(*a, **k):
        calls["denoise"] += 1
        return den(*a, **k)

    policy.net.encode, policy.net.denoise = count_enc, count_den
    obs = {"state": np.zeros((2, DS), np.float32), "task": np.eye(TASKS, dtype=np.float32)[[0, 1]]}
    policy.act(obs)
    assert calls == {"encode": 1, "denoise": policy.process.num_net_calls()} == {"encode": 1, "denoise": 20}
    for _ in range(3):  # the rest of the executed chunk comes from the queue
        policy.act(obs)
    assert calls["encode"] == 1
    policy.act(obs)
    assert calls["encode"] == 2


def test_edm_dpm_solver_2_and_karras_schedule_sample():
    for sampler, schedule in [("dpm_solver_2", "exponential"), ("euler", "karras"), ("ddim", "exponential")]:
        policy = Policy(small_spec("dit", "edm", sampler=sampler, schedule=schedule))
        obs = {"state": np.zeros((2, DS), np.float32), "task": np.eye(TASKS, dtype=np.float32)[[0, 1]]}
        assert policy.act(obs).shape == (2, DA)


def test_edm_training_sigmas_are_truncated_log_logistic():
    from policies.diffusion.edm import EDMProcess

    proc = EDMProcess(DiffusionConfig(name="edm"))
    sigma = proc.sample_train_noise((), RandomSource.for_step(0, 0, 200000, "cpu"))
    assert sigma.min() >= 0.001 and sigma.max() <= 80
    # median of the log-logistic is exp(loc) = 0.5; the truncation barely moves it
    assert abs(sigma.median().item() - 0.5) < 0.01


@pytest.mark.parametrize("net", NETS)
def test_training_forward_runs_under_bf16_autocast(net):
    """The CUDA path trains under bf16 autocast; the CPU autocast exercises the same dtype mixing."""
    policy = Policy(small_spec(net, "edm"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = policy.compute_loss(batch())
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
