"""The degenerate process of plain behaviour cloning: no noise, one net call, MSE to the demonstrated chunk.

Level: always 0. The denoiser receives an all-zero "noisy" chunk, so a denoiser under this process is a direct
regressor from context to action chunk (the MLP baseline's usual pairing).
"""

from __future__ import annotations

import torch

from policies.diffusion.base import Process
from policies.random_source import RandomSource


class RegressionProcess(Process):
    name = "regression"
    level_unit = "always 0"
    level_scale = 1.0

    def __init__(self, cfg=None):
        self.cfg = cfg

    def sample_train_noise(self, shape, rs: RandomSource):
        return torch.zeros((rs.batch, *shape), device=rs.device)

    def add_noise(self, x0, eps, nv):
        return torch.zeros_like(x0)

    def net_input(self, xt, nv):
        return xt, nv.float()

    def loss(self, out, x0, eps, xt, nv):
        return (out.float() - x0.float()) ** 2

    def denoised(self, out, xt, nv):
        return out

    def training_loss(self, denoise, x0, rs):
        zeros = torch.zeros(x0.shape[0], device=x0.device)
        return self.loss(denoise(torch.zeros_like(x0), zeros), x0, None, None, None)

    @torch.no_grad()
    def sample(self, denoise, shape, device, generator=None):
        return denoise(torch.zeros(shape, device=device), torch.zeros(shape[0], device=device)).float()

    def num_net_calls(self):
        return 1


