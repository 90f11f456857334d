"""Multi-head attention on `scaled_dot_product_attention` (fused kernels on GPU, exportable to ONNX)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Self- or cross-attention; `causal` masks future query positions when queries and keys are the same tokens."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        b, n, d = x.shape
        src = x if memory is None else memory
        q = self.q(x).view(b, n, self.n_heads, -1).transpose(1, 2)
        k, v = self.kv(src).view(b, src.shape[1], 2, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=causal and memory is None)
        return self.out(y.transpose(1, 2).reshape(b, n, d))
