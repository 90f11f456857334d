"""EDM (Karras et al., 2022) as used by MoDE and MDT: preconditioning, log-logistic sigmas, Euler/DPM-Solver.

Noise variable: sigma. Level the denoiser receives: c_noise = log(sigma) / 4. The network F sees c_in * x and the
denoiser is D(x) = c_skip x + c_out F; the loss is the MSE of F against (x0 - c_skip x) / c_out, which is EDM's
weighted denoising loss. Training sigmas are log-logistic (loc, scale) truncated to [sigma_min, sigma_max] by
inverting the CDF on the truncated range. Samplers (variance-exploding ODE, data prediction):
- `euler`: x <- D + (s'/s)(x - D); identical to DDIM with eta = 0 and to DPM-Solver-1 here;
- `dpm_solver_2`: DPM-Solver-2 with a midpoint in log sigma (one extra call per step; the last step is first order).
"""

from __future__ import annotations

import math

import torch

from policies import noise as noise_source
from policies.config import DiffusionConfig
from policies.diffusion.base import DenoiseFn, LevelConsts, Process, building_constants, expand_like, symbolic
from policies.errors import PolicyError
from policies.random_source import RandomSource

SAMPLERS = ("euler", "ddim", "dpm_solver_1", "dpm_solver_2")
SCHEDULES = ("exponential", "karras")


def sigma_schedule(kind: str, steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """`steps` decreasing sigmas from sigma_max to sigma_min, then a final 0."""
    if kind == "exponential":
        sig = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64))
    elif kind == "karras":
        ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
        lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        sig = (hi + ramp * (lo - hi)) ** rho
    else:
        raise PolicyError(f"unknown sigma schedule {kind!r}; use one of {', '.join(SCHEDULES)}")
    if steps == 1:
        sig = torch.tensor([sigma_max], dtype=torch.float64)
    return torch.cat([sig, sig.new_zeros(1)]).float()


class EDMProcess(Process):
    name = "edm"
    level_unit = "c_noise = log(sigma) / 4"
    level_scale = 100.0

    def __init__(self, cfg: DiffusionConfig):
        if cfg.sampler not in SAMPLERS:
            raise PolicyError(f"unknown EDM sampler {cfg.sampler!r}; use one of {', '.join(SAMPLERS)}")
        if not 0 < cfg.sigma_min < cfg.sigma_max:
            raise PolicyError(f"need 0 < sigma_min < sigma_max, got {cfg.sigma_min} and {cfg.sigma_max}")
        if cfg.num_inference_steps < 1:
            raise PolicyError(f"num_inference_steps must be >= 1, got {cfg.num_inference_steps}")
        self.cfg = cfg
        self.sd = cfg.sigma_data
        self.sigmas = sigma_schedule(cfg.schedule, cfg.num_inference_steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)
        self._sigma_list = self.sigmas.tolist()
        cdf = lambda s: 1 / (1 + math.exp(-(math.log(s) - cfg.sigma_loc) / cfg.sigma_scale))  # noqa: E731
        self._u_lo, self._u_hi = cdf(cfg.sigma_min), cdf(cfg.sigma_max)
        self._cache: dict = {}

    def sample_train_noise(self, shape, rs: RandomSource):
        u = self._u_lo + (self._u_hi - self._u_lo) * rs.rand(*shape).double()
        sigma = torch.exp(self.cfg.sigma_loc + self.cfg.sigma_scale * torch.log(u / (1 - u)))
        return sigma.clamp(self.cfg.sigma_min, self.cfg.sigma_max).float()

    def precondition(self, sigma):
        s2, sd2 = sigma**2, self.sd**2
        c_skip = sd2 / (s2 + sd2)
        c_out = sigma * self.sd / (s2 + sd2).sqrt()
        c_in = 1 / (s2 + sd2).sqrt()
        return c_skip, c_out, c_in

    def add_noise(self, x0, eps, nv):
        return x0 + expand_like(nv, x0).to(x0.dtype) * eps

    def net_input(self, xt, nv):
        _, _, c_in = self.precondition(expand_like(nv, xt).to(xt.dtype))
        return c_in * xt, nv.float().log() / 4

    def loss(self, out, x0, eps, xt, nv):
        c_skip, c_out, _ = self.precondition(expand_like(nv, xt).float())
        target = (x0.float() - c_skip * xt.float()) / c_out
        return (out.float() - target) ** 2

    def denoised(self, out, xt, nv):
        c_skip, c_out, _ = self.precondition(expand_like(nv, xt).float())
        return c_skip * xt.float() + c_out * out.float()

    def level_consts(self, nv, like):
        return _VELevel(self, nv, like)

    def _D(self, denoise, x, sigma: float):
        c_in, level, c_skip, c_out = self._consts(sigma, x)
        return c_skip * x.float() + c_out * denoise(c_in * x, level).float()

    def _consts(self, sigma: float, x: torch.Tensor):
        """(c_in, level, c_skip, c_out) of `net_input` / `denoised` at a constant sigma for x's batch, computed once
        by those very functions (same values, bit for bit) and reused by every later call at that sigma."""
        key = (sigma, x.shape[0], x.dim(), str(x.device), x.dtype)
        consts = None if symbolic(x.shape[0]) else self._cache.get(key)
        if consts is None:
            with building_constants():
                nv = torch.full(x.shape[:1], sigma, device=x.device)
                _, _, c_in = self.precondition(expand_like(nv, x).to(x.dtype))
                c_skip, c_out, _ = self.precondition(expand_like(nv, x).float())
                consts = (c_in, nv.float().log() / 4, c_skip, c_out)
            if symbolic(x.shape[0]):
                return consts
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = consts
        return consts

    @torch.no_grad()
    def sample(self, denoise: DenoiseFn, shape, device, generator=None):
        sig = self._sigma_list
        x = noise_source.randn(shape, device=device, generator=generator) * sig[0]
        for s, s_next in zip(sig[:-1], sig[1:]):
            d = self._D(denoise, x, s)
            if s_next == 0:
                x = d
            elif self.cfg.sampler == "dpm_solver_2":
                s_mid = math.sqrt(s * s_next)
                x_mid = d + (s_mid / s) * (x - d)
                d = self._D(denoise, x_mid, s_mid)
                x = d + (s_next / s) * (x - d)
            else:
                x = d + (s_next / s) * (x - d)
        return x

    def num_net_calls(self):
        steps = len(self.sigmas) - 1
        return 2 * steps - 1 if self.cfg.sampler == "dpm_solver_2" else steps


class _VELevel(LevelConsts):
    """`net_input` / `denoised` of EDM at fixed sigmas, the preconditioning factors precomputed."""

    def __init__(self, process: EDMProcess, nv, like):
        self.process, self.nv = process, nv.to(like.dtype)
        _, _, self.c_in = process.precondition(expand_like(self.nv, like).to(like.dtype))
        self.level = self.nv.float().log() / 4
        self.c_skip, self.c_out, _ = process.precondition(expand_like(self.nv, like).float())

    def net_input(self, x):
        return self.c_in * x

    def denoised(self, out, x):
        return self.c_skip * x.float() + self.c_out * out.float()
