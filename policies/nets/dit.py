"""DiT: the Diffusion Policy transformer baseline (Chi et al.).

Noisy action tokens run through a causal transformer decoder whose memory is a time token plus the observation
(and language) tokens. `encode` projects the observation tokens once per control step; the time token is the
only memory entry that changes between denoising steps. A per-position noise embedding is also added to each
action token so that per-position noise levels (streaming) are seen by every token.
"""

from __future__ import annotations

import torch
from torch import nn

from policies.config import NetConfig
from policies.nets.attention import Attention
from policies.nets.common import Denoiser, FeedForward, NetDims, NoiseEmbedding, ObsTokenizer


class DecoderBlock(nn.Module):
    def __init__(self, d: int, heads: int, mult: int, dropout: float):
        super().__init__()
        self.n1, self.n2, self.n3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = Attention(d, heads, dropout)
        self.cross_attn = Attention(d, heads, dropout)
        self.ffn = FeedForward(d, mult, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, memory):
        x = x + self.drop(self.self_attn(self.n1(x), causal=True))
        x = x + self.drop(self.cross_attn(self.n2(x), memory))
        return x + self.drop(self.ffn(self.n3(x)))


class DiT(Denoiser):
    def __init__(self, cfg: NetConfig, dims: NetDims):
        super().__init__(cfg, dims)
        d = cfg.d_model
        self.tokens = ObsTokenizer(dims, d)
        self.cond_mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.Mish(), nn.Linear(4 * d, d))
        self.noise = NoiseEmbedding(d, dims.level_scale)
        self.in_proj = nn.Linear(dims.action_dim, d)
        self.pos = nn.Parameter(torch.zeros(1, dims.pred_horizon, d))
        self.blocks = nn.ModuleList(DecoderBlock(d, cfg.n_heads, cfg.ffn_mult, cfg.dropout) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, dims.action_dim)
        nn.init.normal_(self.pos, std=0.02)

    def encode(self, obs, lang=None, goal=None):
        return self.cond_mlp(self.tokens(obs, lang))

    def denoise(self, x, level, ctx):
        emb = self.noise(level, x.shape[1])  # (B, Tp, D)
        memory = torch.cat([emb.mean(dim=1, keepdim=True), ctx], dim=1)
        h = self.in_proj(x) + self.pos[:, : x.shape[1]] + emb
        for block in self.blocks:
            h = block(h, memory)
        return self.head(self.norm(h))
