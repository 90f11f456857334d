"""Distillation: specialists into a generalist, and diffusion step distillation.

Importing `distill` registers its kinds of checkpoint with `training.evaluation.load_policy`: a directory written by
`distill.consistency.save_student` (config.yaml with a `consistency:` section) loads as the few-step student.
"""

from __future__ import annotations

from typing import Any

from training.evaluation.policy_loader import register_checkpoint_kind

STUDENT_SECTION = "consistency"  # == distill.consistency.SECTION, named here so that importing distill stays light


def _load_consistency_student(path: Any, device: str, **sampling: Any) -> Any:
    from distill.consistency import load_student
    from training.runtime import resolve_device

    return load_student(path, device=resolve_device(device), **sampling)


register_checkpoint_kind(STUDENT_SECTION, _load_consistency_student, kind="consistency student")
