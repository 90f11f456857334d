"""`load_policy`: one registry of loaders. A distilled consistency student evaluates with its own few-step sampler
once `distill` (which registers it) is imported; without it, one clear line says to import it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import distill
from distill.consistency import SECTION, make_student, save_student
from policies import DiffusionConfig, NetConfig, Policy, PolicySpec, SchemeConfig
from training.errors import TrainingError
from training.evaluation import load_policy, policy_loader, register_checkpoint_kind

REPO = Path(__file__).resolve().parents[1]


def _teacher() -> Policy:
    torch.manual_seed(0)
    return Policy(PolicySpec(
        obs_dims={"state": 4}, action_dim=2,
        net=NetConfig(name="dit", d_model=32, n_heads=4, n_layers=2, obs_horizon=2, pred_horizon=8),
        diffusion=DiffusionConfig(name="edm", num_inference_steps=10), scheme=SchemeConfig(action_horizon=4))).eval()


def test_a_consistency_student_directory_loads_as_the_student(tmp_path):
    teacher = _teacher()
    student = make_student(teacher, steps=1, grid=10).eval()
    save_student(student, tmp_path / "student")
    teacher.save_pretrained(tmp_path / "teacher")

    loaded = load_policy(tmp_path / "student", device="cpu")
    assert loaded.process.num_net_calls() == 1  # not the teacher's 10-step EDM sampler
    assert load_policy(str(tmp_path / "teacher"), device="cpu").process.num_net_calls() == 10
    obs = {"state": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)}
    torch.manual_seed(0)
    expected = student.act(obs)
    torch.manual_seed(0)
    assert np.array_equal(loaded.act(obs), expected)


def test_distill_registers_the_section_its_students_are_saved_with():
    assert distill.STUDENT_SECTION == SECTION
    assert SECTION in policy_loader._CHECKPOINT_KINDS
    assert policy_loader.SECTION_PACKAGES[SECTION] == "distill"


def test_any_package_can_add_a_kind_of_checkpoint(tmp_path):
    teacher = _teacher()
    teacher.save_pretrained(tmp_path / "tagged", extra={"test_kind": {"note": 1}})
    calls = []

    def load(path, device, **sampling):
        calls.append((path, device, sampling))
        return "tagged policy"

    register_checkpoint_kind("test_kind", load, kind="test kind")
    try:
        assert load_policy(tmp_path / "tagged", device="cpu", action_horizon=2) == "tagged policy"
        assert calls == [(tmp_path / "tagged", "cpu", {"action_horizon": 2})]
        with pytest.raises(TrainingError, match="accepted: teacher, checkpoint, residual, consistency student, test kind"):
            load_policy(tmp_path)
    finally:
        policy_loader._CHECKPOINT_KINDS.pop("test_kind")
    assert load_policy(tmp_path / "tagged", device="cpu").action_dim == 2  # a plain checkpoint again


def test_a_student_without_distill_imported_is_one_clear_training_error(tmp_path):
    teacher = _teacher()
    save_student(make_student(teacher, steps=1, grid=10), tmp_path / "student")
    teacher.save_pretrained(tmp_path / "teacher")
    script = textwrap.dedent(f"""
        import sys
        from training.errors import TrainingError
        from training.evaluation import load_policy
        assert load_policy({str(tmp_path / "teacher")!r}, device="cpu").action_dim == 2
        assert "distill" not in sys.modules, "training imported distill"
        try:
            load_policy({str(tmp_path / "student")!r}, device="cpu")
        except TrainingError as e:
            print(e)
        else:
            raise SystemExit("a student loaded without distill")
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and "`import distill`" in lines[0] and "'consistency:' section" in lines[0], lines
