"""MoDE expert caching: for a noise level seen before, reuse its routing and run each block's experts as one MLP.

MoDE's router sees only the noise-level embedding, so at the fixed levels of a sampler (EDM sigmas, DDPM/DDIM
timesteps, a streaming buffer's per-position ladder, truncated's band) the chosen experts and their weights are
constants. For each level pattern the cache stores the routing embedding and, per block, the union U of the experts
any token uses with per-token weights (zeros for experts a token did not choose). The experts in U are fused into
one wider SwiGLU: gate and up projections stacked into one matrix, down projections concatenated. The output is
W_down [(silu(W_gate x) * W_up x) * weights], which equals the routed mixture exactly because the experts have no
biases. With a plain full chunk every token shares one routing, so U is just the top-k experts; under streaming each
action position is routed by its own level and U is the union over positions.

Caching is ON by default for every MoDE policy (`Policy.act` engages it; set `policy.expert_cache.enabled = False`
to compare). It is used only at inference (eval mode, no autograd) and only when every row of the batch has the
same level pattern; anything else runs the ordinary routed forward. Entries are keyed by the exact level values,
so a cache hit always has the routing it stores; they are dropped when any weight changes (parameter identity and
in-place version), so an EMA copy or a reloaded checkpoint never uses stale fused weights.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

MAX_PATTERNS = 1024


class _Block:
    """One block's routing for one level pattern: the expert union and per-token weights (1, S, |U|, 1)."""

    def __init__(self, experts: tuple[int, ...], scale: torch.Tensor):
        self.experts, self.scale = experts, scale


class ExpertCache:
    def __init__(self):
        self.enabled = True
        self._patterns: dict = {}
        self._fused: dict = {}
        self._stamp = None
        self.hits = 0
        self.misses = 0

    @staticmethod
    def for_net(net) -> "ExpertCache | None":
        from policies.nets.mode import MoDE

        return ExpertCache() if isinstance(net, MoDE) else None

    def clear(self) -> None:
        self._patterns.clear()
        self._fused.clear()

    # -- keys ------------------------------------------------------------------------------------------------------
    @staticmethod
    def _weights_stamp(net) -> tuple:
        return tuple((p.data_ptr(), p._version, p.dtype) for p in net.parameters())

    def _check_stamp(self, net) -> None:
        stamp = self._weights_stamp(net)
        if stamp != self._stamp:
            self.clear()
            self._stamp = stamp

    # -- building --------------------------------------------------------------------------------------------------
    def _fused_weights(self, block_index: int, moe, experts: tuple[int, ...]):
        key = (block_index, experts)
        if key not in self._fused:
            ex = [moe.experts[e] for e in experts]
            w_in = torch.cat([e.w_gate.weight for e in ex] + [e.w_up.weight for e in ex], dim=0).detach().clone()
            w_down = torch.cat([e.w_down.weight for e in ex], dim=1).detach().clone()
            self._fused[key] = (w_in, w_down)
        return self._fused[key]

    def _build(self, net, level: torch.Tensor, ctx_len: int, horizon: int):
        route = net.routing_embedding(level, ctx_len, horizon)  # (1, S, D)
        blocks = []
        flat = route.reshape(-1, route.shape[-1])
        for block in net.blocks:
            _, experts, weights = block.moe.router(flat)  # (S, k) each
            union = tuple(sorted(set(experts.flatten().tolist())))
            scale = torch.zeros(flat.shape[0], len(union), device=flat.device, dtype=route.dtype)
            for j, e in enumerate(union):
                scale[:, j] = (weights * (experts == e)).sum(dim=-1).to(route.dtype)
            blocks.append(_Block(union, scale[None, :, :, None]))
        return route, blocks

    # -- running ---------------------------------------------------------------------------------------------------
    def denoise(self, net, x: torch.Tensor, level: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        from policies.nets.mode import MoDE

        if not self.enabled or torch.is_grad_enabled() or net.training:
            return MoDE.denoise(net, x, level, ctx)
        lv = level.detach().float().cpu()
        if lv.shape[0] > 1 and not bool((lv == lv[:1]).all()):
            return MoDE.denoise(net, x, level, ctx)
        self._check_stamp(net)
        horizon, ctx_len = x.shape[1], ctx.shape[1]
        key = (tuple(lv.shape[1:]), lv[0].numpy().tobytes(), ctx_len, horizon, str(x.device), x.dtype)
        entry = self._patterns.get(key)
        if entry is None:
            self.misses += 1
            entry = self._build(net, level[:1], ctx_len, horizon)
            if len(self._patterns) < MAX_PATTERNS:
                self._patterns[key] = entry
        else:
            self.hits += 1
        route, blocks = entry
        b = x.shape[0]
        h = torch.cat([route[:, :1].expand(b, -1, -1), ctx, net.in_proj(x) + net.pos[:, :horizon]], dim=1)
        for i, (block, cached) in enumerate(zip(net.blocks, blocks)):
            h = h + block.attn(block.n1(h + route))
            w_in, w_down = self._fused_weights(i, block.moe, cached.experts)
            gate, up = F.linear(block.n2(h), w_in).chunk(2, dim=-1)
            a = F.silu(gate) * up
            n = len(cached.experts)
            a = (a.view(b, h.shape[1], n, -1) * cached.scale).view(b, h.shape[1], -1)
            h = h + F.linear(a, w_down)
        return net.head(net.norm(h[:, -horizon:]))


@contextlib.contextmanager
def engaged(cache: "ExpertCache | None", net):
    """Route `net.denoise` through the cache for the duration of one control step (no-op without a cache)."""
    from policies.nets.mode import MoDE

    if cache is None or not cache.enabled or not isinstance(net, MoDE) or "denoise" in vars(net):
        yield  # no cache, or `denoise` is already wrapped on this instance (instrumentation): leave it alone
        return
    net.denoise = lambda x, level, ctx: cache.denoise(net, x, level, ctx)
    try:
        yield
    finally:
        del net.denoise
