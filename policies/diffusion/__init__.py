"""Diffusion processes: how noise is added in training and removed at inference, independent of the denoiser."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from policies.config import DiffusionConfig
from policies.diffusion.base import Process
from policies.diffusion.ddpm import DiffusersProcess
from policies.diffusion.edm import EDMProcess
from policies.diffusion.gaussian import GaussianProcess
from policies.diffusion.regression import RegressionProcess
from policies.errors import PolicyError

# `diffusion.name` -> the process it builds from its DiffusionConfig (configs/diffusion/<name>.yaml picks one).
PROCESSES: dict[str, Callable[[DiffusionConfig], Process]] = {
    "ddpm": partial(DiffusersProcess, kind="ddpm"),
    "ddim": partial(DiffusersProcess, kind="ddim"),
    "edm": EDMProcess,
    "regression": RegressionProcess,
    "gaussian": GaussianProcess,
}


def process_factory(name: str) -> Callable[[DiffusionConfig], Process]:
    try:
        return PROCESSES[name]
    except KeyError:
        raise PolicyError(f"unknown diffusion process {name!r}; use one of {', '.join(PROCESSES)}") from None


def build_process(cfg: DiffusionConfig) -> Process:
    return process_factory(cfg.name)(cfg)


__all__ = ["PROCESSES", "Process", "build_process", "process_factory"]
