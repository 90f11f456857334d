"""Diffusion processes: how noise is added in training and removed at inference, independent of the denoiser."""

from __future__ import annotations

from policies.config import DiffusionConfig
from policies.diffusion.base import Process
from policies.errors import PolicyError


def build_process(cfg: DiffusionConfig) -> Process:
    if cfg.name in ("ddpm", "ddim"):
        from policies.diffusion.ddpm import DiffusersProcess

        return DiffusersProcess(cfg, cfg.name)
    if cfg.name == "edm":
        from policies.diffusion.edm import EDMProcess

        return EDMProcess(cfg)
    if cfg.name == "regression":
        from policies.diffusion.regression import RegressionProcess

        return RegressionProcess(cfg)
    raise PolicyError(f"unknown diffusion process {cfg.name!r}; use one of ddpm, ddim, edm, regression")


__all__ = ["Process", "build_process"]
