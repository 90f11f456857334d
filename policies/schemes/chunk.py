"""Full-chunk scheme (Diffusion Policy): denoise Tp actions, execute Ta of them, then plan again.

The executed slice is `chunk[To-1 : To-1+Ta]` (the chunk starts at the oldest observation in the history). Envs
are replanned independently: only envs whose queue is empty are encoded and sampled at a step.
"""

from __future__ import annotations

import numpy as np
import torch

from policies.config import SchemeConfig
from policies.errors import PolicyError
from policies.schemes.base import Scheme, SchemeHost


class ChunkScheme(Scheme):
    def __init__(self, cfg: SchemeConfig, obs_horizon: int, pred_horizon: int, action_dim: int):
        super().__init__(cfg, obs_horizon, pred_horizon, action_dim)
        self.action_horizon = cfg.action_horizon
        if self.action_horizon < 1 or obs_horizon - 1 + self.action_horizon > pred_horizon:
            raise PolicyError(f"scheme.action_horizon={self.action_horizon} does not fit: need 1 <= Ta and "
                              f"obs_horizon-1+Ta <= pred_horizon ({obs_horizon}-1+{self.action_horizon} > {pred_horizon})")
        self.queue: torch.Tensor | None = None  # (B, Ta, da) normalised actions
        self.cursor: torch.Tensor | None = None  # (B,) next index into the queue; Ta = empty

    def training_loss(self, host, ctx, actions, rs):
        return host.process.training_loss(lambda x, level: host.net.denoise(x, level, ctx), actions, rs)

    def reset(self, num_envs, mask):
        if self.queue is None or self.queue.shape[0] != num_envs or mask is None:
            self.queue = None
            self.cursor = torch.full((num_envs,), self.action_horizon, dtype=torch.long)
            return
        self.cursor[torch.as_tensor(np.asarray(mask, dtype=bool))] = self.action_horizon

    def plan(self, host: SchemeHost, rows: torch.Tensor | None = None) -> torch.Tensor:
        """A fresh normalised chunk (B_rows, Tp, da) from the current observation history."""
        ctx = host.encode_current(rows)
        batch = ctx.shape[0]
        device = ctx.device
        return host.process.sample(lambda x, level: host.net.denoise(x, level, ctx),
                                   (batch, self.pred_horizon, self.action_dim), device)

    @torch.no_grad()
    def act(self, host):
        need = (self.cursor >= self.action_horizon).nonzero(as_tuple=True)[0]
        if need.numel():
            start = self.obs_horizon - 1
            fresh = self.plan(host, need)[:, start: start + self.action_horizon].float()
            if self.queue is None:
                self.queue = fresh.new_zeros((self.cursor.shape[0], self.action_horizon, self.action_dim))
            self.queue[need.to(self.queue.device)] = fresh
            self.cursor[need] = 0
        rows = torch.arange(self.cursor.shape[0])
        out = self.queue[rows.to(self.queue.device), self.cursor.to(self.queue.device)]
        self.cursor += 1
        return out
