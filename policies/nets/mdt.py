"""MDT: multimodal diffusion transformer (Reuss et al., RSS 2024), on state observations.

A non-causal encoder runs over [goal token, observation tokens]; the goal token comes from the language
embedding or from the goal state, each through its own projection (a learned null token when neither is given).
A causal decoder over the noisy action tokens cross-attends to the encoder output and is conditioned on the noise
level by AdaLN (zero-initialised gates). The encoder does not depend on the noise level, so `encode` runs once
per control step and the sampler only repeats `denoise`.

Two auxiliary objectives in state space shape the encoder latent during training:
- masked foresight: a mask query cross-attends to the latent and must reconstruct a future state;
- contrastive alignment: InfoNCE between the pooled latent under the language goal and under the state goal.
Training conditions a `state_goal_prob` share of samples on the goal state and the rest on language, so that
either goal works at inference (the policy uses language there; the goal state is unknown online).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from policies.config import NetConfig
from policies.nets.attention import Attention
from policies.nets.common import Denoiser, FeedForward, NetDims, NoiseEmbedding


class EncoderBlock(nn.Module):
    def __init__(self, d, heads, mult, dropout):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads, dropout)
        self.ffn = FeedForward(d, mult, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.drop(self.attn(self.n1(x)))
        return x + self.drop(self.ffn(self.n2(x)))


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class AdaLNDecoderBlock(nn.Module):
    def __init__(self, d, heads, mult, dropout):
        super().__init__()
        self.n1 = nn.LayerNorm(d, elementwise_affine=False)
        self.n2 = nn.LayerNorm(d)
        self.n3 = nn.LayerNorm(d, elementwise_affine=False)
        self.self_attn = Attention(d, heads, dropout)
        self.cross_attn = Attention(d, heads, dropout)
        self.ffn = FeedForward(d, mult, dropout)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.drop = nn.Dropout(dropout)
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x, memory, cond):
        s1, c1, g1, s2, c2, g2 = self.ada(cond).chunk(6, dim=-1)
        x = x + g1 * self.drop(self.self_attn(modulate(self.n1(x), s1, c1), causal=True))
        x = x + self.drop(self.cross_attn(self.n2(x), memory))
        return x + g2 * self.drop(self.ffn(modulate(self.n3(x), s2, c2)))


class MDT(Denoiser):
    def __init__(self, cfg: NetConfig, dims: NetDims):
        super().__init__(cfg, dims)
        d = cfg.d_model
        self.obs_proj = nn.Linear(dims.obs_features, d)
        self.pos = nn.Parameter(torch.zeros(1, 1 + dims.obs_horizon, d))
        self.lang_goal = nn.Linear(dims.lang_dim, d) if dims.lang_dim else None
        self.state_goal = nn.Linear(dims.goal_dim, d) if dims.goal_dim else None
        self.null_goal = nn.Parameter(torch.zeros(1, 1, d))
        self.encoder = nn.ModuleList(EncoderBlock(d, cfg.n_heads, cfg.ffn_mult, cfg.dropout)
                                     for _ in range(cfg.n_enc_layers))
        self.enc_norm = nn.LayerNorm(d)

        self.noise = NoiseEmbedding(d, dims.level_scale)
        self.in_proj = nn.Linear(dims.action_dim, d)
        self.act_pos = nn.Parameter(torch.zeros(1, dims.pred_horizon, d))
        self.decoder = nn.ModuleList(AdaLNDecoderBlock(d, cfg.n_heads, cfg.ffn_mult, cfg.dropout)
                                     for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.head = nn.Linear(d, dims.action_dim)
        nn.init.zeros_(self.final_ada[1].weight)
        nn.init.zeros_(self.final_ada[1].bias)

        if dims.goal_dim:  # masked foresight of a future state
            self.mask_query = nn.Parameter(torch.zeros(1, 1, d))
            self.foresight_attn = Attention(d, cfg.n_heads)
            self.foresight_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, dims.goal_dim))
        if dims.lang_dim and dims.goal_dim:  # latent alignment of language and state goals
            self.align_proj = nn.Linear(d, d)
        for p in (self.pos, self.act_pos, self.null_goal):
            nn.init.normal_(p, std=0.02)

    def _goal_token(self, batch: int, lang, goal) -> torch.Tensor:
        if lang is not None and self.lang_goal is not None:
            return self.lang_goal(lang)[:, None]
        if goal is not None and self.state_goal is not None:
            return self.state_goal(goal)[:, None]
        return self.null_goal.expand(batch, -1, -1)

    def encode(self, obs, lang=None, goal=None):
        h = torch.cat([self._goal_token(obs.shape[0], lang, goal), self.obs_proj(obs)], dim=1) + self.pos
        for block in self.encoder:
            h = block(h)
        return self.enc_norm(h)

    def denoise(self, x, level, ctx):
        horizon = x.shape[1]
        cond = self.noise(level, horizon)
        h = self.in_proj(x) + self.act_pos[:, :horizon]
        for block in self.decoder:
            h = block(h, ctx, cond)
        shift, scale = self.final_ada(cond).chunk(2, dim=-1)
        return self.head(modulate(self.final_norm(h), shift, scale))

    def training_context(self, obs, lang, goal, future_state, rs):
        aux: dict[str, torch.Tensor] = {}
        if self.lang_goal is not None and self.state_goal is not None and goal is not None:
            ctx_lang = self.encode(obs, lang=lang)
            ctx_goal = self.encode(obs, goal=goal)
            use_goal = (rs.rand() < self.cfg.state_goal_prob).to(obs.device)[:, None, None]
            ctx = torch.where(use_goal, ctx_goal, ctx_lang)
            if obs.shape[0] > 1 and self.cfg.contrastive_weight:
                aux["contrastive"] = self.cfg.contrastive_weight * self._contrastive(ctx_lang, ctx_goal)
        else:
            ctx = self.encode(obs, lang=lang)
        if future_state is not None and self.state_goal is not None and self.cfg.foresight_weight:
            aux["foresight"] = self.cfg.foresight_weight * F.mse_loss(self.foresight(ctx), future_state)
        return ctx, aux

    def foresight(self, ctx: torch.Tensor) -> torch.Tensor:
        """The future state reconstructed from the latent through a mask query."""
        query = self.mask_query.expand(ctx.shape[0], -1, -1)
        return self.foresight_head(self.foresight_attn(query, ctx))[:, 0]

    def _contrastive(self, ctx_lang, ctx_goal) -> torch.Tensor:
        za = F.normalize(self.align_proj(ctx_lang.mean(dim=1)), dim=-1)
        zb = F.normalize(self.align_proj(ctx_goal.mean(dim=1)), dim=-1)
        logits = za @ zb.t() / self.cfg.contrastive_temperature
        labels = torch.arange(za.shape[0], device=za.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
