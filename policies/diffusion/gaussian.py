"""A Gaussian policy head as a process: the denoiser's output is the mean of each action, and one learned log
standard deviation per action dimension (state independent, as in PPO-style Gaussian policies) is its spread.

No noise is added or removed: like `regression`, the denoiser sees an all-zero chunk at level 0, so a denoiser under
this process is a direct regressor; `sample` returns the mean (what a deployed policy executes). Trained alone
(imitation), the loss is the Gaussian negative log-likelihood of the demonstrated actions; as a distillation student
its mean and std are matched to a Gaussian teacher (`distill.objectives`: MSE, KL, TAID). Units are the policy's
normalised action units.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from policies.diffusion.regression import RegressionProcess

LOG_STD_MIN, LOG_STD_MAX = -7.0, 2.0
INIT_LOG_STD = math.log(0.5)


class GaussianProcess(RegressionProcess, nn.Module):
    name = "gaussian"
    level_unit = "always 0"

    def __init__(self, cfg=None):
        nn.Module.__init__(self)
        RegressionProcess.__init__(self, cfg)
        self.log_std: nn.Parameter | None = None

    def bind(self, spec) -> None:
        """Size the log std by the policy's action dimension (called by `Policy.__init__`)."""
        self.log_std = nn.Parameter(torch.full((int(spec.action_dim),), INIT_LOG_STD))

    def clamped_log_std(self) -> torch.Tensor:
        return self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def loss(self, out, x0, eps, xt, nv):
        """Negative log-likelihood per element (without the constant)."""
        log_std = self.clamped_log_std()
        return 0.5 * ((x0.float() - out.float()) * torch.exp(-log_std)) ** 2 + log_std

    def distribution(self, denoise, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (shaped like `like`) and log std (broadcastable) with gradient, for distillation objectives."""
        zeros = torch.zeros(like.shape[0], device=like.device)
        mean = denoise(torch.zeros_like(like), zeros)
        return mean.float(), self.clamped_log_std().expand_as(mean)
