"""Truncated diffusion from anchors (DiffusionDrive, CVPR 2025): start from k-means anchors, 1-2 steps, score modes.

K anchors (k-means centres of the normalised training chunks, `policies.schemes.anchors`) live in this scheme's
`anchors` buffer. Training noises anchors only a little (the lowest `trunc_fraction` of the process's noise range:
t < 0.05 T under DDPM/DDIM, the equivalent sigma band under EDM) and teaches the denoiser to map the noisy anchor
nearest to the demonstrated chunk onto that chunk; a score head per mode learns which anchor is the nearest
(cross-entropy over the modes) from the context and each mode's denoised chunk.

Because a noisy anchor can be far from the chunk it must become, the denoiser's output is read as the clean chunk
(sample prediction) under every process; the process supplies the input scaling, the level units and the noise
ladder. Inference noises all K anchors to the top of the band, runs `trunc_steps` denoiser calls (each over all
K anchors in one batch) joined by deterministic DDIM steps between the ladder levels (not repeated refinements from
the same level), and executes `chunk[To-1 : To-1+Ta]` of the best-scoring mode.

`select=prior` changes only how the mode is chosen: the classification target (the anchor nearest to the
demonstrated chunk) does not depend on the denoiser, so the score head can read the context and the anchors
themselves and pick the mode before any denoising; only that mode is then denoised, at batch B instead of B*K.
On a CPU, where a batch of K anchors costs several single calls, that is what makes a replanning as cheap as
`trunc_steps` calls at batch 1; training skips the K-mode scoring pass as well.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from policies import noise as noise_source
from policies.config import SchemeConfig
from policies.diffusion.base import building_constants, symbolic
from policies.errors import PolicyError
from policies.schemes.base import Scheme, refill_and_take
from policies.schemes.streaming import Renoise, Step, level_ladder, noise_to, process_kind, step_to

_MODE_DIM = 32
_HIDDEN = 256


def pooled(ctx: torch.Tensor) -> torch.Tensor:
    """A (B, C) summary of any denoiser's context (token mean for token contexts)."""
    return ctx.mean(dim=1) if ctx.dim() == 3 else ctx.reshape(ctx.shape[0], -1)


