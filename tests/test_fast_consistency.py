"""Consistency distillation: the student starts as its teacher, the loss trains the student, round trip."""

import numpy as np
import pytest
import torch

from distill.consistency import (
    ConsistencyConfig,
    ConsistencyObjective,
    load_student,
    make_student,
    save_student,
    set_student_steps,
)
from distill.errors import DistillError
from policies import DiffusionConfig, NetConfig, Policy, PolicySpec, SchemeConfig
from policies.random_source import RandomSource

TO, TP, DA, DS, B = 2, 8, 2, 4, 16


def teacher(net="dit", process="edm"):
    torch.manual_seed(0)
    return Policy(PolicySpec(
        obs_dims={"state": DS}, action_dim=DA,
        net=NetConfig(name=net, d_model=32, n_heads=4, n_layers=2, mlp_hidden=64, obs_horizon=TO, pred_horizon=TP),
        diffusion=DiffusionConfig(name=process, num_inference_steps=5), scheme=SchemeConfig(action_horizon=4))).eval()


def batch():
    g = torch.Generator().manual_seed(0)
    state = torch.randn(B, TO, DS, generator=g)
    return {"obs": {"state": state}, "action": torch.tanh(state[:, -1:, :DA] + torch.linspace(0, 1, TP)[None, :, None])}


@pytest.mark.parametrize("net", ["dit", "mode", "mdt", "mlp"])
def test_consistency_loss_sends_gradient_into_the_student(net):
    t = teacher(net)
    student = make_student(t, steps=1, grid=10).train()
    target = make_student(t, steps=1, grid=10).eval().requires_grad_(False)
    objective = ConsistencyObjective(student, t, ConsistencyConfig(grid=10, dsm_weight=0.0), target=target)
    loss, parts = objective.loss(student, batch(), RandomSource.for_step(0, 0, B, "cpu"))
    assert set(parts) == {"consistency"} and loss.requires_grad
    loss.backward()
    inner = [p.grad for n, p in student.net.inner.named_parameters() if p.requires_grad]
    assert sum(float(g.abs().sum()) for g in inner if g is not None) > 0  # the published code's loss trained nothing
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.net.s_embed.parameters())
    assert all(p.grad is None for p in t.parameters()) and all(p.grad is None for p in target.parameters())


def test_student_starts_as_the_teacher_and_round_trips(tmp_path):
    t = teacher()
    student = make_student(t, steps=1, grid=10).eval()
    x, ctx = torch.randn(3, TP, DA), t.net.encode(torch.randn(3, TO, DS))
    level = torch.rand(3)
    with torch.no_grad():
        out = student.net.denoise(x, level, ctx, s=torch.rand(3))
        # the student feeds one level per action position: the teacher given the same levels is matched bit for bit,
        # the teacher given one level per sample up to float rounding (it embeds the level once per sample)
        assert torch.equal(out, t.net.denoise(x, level[:, None].expand(-1, TP), ctx))
        torch.testing.assert_close(out, t.net.denoise(x, level, ctx), rtol=0, atol=1e-5)
    obs = {"state": np.random.default_rng(0).standard_normal((3, DS)).astype(np.float32)}
    set_student_steps(student, 3)
    assert student.process.num_net_calls() == 3 and student.process.taus[-1] == 0.0
    save_student(student, tmp_path / "s")
    loaded = load_student(tmp_path / "s")
    torch.manual_seed(0)
    a = student.act(obs)
    torch.manual_seed(0)
    assert np.array_equal(a, loaded.act(obs))


def test_only_edm_teachers_are_distilled(tmp_path):
    with pytest.raises(DistillError, match="EDM teacher"):
        make_student(teacher(process="ddim"))
    t = teacher()
    t.save_pretrained(tmp_path / "t")
    with pytest.raises(DistillError, match="not a consistency student"):
        load_student(tmp_path / "t")


DISTILL_SCRIPT = r"""
import os, sys, torch
sys.path.insert(0, {tests!r})
os.environ["ALLOY_DATA_DIR"] = {data!r}
torch.set_num_threads(1)
from test_train_resume import DATASET, write_synthetic
from training.data import WindowDataset
from distill.consistency import ConsistencyConfig, distill_consistency
from policies import DiffusionConfig, NetConfig, Policy, PolicySpec, SchemeConfig
from training.policy_build import build_policy
if not os.path.isdir(os.path.join({data!r}, DATASET.split("/")[0])):
    write_synthetic()
ds = WindowDataset(DATASET, obs_horizon=2, pred_horizon=8)
torch.manual_seed(0)
t = build_policy(ds, NetConfig(name="dit", d_model=32, n_heads=4, n_layers=2, mlp_hidden=32, pred_horizon=8),
                 DiffusionConfig(name="edm", num_inference_steps=4), SchemeConfig(action_horizon=4))
cfg = ConsistencyConfig(steps=1, grid=8, max_steps={steps}, batch_size=8, lr=1e-3, ckpt_every=2, log_every=2,
                        progress=False)
distill_consistency(t, ds, cfg, torch.device("cpu"), run_dir={run!r}, resume={resume})
"""


def _distill(tmp_path, run, steps, resume=False, popen=False):
    import subprocess
    import sys
    from pathlib import Path

    code = DISTILL_SCRIPT.format(tests=str(Path(__file__).parent), data=str(tmp_path / "data"), run=str(run),
                                 steps=steps, resume=resume)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_consistency_distillation_resumes_after_sigkill_with_the_same_weights(tmp_path):
    """The one trainer runs consistency distillation: checkpoints (with the target network) and exact resume."""
    import signal
    import time

    from safetensors.torch import load_file
    from test_train_resume import checkpoint_step

    steps = 40
    _distill(tmp_path, tmp_path / "whole", steps)
    proc = _distill(tmp_path, tmp_path / "killed", steps, popen=True)
    deadline = time.time() + 120
    while checkpoint_step(tmp_path / "killed") < 6 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = checkpoint_step(tmp_path / "killed")
    assert 6 <= killed_at < steps, f"the run was not killed mid-way (checkpoint step {killed_at})"
    _distill(tmp_path, tmp_path / "killed", steps, resume=True)

    def weights(run):
        last = run / "checkpoints" / "last"
        out = {f"model.{k}": v for k, v in load_file(str(last / "model.safetensors")).items()}
        out.update({k: v for k, v in load_file(str(last / "train_state.safetensors")).items()
                    if not k.startswith("rng.")})
        return out

    a, b = weights(tmp_path / "whole"), weights(tmp_path / "killed")
    assert a.keys() == b.keys() and any(k.startswith("objective.target.") for k in a)
    assert not [k for k in a if not torch.equal(a[k], b[k])]
    student = load_student(tmp_path / "whole" / "checkpoints" / "last")  # the checkpoint is a loadable student
    assert student.process.num_net_calls() == 1
