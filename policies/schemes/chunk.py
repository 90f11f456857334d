"""Full-chunk scheme (Diffusion Policy): denoise Tp actions, execute Ta of them, then plan again.

The executed slice is `chunk[To-1 : To-1+Ta]` (the chunk starts at the oldest observation in the history). Envs
are replanned independently: only envs whose queue is empty are encoded and sampled at a step.
"""

from __future__ import annotations

import numpy as np
import torch

from policies.config import SchemeConfig
from policies.errors import PolicyError
from policies.schemes.base import Scheme, SchemeHost, refill_and_take


class ChunkScheme(Scheme):
    def __init__(self, cfg: SchemeConfig, obs_horizon: int, pred_horizon: int, action_dim: int):
        super().__init__(cfg, obs_horizon, pred_horizon, action_dim)
        self.action_horizon = cfg.action_horizon
        if self.action_horizon < 1 or obs_horizon - 1 + self.action_horizon > pred_horizon:
            raise PolicyError(f"scheme.action_horizon={self.action_horizon} does not fit: need 1 <= Ta and "
                              f"obs_horizon-1+Ta <= pred_horizon ({obs_horizon}-1+{self.action_horizon} > {pred_horizon})")
        self.queue: torch.Tensor | None = None  # (B, Ta, da) normalised actions
        self.cursor: np.ndarray | None = None  # (B,) next index into the queue; Ta = empty

    def training_loss(self, host, ctx, actions, rs):
        return host.process.training_loss(lambda x, level: host.net.denoise(x, level, ctx), actions, rs)

    def reset(self, num_envs, mask):
        if self.queue is None or self.queue.shape[0] != num_envs or mask is None:
            self.queue = None
            self.cursor = np.full(num_envs, self.action_horizon, dtype=np.int64)
            return
        self.cursor[np.asarray(mask, dtype=bool)] = self.action_horizon

    def plan(self, host: SchemeHost, rows: torch.Tensor | None = None) -> torch.Tensor:
        """A fresh normalised chunk (B_rows, Tp, da) from the current observation history."""
        ctx = host.encode_current(rows)
        batch = ctx.shape[0]
        device = ctx.device
        net = host.net
        return host.process.sample(lambda x, level: net.denoise(x, level, ctx),
                                   (batch, self.pred_horizon, self.action_dim), device)

    def act(self, host):
        return refill_and_take(self, lambda rows: self.plan(host, rows))
