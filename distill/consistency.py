"""Consistency distillation (Consistency Policy, Prasad et al. 2024; CTM parametrisation) of an EDM teacher.

The student is a copy of the teacher policy (any denoiser) whose denoiser also takes the target noise level s
through a zero-initialised conditioning: an embedding of s shifts the noisy input chunk and the per-position noise
level the inner denoiser sees, so at initialisation the student IS the teacher. The student maps a point x_t on
the teacher's probability-flow ODE to the point x_s on the same trajectory:

    G(x_t, t, s) = (s/t) x_t + (1 - s/t) D(x_t, t, s)        D: the EDM-preconditioned denoiser

so G(x, t, t) = x for free and, at initialisation, G is one Euler (DDIM) jump of the teacher. Distillation loss on
a Karras grid sigma_0 > ... > sigma_{N-1} (plus 0): pick t = sigma_n, u = sigma_{n+1} and s in [0, u]; the teacher
takes one Heun step x_t -> x_u; the loss is || G_student(x_t, t, s) - G_target(x_u, u, s) ||^2 with the target an
EMA copy of the student under no_grad. Only the target side is computed without gradient: the published code also
wrapped the prediction in no_grad, so its consistency loss trained nothing (tests check the gradient reaches the
student). A denoising (DSM) term D(x_t, t, t) -> x0 keeps the student's denoiser anchored.

Training is the one trainer (`training.trainer.Trainer`) with `ConsistencyObjective`: checkpoints, resume (the
target network is part of the training state), logs and periodic evaluation come with it.

Sampling: `steps` chained jumps sigma_max = tau_0 -> tau_1 -> ... -> 0 (one denoiser call each, deterministic).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distill.errors import DistillError
from policies import Policy
from policies import noise as noise_source
from policies.diffusion.base import Process, expand_like
from policies.diffusion.edm import sigma_schedule
from policies.expert_cache import ExpertCache
from policies.nets.common import sinusoidal
from training.objectives import ObjectiveBase, load_module_state, module_state

log = logging.getLogger("alloy.distill")

_EMB = 64
SECTION = "consistency"


@dataclass
class ConsistencyConfig:
    """Step distillation settings."""

    steps: int = 1  # student sampling steps (1 = one-step, 3 = chained few-step)
    grid: int = 40  # teacher discretisation of [sigma_min, sigma_max] (Karras, rho 7)
    max_steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-4
    weight_decay: float = 0.0
    target_ema: float = 0.99  # EMA of the student that provides the consistency targets
    dsm_weight: float = 1.0  # denoising term D(x_t, t, t) -> x0
    grad_clip: float = 1.0
    seed: int = 0
    ckpt_every: int = 500  # steps between checkpoints/last of the distillation run (and at the end)
    log_every: int = 50
    eval_every: int = 0  # with an evaluator: steps between rollout evaluations
    progress: bool = True


class StudentNet(nn.Module):
    """The teacher's denoiser plus a zero-initialised conditioning on the target level s."""

    def __init__(self, inner: nn.Module, pred_horizon: int, action_dim: int, sigma_min: float):
        super().__init__()
        self.inner = inner
        self.pred_horizon, self.action_dim = pred_horizon, action_dim
        self.s_floor = sigma_min / 2  # s = 0 is embedded as log(sigma_min / 2): below every real level
        self.s_embed = nn.Sequential(nn.Linear(_EMB, 4 * _EMB), nn.SiLU(),
                                     nn.Linear(4 * _EMB, pred_horizon * action_dim + pred_horizon))
        nn.init.zeros_(self.s_embed[-1].weight)
        nn.init.zeros_(self.s_embed[-1].bias)
        self.target: torch.Tensor | None = None  # s for the next `denoise` call (set by the sampler)

    def encode(self, obs, lang=None, goal=None):
        return self.inner.encode(obs, lang, goal)

    def training_context(self, obs, lang, goal, future_state, rs):
        return self.inner.training_context(obs, lang, goal, future_state, rs)

    def pop_auxiliary_losses(self):
        return self.inner.pop_auxiliary_losses()

    def denoise(self, x, level, ctx, s: torch.Tensor | None = None):
        s = self.target if s is None else s
        if s is None:
            raise DistillError("the consistency student needs a target level s; sample it through its policy")
        b, tp = x.shape[0], x.shape[1]
        feat = sinusoidal(torch.log(s.float().clamp_min(self.s_floor)) / 4 * 100.0, _EMB)
        shift = self.s_embed(feat.to(x.dtype).expand(b, -1) if feat.shape[0] == 1 else feat.to(x.dtype))
        dx = shift[:, : tp * self.action_dim].view(b, tp, self.action_dim)
        dl = shift[:, tp * self.action_dim:]
        if level.dim() == 1:
            level = level[:, None].expand(-1, tp)
        return self.inner.denoise(x + dx, level + dl.to(level.dtype), ctx)


