"""Exponential moving average of the weights with Diffusion Policy's warmup form.

decay(step) = clamp(1 - (1 + step / inv_gamma) ** -power, min, max), with step counted from `update_after`;
the first updates therefore copy the weights almost verbatim and the average lengthens as training goes on.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, power: float = 0.75, inv_gamma: float = 1.0, min_decay: float = 0.0,
                 max_decay: float = 0.9999, update_after: int = 0):
        self.model = model  # a separate copy that holds the averaged weights
        self.model.requires_grad_(False)
        self.power, self.inv_gamma = power, inv_gamma
        self.min_decay, self.max_decay, self.update_after = min_decay, max_decay, update_after
        self.num_updates = 0

    def decay(self, step: int) -> float:
        step = max(0, step - self.update_after - 1)
        if step <= 0:
            return 0.0
        value = 1 - (1 + step / self.inv_gamma) ** -self.power
        return max(self.min_decay, min(value, self.max_decay))

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        d = self.decay(self.num_updates)
        for ema_p, p in zip(self.model.parameters(), source.parameters()):
            if p.requires_grad:
                ema_p.mul_(d).add_(p.detach().to(ema_p.dtype), alpha=1 - d)
            else:
                ema_p.copy_(p)
        for ema_b, b in zip(self.model.buffers(), source.buffers()):
            ema_b.copy_(b)
        self.num_updates += 1