class TruncatedScheme(Scheme):
    def __init__(self, cfg: SchemeConfig, obs_horizon: int, pred_horizon: int, action_dim: int):
        super().__init__(cfg, obs_horizon, pred_horizon, action_dim)
        self.action_horizon = int(cfg.action_horizon)
        if self.action_horizon < 1 or obs_horizon - 1 + self.action_horizon > pred_horizon:
            raise PolicyError(f"scheme.action_horizon={self.action_horizon} does not fit: need 1 <= Ta and "
                              f"obs_horizon-1+Ta <= pred_horizon ({obs_horizon}-1+{self.action_horizon} > {pred_horizon})")
        self.num_anchors = int(cfg.num_anchors)
        if self.num_anchors < 2:
            raise PolicyError(f"scheme.num_anchors must be >= 2, got {cfg.num_anchors}")
        if not 0.0 < cfg.trunc_fraction <= 1.0:
            raise PolicyError(f"scheme.trunc_fraction must be in (0, 1], got {cfg.trunc_fraction}")
        if cfg.trunc_steps < 1:
            raise PolicyError(f"scheme.trunc_steps must be >= 1, got {cfg.trunc_steps}")
        if cfg.train_modes < 0 or cfg.train_modes == 1 or cfg.train_modes > self.num_anchors:
            raise PolicyError(f"scheme.train_modes must be 0 (all) or in [2, num_anchors={self.num_anchors}], "
                              f"got {cfg.train_modes}")
        if cfg.select not in ("denoised", "prior"):
            raise PolicyError(f"scheme.select must be 'denoised' or 'prior', got {cfg.select!r}")
        self.prior = cfg.select == "prior"
        self.register_buffer("anchors", torch.zeros(self.num_anchors, pred_horizon, action_dim))
        self.register_buffer("anchors_fitted", torch.zeros((), dtype=torch.bool))
        self.mode_embed = nn.Embedding(self.num_anchors, _MODE_DIM)
        self.score_head: nn.Module | None = None  # sized by the denoiser's context in bind()
        self.queue: torch.Tensor | None = None
        self.cursor: np.ndarray | None = None  # (B,) next index into the queue; Ta = empty
        self.last_scores: torch.Tensor | None = None  # (B_rows, K) of the latest replanning, for inspection
        self._ladders: dict = {}
        self._plans: dict = {}

    # -- set-up ----------------------------------------------------------------------------------------------------
    def bind(self, policy) -> None:
        """Build the score head for this policy's denoiser (its input width depends on the context size)."""
        feats = sum(policy.spec.obs_dims[k] for k in policy.feature_keys)
        lang = torch.zeros(1, policy.spec.lang_dim) if policy.spec.uses_language else None
        with torch.no_grad():
            width = pooled(policy.net.encode(torch.zeros(1, self.obs_horizon, feats), lang)).shape[-1]
        self.score_head = nn.Sequential(
            nn.Linear(width + self.pred_horizon * self.action_dim + _MODE_DIM, _HIDDEN), nn.SiLU(),
            nn.Linear(_HIDDEN, _HIDDEN), nn.SiLU(), nn.Linear(_HIDDEN, 1))

    def prepare(self, policy, dataset) -> None:
        """Fit the anchors on the training data (called once before training)."""
        from policies.schemes.anchors import fit_policy_anchors

        fit_policy_anchors(policy, dataset)

    def set_anchors(self, anchors) -> None:
        a = torch.as_tensor(np.asarray(anchors, dtype=np.float32))
        if tuple(a.shape) != tuple(self.anchors.shape):
            raise PolicyError(f"anchors have shape {tuple(a.shape)} but the scheme expects {tuple(self.anchors.shape)} "
                              f"(num_anchors, pred_horizon, action_dim)")
        self.anchors.copy_(a.to(self.anchors.device))
        self.anchors_fitted.fill_(True)

    def _check_fitted(self) -> None:
        if torch.compiler.is_exporting():  # export checks it before tracing (a buffer's value is not a graph fact)
            return
        if not bool(self.anchors_fitted):
            raise PolicyError("the truncated scheme's anchors are not fitted; call "
                              "policies.schemes.anchors.fit_policy_anchors(policy, dataset) before training")
        if self.score_head is None:
            raise PolicyError("the truncated scheme was not bound to a policy; build it through policies.Policy")

    # -- levels ----------------------------------------------------------------------------------------------------
    def ladder(self, process, device) -> torch.Tensor:
        key = (id(process), str(device))
        hit = self._ladders.get(key)
        if hit is None or hit[0] is not process:
            with building_constants():
                hit = (process, level_ladder(process, int(self.cfg.trunc_steps), self.cfg.trunc_fraction).to(device))
            self._ladders[key] = hit
        return hit[1]

    def train_levels(self, process, rs, count: int, device) -> torch.Tensor:
        """Noise variables (B, count) uniform over the truncated band (log-uniform sigma under EDM)."""
        cfg = self.cfg
        u = rs.rand(count).to(device).double()
        if process_kind(process) == "vp":
            hi = max(1, int(round(cfg.trunc_fraction * process.cfg.num_train_steps)))
            return (u * hi).floor().clamp(max=hi - 1)
        top = float(self.ladder(process, device)[-1])
        lo = process.cfg.sigma_min
        return torch.exp(np.log(lo) + u * (np.log(top) - np.log(lo)))

    def scores(self, ctx: torch.Tensor, denoised: torch.Tensor, modes: torch.Tensor) -> torch.Tensor:
        """Logits (B, M) of modes (B, M) from the context (B, ...) and their denoised chunks (B, M, Tp, da)."""
        b, m = modes.shape
        c = pooled(ctx)[:, None].expand(-1, m, -1)
        x = torch.cat([c, denoised.flatten(2).to(c.dtype), self.mode_embed(modes).to(c.dtype)], dim=-1)
        return self.score_head(x).squeeze(-1)

    def set_steps(self, steps: int) -> None:
        """Sample with `steps` denoiser calls per replanning from now on (training does not depend on it: the band
        top is the same for every step count)."""
        if int(steps) < 1:
            raise PolicyError(f"scheme.trunc_steps must be >= 1, got {steps}")
        self.cfg.trunc_steps = int(steps)
        self._ladders.clear()
        self._plans.clear()

    def calls_per_action(self) -> float:
        return int(self.cfg.trunc_steps) / self.action_horizon

    # -- training --------------------------------------------------------------------------------------------------
    def training_loss(self, host, ctx, actions, rs):
        self._check_fitted()
        process, k = host.process, self.num_anchors
        b, device = actions.shape[0], actions.device
        anchors = self.anchors.to(actions.dtype)
        dist = ((actions[:, None] - anchors[None]) ** 2).flatten(2).sum(-1)  # (B, K)
        positive = dist.argmin(dim=1)
        m = int(self.cfg.train_modes) or k
        if m < k:  # the positive mode first, then m-1 distinct random others
            r = rs.rand(k).to(device)
            r = r.scatter(1, positive[:, None], -1.0)
            modes = torch.cat([positive[:, None], r.topk(m - 1, dim=1).indices], dim=1)
            target = torch.zeros(b, dtype=torch.long, device=device)
        else:
            modes = torch.arange(k, device=device)[None].expand(b, -1)
            target = positive
        nv = self.train_levels(process, rs, m, device)  # (B, M)
        eps = rs.randn(m, *actions.shape[1:]).to(actions.dtype)
        xt = noise_to(process, anchors[modes], eps, nv[..., None])  # (B, M, Tp, da)
        pos_col = (modes == positive[:, None]).float().argmax(dim=1)
        rows = torch.arange(b, device=device)
        x_pos, nv_pos = xt[rows, pos_col], nv[rows, pos_col]
        out_pos = host.net.denoise(*process.net_input(x_pos, nv_pos.to(x_pos.dtype)), ctx)
        regression = (out_pos.float() - actions.float()) ** 2
        if self.prior:  # the modes are scored from the context and the anchors: no pass over the other modes
            ce = F.cross_entropy(self.scores(ctx, anchors[modes], modes).float(), target, reduction="none")
            return regression + self.cfg.score_weight * ce[:, None, None]
        with torch.no_grad():  # the other modes only feed the (detached) score inputs
            flat = xt.flatten(0, 1)
            ctx_rep = ctx.repeat_interleave(m, dim=0)
            out_all = host.net.denoise(*process.net_input(flat, nv.flatten().to(flat.dtype)), ctx_rep)
            out_all = out_all.view(b, m, *actions.shape[1:]).clone()
        out_all[rows, pos_col] = out_pos.detach().to(out_all.dtype)
        ce = F.cross_entropy(self.scores(ctx, out_all, modes).float(), target, reduction="none")
        return regression + self.cfg.score_weight * ce[:, None, None]

    # -- inference -------------------------------------------------------------------------------------------------
    def reset(self, num_envs, mask):
        if self.queue is None or self.queue.shape[0] != num_envs or mask is None:
            self.queue = None
            self.cursor = np.full(num_envs, self.action_horizon, dtype=np.int64)
            return
        self.cursor[np.asarray(mask, dtype=bool)] = self.action_horizon

    def plan_reference(self, host, ctx) -> torch.Tensor:
        """`plan` written out with the generic level helpers (what `plan`'s precomputed steps must reproduce)."""
        self._check_fitted()
        process, k = host.process, self.num_anchors
        b, device = ctx.shape[0], ctx.device
        ladder = self.ladder(process, device)
        steps = int(self.cfg.trunc_steps)
        if self.prior:
            start, ctx_rep, k = self._pick_prior(ctx), ctx, 1
        else:
            start, ctx_rep = self.anchors[None].expand(b, -1, -1, -1), ctx.repeat_interleave(k, dim=0)
        shape = (b * k, self.pred_horizon, self.action_dim)
        x = noise_to(process, start.reshape(shape), noise_source.randn(shape, device=device), ladder[steps].expand(b * k))
        for i in range(steps, 0, -1):
            nv = ladder[i].expand(b * k).to(x.dtype)
            x0 = host.net.denoise(*process.net_input(x, nv), ctx_rep).to(x.dtype)
            x = x0 if i == 1 else step_to(process, x, x0, ladder[i].expand(b * k), ladder[i - 1].expand(b * k), 0.0, None)
        if self.prior:
            return x
        return self._pick(ctx, x.view(b, k, self.pred_horizon, self.action_dim))

    def _pick_prior(self, ctx) -> torch.Tensor:
        """The anchor (B, Tp, da) the score head ranks first from the context alone (select=prior)."""
        b, k = ctx.shape[0], self.num_anchors
        modes = torch.arange(k, device=ctx.device)[None].expand(b, -1)
        scores = self.scores(ctx, self.anchors[None].expand(b, -1, -1, -1), modes)
        self.last_scores = scores
        return self.anchors[scores.argmax(dim=1)]

    def _pick(self, ctx, chunks) -> torch.Tensor:
        b, k = chunks.shape[:2]
        modes = torch.arange(k, device=chunks.device)[None].expand(b, -1)
        scores = self.scores(ctx, chunks, modes)
        self.last_scores = scores
        return chunks[torch.arange(b, device=chunks.device), scores.argmax(dim=1)]

    def _steps(self, process, device, dtype, rows: int):
        """Level constants of the anchor noising and of the `trunc_steps` calls for `rows` = B*K rows (cached)."""
        key = (id(process), str(device), dtype, rows)
        hit = None if symbolic(rows) else self._plans.get(key)
        if hit is None or hit[0] is not process:
            ladder = self.ladder(process, device)
            n = int(self.cfg.trunc_steps)
            with building_constants():
                like = torch.empty(rows, self.pred_horizon, self.action_dim, device=device, dtype=dtype)
                start = Renoise(process, None, ladder[n].expand(rows), like)
                steps = [Step(process, ladder[i].expand(rows), ladder[i - 1].expand(rows), 0.0, like, raw=True)
                         for i in range(n, 0, -1)]
            hit = (process, start, steps)
            if symbolic(rows):
                return hit[1], hit[2]
            if len(self._plans) > 64:
                self._plans.clear()
            self._plans[key] = hit
        return hit[1], hit[2]

    def plan(self, host, ctx) -> torch.Tensor:
        """Best-scoring denoised chunk (B, Tp, da) for contexts ctx (B, ...): noise the K anchors to the top of the
        band, `trunc_steps` deterministic steps (each one call over all B*K rows), score the modes. With
        select=prior the mode is scored first and only it is noised and denoised (B rows)."""
        self._check_fitted()
        b, device = ctx.shape[0], ctx.device
        if self.prior:
            anchors, ctx_rep, k = self._pick_prior(ctx), ctx, 1
        else:
            k = self.num_anchors
            anchors, ctx_rep = self.anchors[None].expand(b, -1, -1, -1), ctx.repeat_interleave(k, dim=0)
        shape = (b * k, self.pred_horizon, self.action_dim)
        start, steps = self._steps(host.process, device, self.anchors.dtype, b * k)
        x = start(anchors.reshape(shape), noise_source.randn(shape, device=device))
        for step in steps[:-1]:
            x = step(host, x, ctx_rep)
        x = steps[-1].denoise(host, x, ctx_rep)  # the last step lands on the clean estimate itself
        if self.prior:
            return x
        return self._pick(ctx, x.view(b, k, self.pred_horizon, self.action_dim))

    def act(self, host):
        return refill_and_take(self, lambda rows: self.plan(host, host.encode_current(rows)))
