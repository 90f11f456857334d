"""`load_policy` dispatch: a distilled consistency student evaluates with its own few-step sampler."""

from __future__ import annotations

import numpy as np
import torch

from distill.consistency import make_student, save_student
from policies import DiffusionConfig, NetConfig, Policy, PolicySpec, SchemeConfig
from training.evaluation import load_policy


def test_a_consistency_student_directory_loads_as_the_student(tmp_path):
    torch.manual_seed(0)
    teacher = Policy(PolicySpec(
        obs_dims={"state": 4}, action_dim=2,
        net=NetConfig(name="dit", d_model=32, n_heads=4, n_layers=2, obs_horizon=2, pred_horizon=8),
        diffusion=DiffusionConfig(name="edm", num_inference_steps=10), scheme=SchemeConfig(action_horizon=4))).eval()
    student = make_student(teacher, steps=1, grid=10).eval()
    save_student(student, tmp_path / "student")
    teacher.save_pretrained(tmp_path / "teacher")

    loaded = load_policy(tmp_path / "student", device="cpu")
    assert loaded.process.num_net_calls() == 1  # not the teacher's 10-step EDM sampler
    assert load_policy(tmp_path / "teacher", device="cpu").process.num_net_calls() == 10
    obs = {"state": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)}
    torch.manual_seed(0)
    expected = student.act(obs)
    torch.manual_seed(0)
    assert np.array_equal(loaded.act(obs), expected)
