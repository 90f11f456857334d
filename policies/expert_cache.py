"""MoDE expert caching: for a noise level seen before, reuse its routing and run each block's experts as one MLP.

MoDE's router sees only the noise-level embedding (and, with `route_keys`, a robot token: entries are then per robot
and a batch of several robots runs the routed forward), so at the fixed levels of a sampler (EDM sigmas, DDPM/DDIM
timesteps, a streaming buffer's per-position ladder, truncated's band) the chosen experts and their weights are
constants. For each level pattern the cache stores the routing embedding and, per block, the union U of the experts
any token uses with per-token weights (zeros for experts a token did not choose). The experts in U are fused into
one wider SwiGLU: gate and up projections stacked into one matrix, down projections concatenated. The output is
W_down [(silu(W_gate x) * W_up x) * weights], which equals the routed mixture exactly because the experts have no
biases. With a plain full chunk every token shares one routing, so U is just the top-k experts and the routing
weights are folded into the concatenated down projection in advance: each block's feed-forward is then exactly two
matmuls (one for all gate/up projections, one for all weighted down projections). Under streaming each action
position is routed by its own level, U is the union over positions and the per-token weights are applied between
the two matmuls. Sampler levels are constant tensors, so a repeated level is found by tensor identity (guarded by
its in-place version) without reading it back; the weight check runs once per control step.

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

from policies.diffusion.base import building_constants

MAX_PATTERNS = 1024


class _Block:
    """One block's routing for one level pattern and its fused expert weights.

    `w_in` stacks the gate and up projections of the experts in the union U (one matmul); when every token of the
    pattern has the same experts and weights (a per-sample level: full chunk, truncated) the routing weights are
    folded into `w_down` in advance, so the block's feed-forward is exactly two matmuls; otherwise (per-position
    levels, streaming) `scale` holds the per-token weights (1, S, |U|, 1) applied between them."""

    __slots__ = ("experts", "w_in", "w_down", "scale")

    def __init__(self, experts, w_in, w_down, scale):
        self.experts, self.w_in, self.w_down, self.scale = experts, w_in, w_down, scale


class _Entry:
    __slots__ = ("route", "blocks", "level")

    def __init__(self, route, blocks, level):
        self.route, self.blocks, self.level = route, blocks, level


FOLD_TOLERANCE = 1e-6  # largest spread of a token's routing weight that still counts as "every token alike"


class ExpertCache:
    def __init__(self):
        self.enabled = True
        self._patterns: dict = {}
        self._by_level: dict = {}  # id(level tensor) -> entry, for samplers that pass the same constant tensor
        self._stamp = None
        self._slots = None  # (net, [(module._parameters, name)]) the stamp reads
        self._stamp_checked = False  # inside one engagement (one control step) weights cannot change
        self.hits = 0
        self.misses = 0
        self._recorded: list | None = None  # export: the entries of one eager pass, in call order
        self._replay: list | None = None  # export: those entries handed out to the traced pass, in the same order

    @staticmethod
    def for_net(net) -> ExpertCache | None:
        from policies.nets.mode import MoDE

        return ExpertCache() if isinstance(moe_of(net), MoDE) else None

    def clear(self) -> None:
        self._patterns.clear()
        self._by_level.clear()

    # -- keys ------------------------------------------------------------------------------------------------------
    def _weights_stamp(self, net) -> tuple:
        """Identity and in-place version of every weight a cache entry depends on (noise embedding, routers,
        experts); attention, norms and projections are used live and need no stamp. The owning modules are listed
        once; their parameter slots are read every time, so a replaced parameter is noticed too."""
        slots = self._slots
        if slots is None or slots[0] is not net:
            mods = [m for part in [net.noise] + [b.moe for b in net.blocks] for m in part.modules() if m._parameters]
            slots = self._slots = (net, [(m._parameters, name) for m in mods for name in m._parameters])
        return tuple((p.data_ptr(), p._version, p.dtype) for p in (d[n] for d, n in slots[1]) if p is not None)

    def _check_stamp(self, net) -> None:
        stamp = self._weights_stamp(net)
        if stamp != self._stamp:
            self.clear()
            self._stamp = stamp

    # -- building --------------------------------------------------------------------------------------------------
    def _build(self, net, level: torch.Tensor, ctx_len: int, horizon: int, keep_level, robot=None) -> _Entry:
        route = net.routing_embedding(level, ctx_len, horizon, robot)  # (1, S, D)
        blocks = []
        flat = route.reshape(-1, route.shape[-1])
        for block in net.blocks:
            moe = block.moe
            _, experts, weights = moe.router(flat)  # (S, k) each
            union = tuple(sorted(set(experts.flatten().tolist())))
            scale = torch.zeros(flat.shape[0], len(union), device=flat.device, dtype=torch.float32)
            for j, e in enumerate(union):
                scale[:, j] = (weights * (experts == e)).sum(dim=-1)
            ex = [moe.experts[e] for e in union]
            w_in = torch.cat([e.w_gate.weight for e in ex] + [e.w_up.weight for e in ex], dim=0).detach().clone()
            w_down = torch.cat([e.w_down.weight for e in ex], dim=1).detach().clone()
            hidden = ex[0].w_down.weight.shape[1]
            if len(union) == experts.shape[1] and float((scale - scale[-1:]).abs().max()) <= FOLD_TOLERANCE:
                fold = scale[-1].repeat_interleave(hidden).to(w_down.dtype)  # every token alike: weights into W_down
                blocks.append(_Block(union, w_in, w_down * fold[None], None))
            else:
                blocks.append(_Block(union, w_in, w_down, scale.to(route.dtype)[None, :, :, None]))
        return _Entry(route, blocks, keep_level)

    def _entry(self, net, x, level, ctx) -> _Entry | None:
        """The cached routing of this call's level pattern (built on a miss); None if rows differ in levels (or, for
        a router that also sees the robot, in robots)."""
        horizon, ctx_len = x.shape[1], ctx.shape[1]
        robot = net.robot_token(ctx)
        constant = not level.is_inference() and robot is None  # sampler constants: by identity, guarded by version
        if constant:
            hit = self._by_level.get(id(level))
            if hit is not None and hit[0] is level and hit[1] == level._version and hit[2] == (ctx_len, horizon,
                                                                                                x.dtype):
                self.hits += 1
                return hit[3]
        lv = level.detach().float().cpu()
        if lv.shape[0] > 1 and not bool((lv == lv[:1]).all()):
            return None
        robot_key = b""
        if robot is not None:
            rv = robot.detach().float().cpu()
            if rv.shape[0] > 1 and not bool((rv == rv[:1]).all()):
                return None  # a batch of several robots: the routed forward
            robot_key = rv[0].numpy().tobytes()
        key = (tuple(lv.shape[1:]), lv[0].numpy().tobytes(), robot_key, ctx_len, horizon, str(x.device), x.dtype)
        entry = self._patterns.get(key)
        if entry is None:
            self.misses += 1
            with building_constants():
                entry = self._build(net, level[:1], ctx_len, horizon, None, None if robot is None else robot[:1])
            if len(self._patterns) < MAX_PATTERNS:
                self._patterns[key] = entry
        else:
            self.hits += 1
        if constant and len(self._by_level) < MAX_PATTERNS:
            self._by_level[id(level)] = (level, level._version, (ctx_len, horizon, x.dtype), entry)
        return entry

    # -- running ---------------------------------------------------------------------------------------------------
    def denoise(self, net, x: torch.Tensor, level: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        from policies.nets.mode import MoDE

        if self._replay is not None:  # tracing for export: no data may be read, the routing is the recorded one
            entry = self._replay.pop(0)
            if entry is None:
                return MoDE.denoise(net, x, level, ctx)
        else:
            if not self.enabled or torch.is_grad_enabled() or net.training:
                return MoDE.denoise(net, x, level, ctx)
            if not self._stamp_checked:
                self._check_stamp(net)
                self._stamp_checked = self._engaged
            # a graph being exported must serve every robot: a robot-routed net keeps its routed forward there
            robot_routed = net.robot_token(ctx) is not None
            entry = None if robot_routed and self._recorded is not None else self._entry(net, x, level, ctx)
            if self._recorded is not None:
                self._recorded.append(entry)
            if entry is None:
                return MoDE.denoise(net, x, level, ctx)
        route, horizon, b = entry.route, x.shape[1], x.shape[0]
        h = torch.cat([route[:, :1].expand(b, -1, -1), ctx, net.in_proj(x) + net.pos[:, :horizon]], dim=1)
        for block, cached in zip(net.blocks, entry.blocks):
            h = h + block.attn(block.n1(h + route))
            gate, up = F.linear(block.n2(h), cached.w_in).chunk(2, dim=-1)
            a = F.silu(gate) * up
            if cached.scale is not None:
                a = (a.view(b, h.shape[1], len(cached.experts), -1) * cached.scale).view(b, h.shape[1], -1)
            h = h + F.linear(a, cached.w_down)
        return net.head(net.norm(h[:, -horizon:]))

    _engaged = False


@contextlib.contextmanager
def recorded(cache: ExpertCache | None):
    """Keep the entry of every cached call made inside, in order (an eager pass before tracing a graph)."""
    if cache is None:
        yield []
        return
    cache._recorded = []
    try:
        yield cache._recorded
    finally:
        cache._recorded = None


@contextlib.contextmanager
def replayed(cache: ExpertCache | None, entries: list):
    """Hand out `entries` to the cached calls made inside, in order, without looking at any tensor's values: a
    traced graph (export) then holds the fused experts of exactly the levels the eager pass saw."""
    if cache is None:
        yield
        return
    cache._replay = list(entries)
    try:
        yield
    finally:
        cache._replay = None


def moe_of(net):
    """The MoDE denoiser that `net` is or wraps (a consistency student's `inner`: its routing input is the level it
    hands the inner net, still a function of the sampler's fixed levels), else `net`."""
    from policies.nets.mode import MoDE

    inner = getattr(net, "inner", None)
    return inner if not isinstance(net, MoDE) and isinstance(inner, MoDE) else net


@contextlib.contextmanager
def engaged(cache: ExpertCache | None, net):
    """Route `net.denoise` through the cache for the duration of one control step (no-op without a cache)."""
    from policies.nets.mode import MoDE

    net = moe_of(net)
    if cache is None or not cache.enabled or not isinstance(net, MoDE) or "denoise" in vars(net):
        yield  # no cache, or `denoise` is already wrapped on this instance (instrumentation): leave it alone
        return
    net.denoise = lambda x, level, ctx: cache.denoise(net, x, level, ctx)
    cache._engaged, cache._stamp_checked = True, False  # the weights are checked once per control step
    try:
        yield
    finally:
        cache._engaged, cache._stamp_checked = False, False
        del net.denoise
