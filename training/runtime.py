"""Runtime helpers shared by every command: device choice and global seeding."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from training.errors import TrainingError


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; an explicit CUDA request without CUDA is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"device={device} was requested but CUDA is not available; use device=auto or device=cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise TrainingError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:<index>") from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so that a run is reproducible."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
