"""The action-scheme interface: which actions are denoised per control step, and the per-env state that needs.

A scheme owns the inference-time buffers (queued actions, partially denoised chunks, ...) and the training loss
on a demonstrated chunk. It reaches the denoiser and process through the `SchemeHost` the policy hands it, so a
new scheme (streaming, truncated-from-anchors) is one new file here plus a registry entry.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import nn

from policies.config import SchemeConfig
from policies.diffusion.base import Process
from policies.nets.common import Denoiser
from policies.random_source import RandomSource


class SchemeHost(Protocol):
    """What a scheme may use from the policy at a control step."""

    net: Denoiser
    process: Process
    pred_horizon: int
    obs_horizon: int
    action_dim: int

    def encode_current(self, rows: torch.Tensor | None = None):
        """Context of the current observation history, for all envs or the given env rows (once per step)."""


class Scheme(nn.Module):
    def __init__(self, cfg: SchemeConfig, obs_horizon: int, pred_horizon: int, action_dim: int):
        super().__init__()
        self.cfg = cfg
        self.obs_horizon, self.pred_horizon, self.action_dim = obs_horizon, pred_horizon, action_dim

    def training_loss(self, host: SchemeHost, ctx, actions: torch.Tensor, rs: RandomSource) -> torch.Tensor:
        """Per-element loss (B, Tp, da) for normalised demonstrated actions under this scheme."""
        raise NotImplementedError

    def reset(self, num_envs: int, mask: np.ndarray | None) -> None:
        """Clear the inference state of all envs (mask None) or of the envs where mask is true."""
        raise NotImplementedError

    @torch.no_grad()
    def act(self, host: SchemeHost) -> torch.Tensor:
        """Normalised actions (B, da) for this control step."""
        raise NotImplementedError


def take_from_queue(queue: torch.Tensor, cursor: np.ndarray) -> torch.Tensor:
    """queue[b, cursor[b]] for every env b (B, da), then advance the cursors (numpy, in place)."""
    first = int(cursor[0])
    if (cursor == first).all():
        out = queue[:, first]
    else:
        out = queue[torch.arange(cursor.shape[0], device=queue.device), torch.from_numpy(cursor).to(queue.device)]
    cursor += 1
    return out


def refill_and_take(scheme, plan_rows) -> torch.Tensor:
    """One executed action per env from `scheme`'s queue of Ta actions, replanning the envs whose queue ran out.

    `plan_rows(rows)` returns full chunks (b, Tp, da) for the env indices `rows` (a LongTensor, or None for all);
    the Ta actions from the current step on are queued. The scheme holds `cursor`, `queue`, `action_horizon`,
    `obs_horizon` and `action_dim`.
    """
    cursor, ta = scheme.cursor, scheme.action_horizon
    need_mask = cursor >= ta
    if need_mask.any():
        n = cursor.shape[0]
        need = np.flatnonzero(need_mask)
        every = need.size == n
        start = scheme.obs_horizon - 1
        fresh = plan_rows(None if every else torch.from_numpy(need))[:, start: start + ta].float()
        if every:
            scheme.queue = fresh
        else:
            if scheme.queue is None:
                scheme.queue = fresh.new_zeros((n, ta, scheme.action_dim))
            scheme.queue[torch.from_numpy(need).to(scheme.queue.device)] = fresh
        cursor[need] = 0
    return take_from_queue(scheme.queue, cursor)
