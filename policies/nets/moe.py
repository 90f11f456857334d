"""Mixture of SwiGLU experts whose router sees only a routing embedding (MoDE: the noise-level embedding).

Top-k routing with weights renormalised over the chosen experts and a Switch-style load-balancing loss
E * sum_i mean(p_i) * frac_i. No projection has a bias, so that for a fixed noise level the chosen experts can
later be fused exactly into one wider MLP (stack input projections, concatenate weighted output projections).
An exported graph (no data-dependent row selection) runs every expert on every token with zero weights for the
experts a token did not choose: the same mixture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.w_gate = nn.Linear(d_model, hidden, bias=False)
        self.w_up = nn.Linear(d_model, hidden, bias=False)
        self.w_down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x):
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Router(nn.Module):
    """Expert choice and weights from the routing embedding only."""

    def __init__(self, d_model: int, num_experts: int, top_k: int):
        super().__init__()
        self.proj = nn.Linear(d_model, num_experts, bias=False)
        self.top_k = top_k

    def forward(self, route: torch.Tensor):
        probs = self.proj(route).float().softmax(dim=-1)
        weights, experts = probs.topk(self.top_k, dim=-1)
        return probs, experts, weights / weights.sum(dim=-1, keepdim=True)


class MoEFeedForward(nn.Module):
    def __init__(self, d_model: int, hidden: int, num_experts: int, top_k: int):
        super().__init__()
        self.router = Router(d_model, num_experts, top_k)
        self.experts = nn.ModuleList(SwiGLU(d_model, hidden) for _ in range(num_experts))

    def forward(self, x: torch.Tensor, route: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x, route: (..., D). Returns the mixture output and the load-balancing loss."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        probs, experts, weights = self.router(route.reshape(-1, route.shape[-1]))
        out = torch.zeros_like(x)
        if torch.compiler.is_exporting() or torch.jit.is_tracing():
            # a graph has no data-dependent row selection: every expert on every token, zero weight where not chosen
            dense = torch.zeros_like(probs).scatter(1, experts, weights).to(x.dtype)
            for e, expert in enumerate(self.experts):
                out = out + expert(x) * dense[:, e:e + 1]
            return out.view(shape), probs.new_zeros(())
        for e, expert in enumerate(self.experts):
            chosen = experts == e  # (N, k)
            rows = chosen.any(dim=-1).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            w = (weights * chosen).sum(dim=-1)[rows].to(x.dtype)
            out.index_add_(0, rows, (expert(x[rows]) * w[:, None]).to(out.dtype))
        num = len(self.experts)
        frac = F.one_hot(experts, num).sum(dim=1).float().mean(dim=0) / experts.shape[-1]
        balance = num * (probs.mean(dim=0) * frac).sum()
        return out.view(shape), balance
