"""Streaming diffusion (Hoeg et al., 2024): a rolling buffer whose noise level rises chunk by chunk along the horizon.

Layout of the Tp buffer positions: the To-1 past positions and any positions after the last full chunk are
*inactive*: they always hold zero-mean noise at the top level and carry no loss. The active positions
`[To-1, To-1 + h*Ta)` form h chunks of Ta actions. With m denoiser calls per replanning there are N = h*m levels,
indexed 0 (clean) .. N (top). A level index maps to the process's own noise variable through ONE ladder
(`level_ladder`), used by training and inference alike, so the units agree under DDPM, DDIM and EDM (the
published code mixed inference-step and training-step indices under DDIM).

Per replanning (every Ta control steps of an env): shift the buffer by Ta, re-noise every entry whose label went
up to exactly that label (the tail chunk, which starts from the last entry's content), run m calls that lower every
active index by one, execute the now-clean head chunk. A fresh env is warmed up by a full constant-level
denoising (N calls) followed by re-noising chunk c to level c*m. Training draws per-position levels chunk-wise
(chunk c at (c+1)*m - j, j ~ U[0, m), exactly the states inference visits) or, with `stream_constant_prob`,
one level for the whole buffer (the warm-up states).

The helpers at the top (ladders, re-noising, one generalised DDIM step) are shared with the truncated scheme.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from policies import noise as noise_source
from policies.config import SchemeConfig
from policies.diffusion.base import building_constants, expand_like, symbolic
from policies.errors import PolicyError
from policies.schemes.base import Scheme, SchemeHost, take_from_queue

CLEAN = -1.0  # DDPM/DDIM "timestep" of a clean entry (alpha_cumprod 1); never given to the denoiser


# ---------------------------------------------------------------------------------------------------- level helpers
def process_kind(process) -> str:
    """'vp' (DDPM/DDIM: x = sqrt(ac) x0 + sqrt(1-ac) eps) or 've' (EDM: x = x0 + sigma eps)."""
    if process.name in ("ddpm", "ddim"):
        return "vp"
    if process.name == "edm":
        return "ve"
    raise PolicyError(f"this action scheme needs a diffusion process (ddpm, ddim or edm), not {process.name!r}")


def level_ladder(process, levels: int, top_fraction: float = 1.0) -> torch.Tensor:
    """Native noise variable for level indices 0..levels (0 = clean), increasing; float64 on CPU.

    DDPM/DDIM: evenly spaced training timesteps ending at round(top_fraction * T) - 1 (index 0 -> CLEAN).
    EDM: the process's sigma schedule (exponential or Karras) from sigma_min to sigma_max, or to the sigma that
    `top_fraction` of the cosine VP range corresponds to (index 0 -> 0).
    """
    if levels < 1:
        raise PolicyError(f"a level ladder needs at least one level, got {levels}")
    cfg = process.cfg
    if process_kind(process) == "vp":
        top = max(levels, int(round(top_fraction * cfg.num_train_steps)))
        t = torch.tensor([round(k * top / levels) - 1 for k in range(1, levels + 1)], dtype=torch.float64)
        return torch.cat([torch.tensor([CLEAN], dtype=torch.float64), t])
    from policies.diffusion.edm import sigma_schedule

    sigma_top = cfg.sigma_max if top_fraction >= 1.0 else vp_equivalent_sigma(top_fraction)
    sigma_top = max(sigma_top, cfg.sigma_min * 1.0001)
    down = sigma_schedule(cfg.schedule, levels, cfg.sigma_min, sigma_top, cfg.rho).double()  # levels sigmas, 0
    return down.flip(0)


def vp_equivalent_sigma(fraction: float) -> float:
    """The VE sigma with the noise-to-signal ratio of the squaredcos VP schedule at `fraction` of its range."""
    angle = (fraction + 0.008) / 1.008 * math.pi / 2
    return math.tan(angle)


def signal_noise(process, nv: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, s) with x = a * x0 + s * eps at noise variable nv, broadcast against `like` (B, Tp, da)."""
    nv = expand_like(nv, like)
    if process_kind(process) == "vp":
        ac_table = process.alphas_cumprod.to(like.device).double()
        clean = nv < 0
        ac = torch.where(clean, torch.ones_like(nv, dtype=torch.float64),
                         ac_table[nv.clamp_min(0).long()])
        return ac.sqrt(), (1 - ac).clamp_min(0).sqrt()
    sigma = nv.double()
    return torch.ones_like(sigma), sigma