class ConsistencySampler(Process):
    """The student's sampler: chained jumps along a fixed Karras grid; EDM preconditioning from the teacher."""

    name = "consistency"

    def __init__(self, edm, student: StudentNet, steps: int, grid: int):
        self.edm, self.student = edm, student
        self.cfg = edm.cfg
        self.level_unit, self.level_scale = edm.level_unit, edm.level_scale
        self.steps, self.grid = int(steps), int(grid)
        sig = karras_grid(edm.cfg, grid)  # grid + 1 values ending in 0
        idx = np.round(np.linspace(0, grid, self.steps + 1)).astype(int)
        self.taus = [float(sig[i]) for i in idx]

    @torch.no_grad()
    def sample(self, denoise, shape, device, generator=None):
        x = noise_source.randn(shape, device=device, generator=generator) * self.taus[0]
        for t, s in zip(self.taus[:-1], self.taus[1:]):
            self.student.target = torch.full((shape[0],), s, device=device)
            try:
                d = self.edm._D(denoise, x, t)
            finally:
                self.student.target = None
            x = (s / t) * x + (1 - s / t) * d
        return x

    def num_net_calls(self):
        return self.steps


def karras_grid(edm_cfg, n: int) -> torch.Tensor:
    """n Karras sigmas from sigma_max down to sigma_min, then 0 (float64)."""
    return sigma_schedule("karras", n, edm_cfg.sigma_min, edm_cfg.sigma_max, 7.0).double()


def make_student(teacher: Policy, steps: int = 1, grid: int = 40) -> Policy:
    """A student policy initialised from `teacher` (an EDM policy with the full-chunk scheme)."""
    if teacher.spec.diffusion.name != "edm":
        raise DistillError(f"consistency distillation needs an EDM teacher, got diffusion={teacher.spec.diffusion.name}; "
                           f"train the teacher with diffusion=edm")
    if teacher.spec.scheme.name != "chunk":
        raise DistillError(f"consistency distillation needs a full-chunk teacher, got scheme={teacher.spec.scheme.name}")
    if steps < 1 or grid < 2 or steps > grid:
        raise DistillError(f"need 1 <= steps <= grid and grid >= 2, got steps={steps}, grid={grid}")
    student = copy.deepcopy(teacher)
    student.net = StudentNet(student.net, teacher.pred_horizon, teacher.action_dim, teacher.spec.diffusion.sigma_min)
    # a MoDE inside routes by the level the student hands it (the sampler's level shifted by the s-conditioning):
    # fixed for fixed sampler levels, so its experts fuse and cache as a MoDE policy's do (and export)
    student.expert_cache = ExpertCache.for_net(student.net)
    student.net.to(teacher.device)
    student.process = ConsistencySampler(teacher.process, student.net, steps, grid)
    student.requires_grad_(True)
    return student


def set_student_steps(student: Policy, steps: int, grid: int | None = None) -> None:
    """Change how many chained jumps the student samples with (1-step vs few-step) without retraining."""
    sampler = student.process
    student.process = ConsistencySampler(sampler.edm, student.net, steps, grid or _grid_of(sampler))


