"""DDPM and DDIM (Ho et al.; Song et al.) through `diffusers` schedulers, as in Diffusion Policy.

Noise variable and level: the integer training timestep t in [0, num_train_steps) (0 = least noise); the denoiser
receives t as a float. Training noises with the scheduler's alphas_cumprod at any per-sample or per-position t;
inference steps through the diffusers scheduler (DDPM: ancestral, DDIM: deterministic with eta = 0).

Sampling does not call `scheduler.step` per step: its coefficients (alphas_cumprod at t and at the previous
timestep, the posterior variance) depend only on the step index, so they are computed once per process with the
scheduler's own float32 tensors and expressions (`StepCoeffs`), and each step is the scheduler's update with those
constants: the same operations in the same order, so the samples equal diffusers' bit for bit
(tests/test_fast_samplers.py checks this against `scheduler.step`).
"""

from __future__ import annotations

import torch

from policies import noise as noise_source
from policies.config import DiffusionConfig
from policies.diffusion.base import DenoiseFn, LevelConsts, Process, building_constants, expand_like, symbolic
from policies.errors import PolicyError
from policies.random_source import RandomSource

PREDICTIONS = ("epsilon", "sample")


class StepCoeffs:
    """One sampling step's constants (0-dim float32 tensors, exactly as diffusers computes them)."""

    __slots__ = ("t", "sqrt_beta", "sqrt_alpha", "x0_coeff", "x_coeff", "noise_std", "add_noise")

    def __init__(self, t, sqrt_beta, sqrt_alpha, x0_coeff, x_coeff, noise_std=None, add_noise=False):
        self.t, self.sqrt_beta, self.sqrt_alpha = t, sqrt_beta, sqrt_alpha
        self.x0_coeff, self.x_coeff, self.noise_std, self.add_noise = x0_coeff, x_coeff, noise_std, add_noise


def ddim_coeffs(scheduler) -> list[StepCoeffs]:
    """`DDIMScheduler.step` (eta 0) constants per timestep: x_prev = sqrt(ac_prev) x0 + sqrt(1 - ac_prev) eps."""
    out = []
    for t in scheduler.timesteps:
        prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        ap = scheduler.alphas_cumprod[t]
        ap_prev = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
        bp = 1 - ap
        variance = scheduler._get_variance(t, prev)
        std_dev_t = 0.0 * variance ** (0.5)
        out.append(StepCoeffs(int(t), bp ** (0.5), ap ** (0.5), ap_prev ** (0.5),
                              (1 - ap_prev - std_dev_t**2) ** (0.5)))
    return out


def ddpm_coeffs(scheduler) -> list[StepCoeffs]:
    """`DDPMScheduler.step` (fixed_small) constants per timestep: the posterior mean's two coefficients and the
    posterior standard deviation (noise only for t > 0)."""
    out = []
    for t in scheduler.timesteps:
        prev_t = scheduler.previous_timestep(t)
        ap = scheduler.alphas_cumprod[t]
        ap_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.one
        bp, bp_prev = 1 - ap, 1 - ap_prev
        cur_alpha = ap / ap_prev
        cur_beta = 1 - cur_alpha
        x0_coeff = (ap_prev ** (0.5) * cur_beta) / bp
        x_coeff = cur_alpha ** (0.5) * bp_prev / bp
        add = bool(t > 0)
        std = scheduler._get_variance(t) ** 0.5 if add else None
        out.append(StepCoeffs(int(t), bp ** (0.5), ap ** (0.5), x0_coeff, x_coeff, std, add))
    return out


