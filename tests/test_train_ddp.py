"""Data parallel: two CPU processes under torchrun (gloo) compute the gradients one process computes on the same
global batch (each rank takes its block of the batch and the noise of exactly those samples)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_train_resume import DATASET, write_synthetic

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from policies import DiffusionConfig, NetConfig, SchemeConfig
    from training.data import WindowDataset
    from training.policy_build import build_policy
    from training.trainer import Trainer, TrainerConfig

    net, process, out = sys.argv[1], sys.argv[2], sys.argv[3]
    ds = WindowDataset("%s", obs_horizon=2, pred_horizon=8)
    torch.manual_seed(0)
    policy = build_policy(ds, NetConfig(name=net, d_model=32, n_layers=2, pred_horizon=8, mlp_hidden=64),
                          DiffusionConfig(name=process, num_inference_steps=5), SchemeConfig(action_horizon=4))
    trainer = Trainer(policy, ds, TrainerConfig(max_steps=3, batch_size=32, grad_clip=0.0, progress=False),
                      out + "/run", torch.device("cpu"), seed=3)
    for i, batch in enumerate(trainer._loader(3)):
        trainer.train_step(batch)  # gradients of step i stay in .grad until the next step
        if i == 1:
            break
    grads = {n: p.grad.contiguous() for n, p in policy.named_parameters() if p.grad is not None}
    save_file(grads, f"{out}/grads_rank{trainer.dist.rank}_world{trainer.dist.world_size}.safetensors")
""" % DATASET)  # noqa: UP031 - the script itself is full of braces


def run(cmd, env):
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.parametrize("net,process", [("dit", "ddpm"), pytest.param("mlp", "edm", marks=pytest.mark.slow)])
def test_two_gloo_processes_match_one_process(tmp_path, monkeypatch, net, process):
    from safetensors.torch import load_file

    monkeypatch.setenv("ALLOY_DATA_DIR", str(tmp_path / "data"))
    write_synthetic()
    script = tmp_path / "ddp_step.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("WORLD_SIZE", None)
    run([sys.executable, str(script), net, process, str(tmp_path)], env)
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0", "--rdzv_backend=c10d",
         "--rdzv_endpoint=localhost:0", str(script), net, process, str(tmp_path)], env)
    single = load_file(str(tmp_path / "grads_rank0_world1.safetensors"))
    rank0 = load_file(str(tmp_path / "grads_rank0_world2.safetensors"))
    rank1 = load_file(str(tmp_path / "grads_rank1_world2.safetensors"))
    assert single.keys() == rank0.keys() == rank1.keys() and len(single) > 4
    for name in single:
        assert torch.equal(rank0[name], rank1[name]), name  # DDP all-reduced: every rank holds the same gradient
        torch.testing.assert_close(rank0[name], single[name], rtol=1e-4, atol=1e-6, msg=name)