def _grid_of(sampler: ConsistencySampler) -> int:
    return sampler.grid


class ConsistencyObjective(ObjectiveBase):
    """The distillation objective for the one trainer: `loss(student, batch, rs)` -> (loss, parts).

    It holds the frozen teacher and the consistency target (an EMA of the student, updated after every optimiser
    step); the target's weights are part of the checkpoint, so a resumed run continues bit-exactly.
    """

    name = "consistency"

    def __init__(self, student: Policy, teacher: Policy, cfg: ConsistencyConfig, target: Policy | None = None):
        self.student, self.teacher, self.cfg = student, teacher, cfg
        self.target = target if target is not None else copy.deepcopy(student).eval().requires_grad_(False)
        self.edm = teacher.process
        self.sig = karras_grid(self.edm.cfg, cfg.grid).float()

    # -- the trainer's hooks ------------------------------------------------------------------------------------
    def check_batch(self, batch) -> None:
        self.student.check_batch(batch)

    def after_step(self) -> None:
        with torch.no_grad():
            for pt, ps in zip(self.target.parameters(), self.student.parameters()):
                pt.lerp_(ps.detach(), 1 - self.cfg.target_ema)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return module_state("target", self.target)

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        load_module_state("target", self.target, tensors)

    def checkpoint_sections(self) -> dict:
        return {SECTION: {"steps": self.student.process.steps, "grid": _grid_of(self.student.process)}}

    # -- the loss -----------------------------------------------------------------------------------------------
    def G(self, policy: Policy, x, t, s, ctx):
        """Jump from level t to s (per-sample tensors (B,))."""
        nv = t
        out = policy.net.denoise(*self.edm.net_input(x, nv), ctx, s=s)
        d = self.edm.denoised(out, x, nv)
        r = expand_like(s / t, x)
        return r * x + (1 - r) * d

    @torch.no_grad()
    def teacher_heun(self, x, t, u, ctx):
        def D(z, sig):
            return self.edm.denoised(self.teacher.net.denoise(*self.edm.net_input(z, sig), ctx), z, sig)

        d = (x - D(x, t)) / expand_like(t, x)
        dt = expand_like(u - t, x)
        x_e = x + dt * d
        pos = u > 0
        d2 = (x_e - D(x_e, u.clamp_min(self.edm.cfg.sigma_min))) / expand_like(u.clamp_min(1e-12), x)
        heun = x + dt * (d + d2) / 2
        return torch.where(expand_like(pos, x), heun, x_e)

    def contexts(self, student: Policy, batch):
        t = self.teacher
        actions = student.normalizer.normalize("action", batch["action"].float())
        obs = student._features(batch["obs"])
        lang = batch["lang"].float() if student.spec.uses_language else None
        ctx_s = student.net.encode(obs, lang)
        with torch.no_grad():
            ctx_t = t.net.encode(obs, lang)
            ctx_g = self.target.net.encode(obs, lang)
        return actions, ctx_s, ctx_t, ctx_g

    def loss(self, student, batch, rs):
        x0, ctx_s, ctx_t, ctx_g = self.contexts(student, batch)
        n_grid = self.sig.shape[0] - 1  # sigmas excluding the final 0
        device = x0.device
        sig = self.sig.to(device)
        n = rs.randint(n_grid - 1).to(device)  # t = sig[n], u = sig[n+1], both > 0
        t, u = sig[n], sig[n + 1]
        m = n + 1 + (rs.rand().to(device) * (n_grid - n).float()).floor().long().clamp(max=n_grid - n - 1)
        s = sig[m]  # in [0, u]
        eps = rs.randn(*x0.shape[1:]).to(x0.dtype)
        x_t = x0 + expand_like(t, x0) * eps
        pred = self.G(student, x_t, t, s, ctx_s)  # WITH gradient: this is what trains the student
        with torch.no_grad():
            x_u = self.teacher_heun(x_t, t, u, ctx_t)
            target = torch.where(expand_like(u == s, x_u), x_u, self.G(self.target, x_u, u, s, ctx_g))
        consistency = ((pred - target) ** 2).mean()
        parts = {"consistency": consistency.detach()}
        loss = consistency
        if self.cfg.dsm_weight:
            d = self.edm.denoised(student.net.denoise(*self.edm.net_input(x_t, t), ctx_s, s=t), x_t, t)
            dsm = ((d - x0) ** 2).mean()
            loss = loss + self.cfg.dsm_weight * dsm
            parts["dsm"] = dsm.detach()
        return loss, parts


