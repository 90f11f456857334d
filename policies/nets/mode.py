"""MoDE: DiT blocks whose feed-forward is a noise-routed mixture of SwiGLU experts (Reuss et al., ICLR 2025).

The sequence is [noise token, context tokens, action tokens]. The noise embedding is also added to every block's
attention input, and it is the ONLY input of each block's router: every token of a sample at a given noise
level uses the same experts (per-position levels route each action token by its own level). The load-balancing
losses of all blocks are averaged and weighted by `balance_weight`.

With `route_keys` (e.g. the `embodiment` descriptor) the router also sees a projection of those observation
features of the latest step, added to the noise embedding: experts are then chosen per (level, robot), still never
from the rest of the observation, so for a fixed robot the routing is fixed and expert caching applies per robot.
The projection travels as the first context token (the "robot token"), which the blocks also attend to.
"""

from __future__ import annotations

import torch
from torch import nn

from policies.config import NetConfig
from policies.nets.attention import Attention
from policies.nets.common import Denoiser, NetDims, NoiseEmbedding, ObsTokenizer
from policies.nets.moe import MoEFeedForward


class MoDEBlock(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int, num_experts: int, top_k: int, dropout: float):
        super().__init__()
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads, dropout)
        self.moe = MoEFeedForward(d, hidden, num_experts, top_k)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, route):
        x = x + self.drop(self.attn(self.n1(x + route)))
        y, balance = self.moe(self.n2(x), route)
        return x + self.drop(y), balance


class MoDE(Denoiser):
    def __init__(self, cfg: NetConfig, dims: NetDims):
        super().__init__(cfg, dims)
        d = cfg.d_model
        self.tokens = ObsTokenizer(dims, d)
        self.noise = NoiseEmbedding(d, dims.level_scale)
        self.in_proj = nn.Linear(dims.action_dim, d)
        self.pos = nn.Parameter(torch.zeros(1, dims.pred_horizon, d))
        # SwiGLU has three projections: 2/3 of ffn_mult*d keeps each expert's parameters equal to a GELU FFN's.
        hidden = int(2 * cfg.ffn_mult * d / 3)
        self.blocks = nn.ModuleList(
            MoDEBlock(d, cfg.n_heads, hidden, cfg.num_experts, cfg.top_k, cfg.dropout) for _ in range(cfg.n_layers))
        a, b = dims.route_features
        self.route_proj = nn.Linear(b - a, d, bias=False) if b > a else None
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, dims.action_dim)
        nn.init.normal_(self.pos, std=0.02)
        self._balance: list[torch.Tensor] = []

    def encode(self, obs, lang=None, goal=None):
        tokens = self.tokens(obs, lang)
        if self.route_proj is None:
            return tokens
        a, b = self.dims.route_features
        return torch.cat([self.route_proj(obs[:, -1:, a:b]), tokens], dim=1)  # the robot token first

    def robot_token(self, ctx: torch.Tensor) -> torch.Tensor | None:
        """(B, 1, D) projection of the route keys (None when the router sees the level alone)."""
        return ctx[:, :1] if self.route_proj is not None else None

    def routing_embedding(self, level: torch.Tensor, ctx_len: int, horizon: int,
                          robot: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token routing input (B, 1 + ctx_len + Tp, D): a function of the noise level (and the robot token)."""
        emb = self.noise(level, horizon)
        if robot is not None:
            emb = emb + robot
        sample = emb.mean(dim=1, keepdim=True)
        return torch.cat([sample.expand(-1, 1 + ctx_len, -1), emb], dim=1)

    def denoise(self, x, level, ctx):
        horizon = x.shape[1]
        route = self.routing_embedding(level, ctx.shape[1], horizon, self.robot_token(ctx))
        h = torch.cat([route[:, :1], ctx, self.in_proj(x) + self.pos[:, :horizon]], dim=1)
        balances = []
        for block in self.blocks:
            h, balance = block(h, route)
            balances.append(balance)
        if self.training:
            self._balance.append(torch.stack(balances).mean())
        return self.head(self.norm(h[:, -horizon:]))

    def pop_auxiliary_losses(self):
        if not self._balance:
            return {}
        loss = torch.stack(self._balance).mean() * self.cfg.balance_weight
        self._balance = []
        return {"balance": loss}