def noise_to(process, x0: torch.Tensor, eps: torch.Tensor, nv: torch.Tensor) -> torch.Tensor:
    """x0 noised to exactly nv (clean entries, nv = CLEAN or 0, stay x0)."""
    a, s = signal_noise(process, nv, x0)
    return (a * x0.double() + s * eps.double()).to(x0.dtype)


def renoise(process, x: torch.Tensor, nv_from: torch.Tensor, nv_to: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Forward-noise entries at nv_from to nv_to >= nv_from with the exact transition kernel (marginals preserved).

    x_to = (a_to/a_from) x + sqrt(s_to^2 - (a_to/a_from)^2 s_from^2) eps. Entries with nv_to == nv_from are kept.
    """
    a_f, s_f = signal_noise(process, nv_from, x)
    a_t, s_t = signal_noise(process, nv_to, x)
    ratio = a_t / a_f
    var = (s_t**2 - (ratio * s_f) ** 2).clamp_min(0)
    out = ratio * x.double() + var.sqrt() * eps.double()
    same = expand_like(nv_to == nv_from, x)
    return torch.where(same, x.double(), out).to(x.dtype)


def step_to(process, x: torch.Tensor, x0: torch.Tensor, nv_from: torch.Tensor, nv_to: torch.Tensor,
            eta: float, noise: torch.Tensor | None) -> torch.Tensor:
    """One generalised DDIM step per position from nv_from to nv_to <= nv_from given the denoised estimate x0.

    eps_hat = (x - a_f x0) / s_f; x_to = a_t x0 + sqrt(s_t^2 - c^2) eps_hat + c z with
    c = eta * (s_t / s_f) * sqrt(1 - (a_f / a_t)^2): eta 1 is DDPM's ancestral step, eta 0 DDIM / EDM Euler.
    Entries with nv_to == nv_from are kept; nv_to clean returns x0.
    """
    a_f, s_f = signal_noise(process, nv_from, x)
    a_t, s_t = signal_noise(process, nv_to, x)
    xd, x0d = x.double(), x0.double()
    eps_hat = (xd - a_f * x0d) / s_f.clamp_min(1e-12)
    c = torch.zeros_like(s_t)
    if eta > 0:
        c = eta * (s_t / s_f.clamp_min(1e-12)) * (1 - (a_f / a_t) ** 2).clamp_min(0).sqrt()
    out = a_t * x0d + (s_t**2 - c**2).clamp_min(0).sqrt() * eps_hat
    if eta > 0 and noise is not None:
        out = out + c * noise.double()
    out = torch.where(expand_like(nv_to == nv_from, x), xd, out)
    return out.to(x.dtype)


def step_eta(process) -> float:
    """Stochasticity of the per-position sampler: DDPM ancestral (1), DDIM and EDM deterministic (0)."""
    return 1.0 if process.name == "ddpm" else 0.0


class Renoise:
    """`noise_to` / `renoise` between fixed per-position levels with their factors precomputed (same operations on
    x and eps as those functions, so the same values bit for bit)."""

    __slots__ = ("ratio", "sd", "keep")

    def __init__(self, process, nv_from: torch.Tensor | None, nv_to: torch.Tensor, like: torch.Tensor):
        a_t, s_t = signal_noise(process, nv_to, like)
        if nv_from is None:  # noise_to from clean x0
            self.ratio, self.sd, self.keep = a_t, s_t, None
            return
        a_f, s_f = signal_noise(process, nv_from, like)
        self.ratio = a_t / a_f
        self.sd = (s_t**2 - (self.ratio * s_f) ** 2).clamp_min(0).sqrt()
        self.keep = expand_like(nv_to == nv_from, like)

    def __call__(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        xd = x.double()
        out = self.ratio * xd + self.sd * eps.double()
        return (out if self.keep is None else torch.where(self.keep, xd, out)).to(x.dtype)


class Step:
    """One denoiser call at fixed per-position levels nv_from followed by `step_to` towards nv_to, with the
    process's level constants and the step's factors precomputed (bit-identical to `denoise_call` + `step_to`)."""

    __slots__ = ("level", "a_f", "s_f", "a_t", "coef", "c", "keep", "raw")

    def __init__(self, process, nv_from: torch.Tensor, nv_to: torch.Tensor, eta: float, like: torch.Tensor,
                 raw: bool = False):
        self.raw = raw  # the net's output is the clean estimate itself (truncated's sample prediction)
        self.level = process.level_consts(nv_from, like)
        a_f, s_f = signal_noise(process, nv_from, like)
        a_t, s_t = signal_noise(process, nv_to, like)
        self.a_f, self.s_f, self.a_t = a_f, s_f.clamp_min(1e-12), a_t
        c = torch.zeros_like(s_t)
        if eta > 0:
            c = eta * (s_t / s_f.clamp_min(1e-12)) * (1 - (a_f / a_t) ** 2).clamp_min(0).sqrt()
        self.coef = (s_t**2 - c**2).clamp_min(0).sqrt()
        self.c = c if eta > 0 else None
        self.keep = expand_like(nv_to == nv_from, like)

    def denoise(self, host: SchemeHost, x: torch.Tensor, ctx) -> torch.Tensor:
        lv = self.level
        out = host.net.denoise(lv.net_input(x), lv.level, ctx)
        return (out if self.raw else lv.denoised(out, x)).to(x.dtype)

    def __call__(self, host: SchemeHost, x: torch.Tensor, ctx) -> torch.Tensor:
        x0 = self.denoise(host, x, ctx)
        noise = noise_source.randn_like(x) if self.c is not None else None
        xd, x0d = x.double(), x0.double()
        out = self.a_t * x0d + self.coef * ((xd - self.a_f * x0d) / self.s_f)
        if noise is not None:
            out = out + self.c * noise.double()
        return torch.where(self.keep, xd, out).to(x.dtype)


def denoise_call(host: SchemeHost, x: torch.Tensor, nv: torch.Tensor, ctx) -> torch.Tensor:
    """The denoised estimate of x at per-position nv (one denoiser call)."""
    out = host.net.denoise(*host.process.net_input(x, nv.to(x.dtype)), ctx)
    return host.process.denoised(out, x, nv.to(x.dtype)).to(x.dtype)


# ---------------------------------------------------------------------------------------------------- the scheme
class StreamingScheme(Scheme):
    def __init__(self, cfg: SchemeConfig, obs_horizon: int, pred_horizon: int, action_dim: int):
        super().__init__(cfg, obs_horizon, pred_horizon, action_dim)
        self.action_horizon = ta = int(cfg.action_horizon)
        self.start = obs_horizon - 1
        room = pred_horizon - self.start
        if ta < 1 or ta > room:
            raise PolicyError(f"scheme.action_horizon={ta} does not fit: need 1 <= Ta <= pred_horizon-obs_horizon+1 "
                              f"= {room}")
        self.chunks = int(cfg.stream_chunks) or room // ta
        if self.chunks < 1 or self.chunks * ta > room:
            raise PolicyError(f"scheme.stream_chunks={cfg.stream_chunks} chunks of Ta={ta} do not fit in the "
                              f"{room} positions after the past ones; use at most {room // ta}")
        self.calls = int(cfg.stream_calls)
        if self.calls < 1:
            raise PolicyError(f"scheme.stream_calls must be >= 1, got {cfg.stream_calls}")
        if not 0.0 <= cfg.stream_constant_prob <= 1.0:
            raise PolicyError(f"scheme.stream_constant_prob must be in [0, 1], got {cfg.stream_constant_prob}")
        self.levels = self.chunks * self.calls
        chunk_of = torch.full((pred_horizon,), -1, dtype=torch.long)
        for c in range(self.chunks):
            chunk_of[self.start + c * ta: self.start + (c + 1) * ta] = c
        self.chunk_of = chunk_of  # (Tp,) chunk index, -1 for inactive positions
        self.active = chunk_of >= 0
        top = torch.full_like(chunk_of, self.levels)
        self.start_index = torch.where(self.active, (chunk_of + 1) * self.calls, top)  # before a replanning's calls
        self.done_index = torch.where(self.active, chunk_of * self.calls, top)  # after them (head clean)
        self.buffer: torch.Tensor | None = None  # (B, Tp, da) in the `done_index` state
        self.queue: torch.Tensor | None = None
        self.cursor: np.ndarray | None = None  # (B,) next index into the queue; Ta = empty
        self.fresh: np.ndarray | None = None  # (B,) envs that need a warm start
        self._ladders: dict = {}
        self._plans: dict = {}

    # -- levels ----------------------------------------------------------------------------------------------------
    def ladder(self, process, device) -> torch.Tensor:
        key = (id(process), str(device))
        hit = self._ladders.get(key)
        if hit is None or hit[0] is not process:
            with building_constants():
                hit = (process, level_ladder(process, self.levels).to(device))
            self._ladders[key] = hit
        return hit[1]

    def calls_per_action(self) -> float:
        """Denoiser calls per executed action in steady state (warm-ups of fresh envs excluded)."""
        return self.calls / self.action_horizon

    # -- training --------------------------------------------------------------------------------------------------
    def training_levels(self, rs, device) -> torch.Tensor:
        """Per-position level indices (B, Tp): chunk-wise, or constant with probability stream_constant_prob."""
        j = rs.randint(self.calls)  # (B,)
        chunk_of, active = self.chunk_of.to(device), self.active.to(device)
        chunkwise = (chunk_of[None] + 1) * self.calls - j[:, None]
        constant = (1 + rs.randint(self.levels))[:, None].expand_as(chunkwise)
        use_constant = (rs.rand() < self.cfg.stream_constant_prob)[:, None]
        idx = torch.where(use_constant, constant, chunkwise)
        return torch.where(active[None], idx, torch.full_like(idx, self.levels))

    def training_loss(self, host, ctx, actions, rs):
        process = host.process
        idx = self.training_levels(rs, actions.device)
        nv = self.ladder(process, actions.device)[idx]
        eps = rs.randn(*actions.shape[1:]).to(actions.dtype)
        active = self.active.to(actions.device)[None, :, None]
        x0 = torch.where(active, actions, torch.zeros_like(actions))  # inactive positions: zero-mean noise only
        xt = noise_to(process, x0, eps, nv)
        out = host.net.denoise(*process.net_input(xt, nv.to(xt.dtype)), ctx)
        loss = process.loss(out, x0, eps, xt, nv.to(xt.dtype))
        return loss * active * (self.pred_horizon / float(self.active.sum()))

    # -- inference -------------------------------------------------------------------------------------------------
    def reset(self, num_envs, mask):
        if self.cursor is None or self.cursor.shape[0] != num_envs or mask is None:
            self.buffer = self.queue = None
            self.cursor = np.full(num_envs, self.action_horizon, dtype=np.int64)
            self.fresh = np.ones(num_envs, dtype=bool)
            return
        m = np.asarray(mask, dtype=bool)
        self.cursor[m] = self.action_horizon
        self.fresh[m] = True

    def _index_steps(self, idx: torch.Tensor, calls: int) -> tuple[list, torch.Tensor]:
        """The (from, to) level-index patterns of `calls` calls starting at idx (each lowers active indices > 0)."""
        active, out = self.active.to(idx.device), []
        for _ in range(calls):
            nxt = torch.where(active & (idx > 0), idx - 1, idx)
            out.append((idx, nxt))
            idx = nxt
        return out, idx

    def _denoise_calls(self, host, x, idx, ctx, calls: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`calls` denoiser calls; each lowers every active index above 0 by one. idx: (Tp,) shared by the rows.
        (Reference implementation; `act` runs the same arithmetic from `plan`'s precomputed steps.)"""
        process, ladder = host.process, self.ladder(host.process, x.device)
        eta = step_eta(process)
        steps, idx = self._index_steps(idx, calls)
        for frm, nxt in steps:
            nv_from = ladder[frm][None].expand(x.shape[0], -1)
            nv_to = ladder[nxt][None].expand(x.shape[0], -1)
            x0 = denoise_call(host, x, nv_from, ctx)
            noise = noise_source.randn_like(x) if eta > 0 else None
            x = step_to(process, x, x0, nv_from, nv_to, eta, noise)
        return x, idx

    def warm_start(self, host, ctx, batch: int, device) -> torch.Tensor:
        """A buffer in the post-replanning state from nothing: constant-level denoising to clean (N calls), then
        chunk c re-noised to level c*m. (Reference implementation of `plan(...).warm`.)"""
        process, ladder = host.process, self.ladder(host.process, device)
        shape = (batch, self.pred_horizon, self.action_dim)
        top = torch.full((self.pred_horizon,), self.levels, dtype=torch.long, device=device)
        x = noise_to(process, torch.zeros(shape, device=device), noise_source.randn(shape, device=device),
                     ladder[top][None].expand(batch, -1))
        x, idx = self._denoise_calls(host, x, top, ctx, self.levels)
        done = self.done_index.to(device)
        return renoise(process, x, ladder[idx][None].expand(batch, -1), ladder[done][None].expand(batch, -1),
                       noise_source.randn_like(x)), done

    def _shift_source(self, device) -> torch.Tensor:
        ta, lo, hi = self.action_horizon, self.start, self.start + self.chunks * self.action_horizon
        src = torch.arange(self.pred_horizon, device=device)
        src = torch.where(self.active.to(device), (src + ta).clamp(max=hi - 1), src)
        src[:lo] = torch.arange(lo, device=device)
        return src

    def shift(self, process, buf: torch.Tensor) -> torch.Tensor:
        """Post-replanning state -> pre-replanning state: move the active region forward by Ta, fill the tail from
        the last active entry, and re-noise every entry whose label went up to exactly its new label."""
        device = buf.device
        ladder = self.ladder(process, device)
        src = self._shift_source(device)
        moved = buf[:, src]
        done = self.done_index.to(device)
        old = done[src]  # label of the entry each position now holds
        new = self.start_index.to(device)
        b = buf.shape[0]
        return renoise(process, moved, ladder[old][None].expand(b, -1), ladder[new][None].expand(b, -1),
                       noise_source.randn_like(moved))

    def replan(self, host, buf: torch.Tensor, ctx) -> torch.Tensor:
        """One replanning of envs in the post-replanning state: shift, then m calls; returns the new buffer.
        (Reference implementation of `plan(...).replan`.)"""
        x = self.shift(host.process, buf)
        idx = self.start_index.to(buf.device)
        x, idx = self._denoise_calls(host, x, idx, ctx, self.calls)
        return x

    def plan(self, process, device, dtype, batch: int) -> _StreamPlan:
        """Every level-dependent constant of warm-up and replanning for `batch` rows, built once and reused (the
        level patterns of a streaming buffer never change)."""
        key = (id(process), str(device), dtype, batch)
        plan = None if symbolic(batch) else self._plans.get(key)
        if plan is None or plan.process is not process:
            with building_constants():
                plan = _StreamPlan(self, process, torch.device(device), dtype, batch)
            if symbolic(batch):
                return plan
            if len(self._plans) > 64:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def act(self, host):
        cursor, ta = self.cursor, self.action_horizon
        need_mask = cursor >= ta
        if need_mask.any():
            n = cursor.shape[0]
            need = np.flatnonzero(need_mask)
            ctx = host.encode_current(None if need.size == n else torch.from_numpy(need))
            device = ctx.device if isinstance(ctx, torch.Tensor) else host.device
            if self.buffer is None:
                self.buffer = torch.zeros((n, self.pred_horizon, self.action_dim), device=device)
                self.queue = torch.zeros((n, ta, self.action_dim), device=device)
            fresh = self.fresh[need]
            head = slice(self.start, self.start + ta)
            for use_fresh in (True, False):
                sel = np.flatnonzero(fresh == use_fresh)
                if sel.size == 0:
                    continue
                sub_ctx = ctx if sel.size == need.size else ctx[torch.from_numpy(sel).to(device)]
                every = sel.size == n  # this group is every env: no row gathering or scattering
                rows = None if every else torch.from_numpy(need[sel]).to(device)
                plan = self.plan(host.process, device, self.buffer.dtype, sel.size)
                if use_fresh:
                    buf = plan.warm(host, sub_ctx)
                else:
                    buf = plan.replan(host, self.buffer if every else self.buffer[rows], sub_ctx)
                if every:
                    self.buffer, self.queue = buf, buf[:, head].clone()
                else:
                    self.buffer[rows] = buf
                    self.queue[rows] = buf[:, head]
            cursor[need] = 0
            self.fresh[need] = False
        return take_from_queue(self.queue, cursor)


class _StreamPlan:
    """The streaming scheme's warm-up and replanning for a fixed batch size with all level constants precomputed."""

    def __init__(self, scheme: StreamingScheme, process, device, dtype, batch: int):
        self.process = process
        ladder = scheme.ladder(process, device)
        like = torch.empty(batch, scheme.pred_horizon, scheme.action_dim, device=device, dtype=dtype)
        self.shape = tuple(like.shape)

        def at(idx):
            return ladder[idx][None].expand(batch, -1)

        eta = step_eta(process)
        top = torch.full((scheme.pred_horizon,), scheme.levels, dtype=torch.long, device=device)
        done = scheme.done_index.to(device)
        self.warm_in = Renoise(process, None, at(top), like)
        seq, last = scheme._index_steps(top, scheme.levels)
        self.warm_steps = [Step(process, at(f), at(t), eta, like) for f, t in seq]
        self.warm_out = Renoise(process, at(last), at(done), like)
        self.src = scheme._shift_source(device)
        self.shift = Renoise(process, at(done[self.src]), at(scheme.start_index.to(device)), like)
        seq, _ = scheme._index_steps(scheme.start_index.to(device), scheme.calls)
        self.replan_steps = [Step(process, at(f), at(t), eta, like) for f, t in seq]
        self.device = device

    def warm(self, host, ctx) -> torch.Tensor:
        x = self.warm_in(torch.zeros(self.shape, device=self.device), noise_source.randn(self.shape, device=self.device))
        for step in self.warm_steps:
            x = step(host, x, ctx)
        return self.warm_out(x, noise_source.randn_like(x))

    def replan(self, host, buf: torch.Tensor, ctx) -> torch.Tensor:
        moved = buf[:, self.src]
        x = self.shift(moved, noise_source.randn_like(moved))
        for step in self.replan_steps:
            x = step(host, x, ctx)
        return x