def distill_consistency(teacher: Policy, dataset, cfg: ConsistencyConfig, device: torch.device,
                        run_dir: str | Path | None = None, resume: bool = False, evaluator=None) -> Policy:
    """Distil `teacher` into a consistency student on the teacher's training windows, with the one trainer
    (checkpoints in `run_dir`/checkpoints, `resume=True` continues an interrupted run); returns the student."""
    import tempfile

    from training.trainer import Trainer, TrainerConfig

    if cfg.max_steps < 1 or cfg.batch_size < 1:
        raise DistillError(f"max_steps and batch_size must be >= 1, got {cfg.max_steps} and {cfg.batch_size}")
    if not 0.0 <= cfg.target_ema < 1.0:
        raise DistillError(f"target_ema must be in [0, 1), got {cfg.target_ema}")
    teacher = teacher.to(device).eval().requires_grad_(False)
    student = make_student(teacher, cfg.steps, cfg.grid).to(device).train()
    objective = ConsistencyObjective(student, teacher, cfg)
    tcfg = TrainerConfig(max_steps=cfg.max_steps, batch_size=cfg.batch_size, lr=cfg.lr, min_lr=cfg.lr,
                         weight_decay=cfg.weight_decay, betas=[0.9, 0.999], warmup_steps=0, grad_clip=cfg.grad_clip,
                         ema=False, ckpt_every=cfg.ckpt_every, log_every=cfg.log_every,
                         eval_every=cfg.eval_every if evaluator is not None else 0, progress=cfg.progress)
    run_dir = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="alloy-consistency-"))
    trainer = Trainer(student, dataset, tcfg, run_dir, device, seed=cfg.seed, evaluator=evaluator, resume=resume,
                      config={"consistency": dataclasses.asdict(cfg)}, objective=objective)
    trainer.fit()
    return trainer.policy.eval()


def save_student(student: Policy, path: str | Path) -> Path:
    """A student directory: the policy files with the student's sampler settings in config.yaml."""
    sampler = student.process
    return student.save_pretrained(path, extra={SECTION: {"steps": sampler.steps, "grid": _grid_of(sampler)}})


def load_student(path: str | Path, device: str | torch.device = "cpu", action_horizon: int | None = None,
                 inference_steps: int | None = None) -> Policy:
    """Load a student written by `save_student` (optionally executing another Ta per chunk)."""
    import yaml

    from policies.policy import CONFIG_FILE, read_checkpoint, with_sampling

    if inference_steps is not None:
        raise DistillError(f"{path} is a consistency student: it samples in the steps it was distilled for; "
                           f"leave inference_steps unset")
    spec, tensors = read_checkpoint(path)
    spec = with_sampling(spec, action_horizon, None)
    extra = (yaml.safe_load((Path(path) / CONFIG_FILE).read_text()) or {}).get(SECTION)
    if not isinstance(extra, dict):
        raise DistillError(f"{path} is not a consistency student (no '{SECTION}' section in {CONFIG_FILE}); "
                           f"load it with Policy.from_pretrained")
    teacher_like = Policy(spec)
    student = make_student(teacher_like, int(extra["steps"]), int(extra["grid"]))
    try:
        student.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise DistillError(f"weights in {path} do not match a consistency student ({str(e).splitlines()[0]}); "
                           f"the directory is corrupt") from None
    return student.to(device).eval()
