"""Pieces shared by the denoisers: the noise-level embedding, the observation/language tokeniser, the base class.

Every denoiser splits into `encode(obs, lang, goal) -> ctx` (once per control step) and
`denoise(x, level, ctx) -> prediction` (once per denoising step), so that nothing that does not depend on the
noise level is recomputed inside the sampling loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from policies.config import NetConfig


@dataclass(frozen=True)
class NetDims:
    """The data dims a denoiser is built for."""

    obs_features: int  # concatenated normalised observation keys per time step
    obs_horizon: int
    pred_horizon: int
    action_dim: int
    lang_dim: int  # 0: no language
    goal_dim: int  # dim of the goal state (the `state` key), 0 when there is none
    level_scale: float  # multiplies the process's noise level before the sinusoidal embedding
    route_features: tuple[int, int] = (0, 0)  # [start, stop) of the per-step features a MoDE router also sees


def sinusoidal(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoidal features of a real-valued tensor; shape (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.float().unsqueeze(-1) * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class NoiseEmbedding(nn.Module):
    """Maps a noise level of shape (B,) or (B, Tp) to per-position embeddings (B, Tp, D)."""

    def __init__(self, d_model: int, level_scale: float):
        super().__init__()
        self.level_scale = float(level_scale)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.SiLU(), nn.Linear(4 * d_model, d_model))
        self.d_model = d_model

    def forward(self, level: torch.Tensor, horizon: int) -> torch.Tensor:
        if level.dim() == 1:  # one level per sample: embed once, share it across the chunk
            return self.mlp(sinusoidal(level[:, None] * self.level_scale, self.d_model)).expand(-1, horizon, -1)
        return self.mlp(sinusoidal(level * self.level_scale, self.d_model))


class ObsTokenizer(nn.Module):
    """One token per observation step, plus one language token when the policy is language-conditioned."""

    def __init__(self, dims: NetDims, d_model: int):
        super().__init__()
        self.obs_proj = nn.Linear(dims.obs_features, d_model)
        self.obs_pos = nn.Parameter(torch.zeros(1, dims.obs_horizon, d_model))
        self.lang_proj = nn.Linear(dims.lang_dim, d_model) if dims.lang_dim else None
        nn.init.normal_(self.obs_pos, std=0.02)

    def forward(self, obs: torch.Tensor, lang: torch.Tensor | None) -> torch.Tensor:
        tokens = self.obs_proj(obs) + self.obs_pos
        if self.lang_proj is not None:
            if lang is None:
                raise ValueError("this denoiser was built with language conditioning and needs `lang`")
            tokens = torch.cat([self.lang_proj(lang)[:, None], tokens], dim=1)
        return tokens


class Denoiser(nn.Module):
    """Base class: `forward` = `denoise(x, level, encode(...))`; subclasses may add auxiliary training losses."""

    def __init__(self, cfg: NetConfig, dims: NetDims):
        super().__init__()
        self.cfg = cfg
        self.dims = dims

    def encode(self, obs: torch.Tensor, lang: torch.Tensor | None = None, goal: torch.Tensor | None = None):
        raise NotImplementedError

    def denoise(self, x: torch.Tensor, level: torch.Tensor, ctx) -> torch.Tensor:
        raise NotImplementedError

    def training_context(self, obs, lang, goal, future_state, rs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Context for the diffusion loss plus weighted auxiliary losses (none by default)."""
        return self.encode(obs, lang), {}

    def pop_auxiliary_losses(self) -> dict[str, torch.Tensor]:
        """Weighted losses gathered during `denoise` calls since the last pop (MoDE's load balancing)."""
        return {}

    def forward(self, x, level, obs, lang=None, goal=None):
        return self.denoise(x, level, self.encode(obs, lang, goal))


def causal_mask(n: int, device) -> torch.Tensor:
    """Boolean mask, True where attention is NOT allowed (future positions)."""
    return torch.triu(torch.ones(n, n, dtype=torch.bool, device=device), diagonal=1)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, mult: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, mult * d_model), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mult * d_model, d_model))

    def forward(self, x):
        return self.net(x)
