"""MLP behaviour-cloning baseline: one network maps (obs history, language) to the whole action chunk.

Under the `regression` process it is plain BC (zero input, zero noise level); under a diffusion process it also
sees the noisy chunk and a small per-position noise embedding, so it works with every process like the others.
"""

from __future__ import annotations

import torch
from torch import nn

from policies.config import NetConfig
from policies.nets.common import Denoiser, NetDims, NoiseEmbedding

_NOISE_DIM = 32


class MLP(Denoiser):
    def __init__(self, cfg: NetConfig, dims: NetDims):
        super().__init__(cfg, dims)
        ctx_dim = dims.obs_horizon * dims.obs_features + dims.lang_dim
        in_dim = ctx_dim + dims.pred_horizon * (dims.action_dim + _NOISE_DIM)
        layers, width = [], in_dim
        for _ in range(cfg.mlp_layers):
            layers += [nn.Linear(width, cfg.mlp_hidden), nn.Mish()]
            if cfg.dropout:
                layers.append(nn.Dropout(cfg.dropout))
            width = cfg.mlp_hidden
        layers.append(nn.Linear(width, dims.pred_horizon * dims.action_dim))
        self.net = nn.Sequential(*layers)
        self.noise = NoiseEmbedding(_NOISE_DIM, dims.level_scale)

    def encode(self, obs, lang=None, goal=None):
        parts = [obs.flatten(1)]
        if self.dims.lang_dim:
            if lang is None:
                raise ValueError("this denoiser was built with language conditioning and needs `lang`")
            parts.append(lang)
        return torch.cat(parts, dim=-1)

    def denoise(self, x, level, ctx):
        emb = self.noise(level, x.shape[1]).flatten(1)
        out = self.net(torch.cat([ctx, x.flatten(1), emb], dim=-1))
        return out.view(x.shape)
