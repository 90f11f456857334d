"""DDPM and DDIM (Ho et al.; Song et al.) through `diffusers` schedulers, as in Diffusion Policy.

Noise variable and level: the integer training timestep t in [0, num_train_steps) (0 = least noise); the denoiser
receives t as a float. Training noises with the scheduler's alphas_cumprod at any per-sample or per-position t;
inference steps through the diffusers scheduler (DDPM: ancestral, DDIM: deterministic with eta = 0).
"""

from __future__ import annotations

import torch

from policies.config import DiffusionConfig
from policies.diffusion.base import DenoiseFn, Process, expand_like
from policies.errors import PolicyError
from policies.random_source import RandomSource

PREDICTIONS = ("epsilon", "sample")


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

    def denoised(self, out, xt, nv):
        if self.cfg.prediction == "sample":
            x0 = out
        else:
            ac = self._ac(nv, xt)
            x0 = (xt - (1 - ac).sqrt() * out) / ac.sqrt()
        if self.cfg.clip_sample:
            x0 = x0.clamp(-self.cfg.clip_sample_range, self.cfg.clip_sample_range)
        return x0

    @torch.no_grad()
    def sample(self, denoise: DenoiseFn, shape, device, generator=None):
        x = torch.randn(shape, device=device, generator=generator)
        for t in self.scheduler.timesteps:
            level = torch.full(shape[:1], float(t), device=device)
            out = denoise(x, level).float()
            x = self.scheduler.step(out, t, x, generator=generator).prev_sample
        return x

    def num_net_calls(self):
        return len(self.scheduler.timesteps)