class DiffusersProcess(Process):
    level_unit = "training timestep t in [0, num_train_steps)"

    def __init__(self, cfg: DiffusionConfig, kind: str):
        from diffusers import DDIMScheduler, DDPMScheduler

        if cfg.prediction not in PREDICTIONS:
            raise PolicyError(f"unknown prediction {cfg.prediction!r} for {kind}; use one of {', '.join(PREDICTIONS)}")
        if not 1 <= cfg.num_inference_steps <= cfg.num_train_steps:
            raise PolicyError(f"num_inference_steps must be in [1, num_train_steps={cfg.num_train_steps}], "
                              f"got {cfg.num_inference_steps}")
        self.name = kind
        self.cfg = cfg
        self.level_scale = 100.0 / cfg.num_train_steps
        common = dict(num_train_timesteps=cfg.num_train_steps, beta_schedule=cfg.beta_schedule,
                      clip_sample=cfg.clip_sample, clip_sample_range=cfg.clip_sample_range,
                      prediction_type=cfg.prediction)
        try:
            if kind == "ddpm":
                self.scheduler = DDPMScheduler(variance_type="fixed_small", **common)
            else:
                self.scheduler = DDIMScheduler(set_alpha_to_one=True, steps_offset=0, **common)
        except (ValueError, NotImplementedError) as e:
            raise PolicyError(f"bad {kind} settings: {e}") from None
        self.scheduler.set_timesteps(cfg.num_inference_steps)
        self.alphas_cumprod = self.scheduler.alphas_cumprod.clone().float()
        self.steps = ddpm_coeffs(self.scheduler) if kind == "ddpm" else ddim_coeffs(self.scheduler)
        self._consts: dict = {}  # (device, batch) -> per-step (coefficients on device, level tensor)

    def sample_train_noise(self, shape, rs: RandomSource):
        return rs.randint(self.cfg.num_train_steps, *shape)

    def _ac(self, nv, x):
        return expand_like(self.alphas_cumprod.to(x.device)[nv.long()], x).to(x.dtype)

    def add_noise(self, x0, eps, nv):
        ac = self._ac(nv, x0)
        return ac.sqrt() * x0 + (1 - ac).sqrt() * eps

    def net_input(self, xt, nv):
        return xt, nv.float()

    def loss(self, out, x0, eps, xt, nv):
        target = eps if self.cfg.prediction == "epsilon" else x0
        return (out.float() - target.float()) ** 2

    def level_consts(self, nv, like):
        return _VPLevel(self, nv, like)

    def denoised(self, out, xt, nv):
        if self.cfg.prediction == "sample":
            x0 = out
        else:
            ac = self._ac(nv, xt)
            x0 = (xt - (1 - ac).sqrt() * out) / ac.sqrt()
        if self.cfg.clip_sample:
            x0 = x0.clamp(-self.cfg.clip_sample_range, self.cfg.clip_sample_range)
        return x0

    def _step_consts(self, device, batch: int):
        key = (str(device), batch)
        consts = None if symbolic(batch) else self._consts.get(key)
        if consts is None:
            to = lambda v: None if v is None else v.to(device)  # noqa: E731
            with building_constants():
                consts = [(StepCoeffs(c.t, to(c.sqrt_beta), to(c.sqrt_alpha), to(c.x0_coeff), to(c.x_coeff),
                                      to(c.noise_std), c.add_noise), torch.full((batch,), float(c.t), device=device))
                          for c in self.steps]
            if symbolic(batch):
                return consts
            if len(self._consts) > 256:
                self._consts.clear()
            self._consts[key] = consts
        return consts

    def step(self, c: StepCoeffs, out: torch.Tensor, x: torch.Tensor, generator=None) -> torch.Tensor:
        """`scheduler.step(out, t, x).prev_sample` with precomputed constants (same operations, same order)."""
        cfg = self.cfg
        if cfg.prediction == "epsilon":
            x0 = (x - c.sqrt_beta * out) / c.sqrt_alpha
            eps = out
        else:
            x0 = out
            eps = (x - c.sqrt_alpha * x0) / c.sqrt_beta if self.name == "ddim" else None
        if cfg.clip_sample:
            x0 = x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
        if self.name == "ddim":
            return c.x0_coeff * x0 + c.x_coeff * eps
        prev = c.x0_coeff * x0 + c.x_coeff * x
        if c.add_noise:
            noise = noise_source.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
            prev = prev + c.noise_std * noise
        return prev

    @torch.no_grad()
    def sample(self, denoise: DenoiseFn, shape, device, generator=None):
        x = noise_source.randn(shape, device=device, generator=generator)
        for c, level in self._step_consts(device, shape[0]):
            out = denoise(x, level).float()
            x = self.step(c, out, x, generator)
        return x

    def num_net_calls(self):
        return len(self.scheduler.timesteps)


class _VPLevel(LevelConsts):
    """`net_input` / `denoised` of a DDPM/DDIM process at fixed timesteps, sqrt(ac) and sqrt(1 - ac) precomputed."""

    def __init__(self, process: DiffusersProcess, nv, like):
        self.process, self.nv = process, nv.to(like.dtype)
        self.level = self.nv.float()
        self.clip = process.cfg.clip_sample_range if process.cfg.clip_sample else None
        self.eps = process.cfg.prediction == "epsilon"
        if self.eps:
            ac = process._ac(self.nv, like)
            self.sqrt_1m_ac, self.sqrt_ac = (1 - ac).sqrt(), ac.sqrt()

    def net_input(self, x):
        return x

    def denoised(self, out, x):
        x0 = (x - self.sqrt_1m_ac * out) / self.sqrt_ac if self.eps else out
        return x0.clamp(-self.clip, self.clip) if self.clip is not None else x0
