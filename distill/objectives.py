"""Distillation objectives for a Gaussian student (`diffusion=gaussian`): match a teacher's action distribution.

Each is an objective of the one trainer (`training.objectives`): batch -> loss and logged parts. The batch holds
the teacher's action means as `action` and their standard deviations as `action_std` (windows of labelled
episodes, `training.data.MemoryEpisodes(actions="labels")`); everything is compared in the student's normalised
action units.

- `mse`: squared error of the student's mean to the teacher's mean (the std is not trained);
- `kl`: KL(teacher || student) of the diagonal Gaussians (COMPASS's distillation loss);
- `taid`: TAID (Shing et al., 2025) adapted to Gaussians: the target is the product of the (detached) student's
  and the teacher's Gaussians with weights (1 - t) and t, t rising from `t_start` to 1 adaptively (faster while the
  loss falls fast), never slower than the linear ramp; the loss is KL(target || student). At t = 1 it is `kl`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from distill.errors import DistillError
from training.objectives import ObjectiveBase

KINDS = ("mse", "kl", "taid")


@dataclass
class TAIDConfig:
    t_start: float = 0.4
    t_end: float = 1.0
    alpha: float = 5e-4
    beta: float = 0.99


def gaussian_kl(mean_p: torch.Tensor, std_p: torch.Tensor, mean_q: torch.Tensor, std_q: torch.Tensor) -> torch.Tensor:
    """KL(N(mean_p, std_p^2) || N(mean_q, std_q^2)) per element."""
    var_p, var_q = std_p ** 2, std_q ** 2
    return torch.log(std_q / std_p) + (var_p + (mean_p - mean_q) ** 2) / (2.0 * var_q) - 0.5


class GaussianDistillation(ObjectiveBase):
    """One of `KINDS` against the teacher labels in the batch; `std_floor` (normalised units) bounds the teacher's
    std from below (a deterministic teacher has none)."""

    def __init__(self, kind: str, total_steps: int, std_floor: float = 0.05, taid: TAIDConfig | None = None):
        if kind not in KINDS:
            raise DistillError(f"unknown distillation loss {kind!r}; choose one of: {', '.join(KINDS)}")
        self.kind, self.name = kind, f"distill_{kind}"
        self.total_steps = max(1, int(total_steps))
        self.std_floor = float(std_floor)
        self.taid = taid or TAIDConfig()
        # TAID's state: interpolation t, momentum m, last loss, steps taken (saved with checkpoints)
        self.t, self.m, self.prev, self.steps = float(self.taid.t_start), 0.0, math.nan, 0
        self._last_loss: float | None = None

    def check_batch(self, batch) -> None:
        if self.kind != "mse" and "action_std" not in batch:
            raise DistillError(f"the {self.kind} loss needs the teacher's action std in the data (label_std); record "
                               f"labels with a Gaussian labeller or use the mse loss")

    def loss(self, policy, batch, rs):
        mean, log_std = policy.action_distribution(batch, rs)
        target, target_std = policy.normalize_actions(batch["action"], batch.get("action_std"))
        mse = ((mean - target) ** 2).mean()
        parts = {"mse": mse.detach()}
        if self.kind == "mse":
            loss = mse
        else:
            std = torch.exp(log_std)
            target_std = target_std.clamp_min(self.std_floor)
            kl = gaussian_kl(target, target_std, mean, std).mean()
            parts["kl"] = kl.detach()
            if self.kind == "kl":
                loss = kl
            else:
                t = self.t
                prec_s, prec_t = 1.0 / std.detach() ** 2, 1.0 / target_std ** 2
                prec = (1.0 - t) * prec_s + t * prec_t
                mix_mean = ((1.0 - t) * mean.detach() * prec_s + t * target * prec_t) / prec
                loss = gaussian_kl(mix_mean, prec.rsqrt(), mean, std).mean()
                parts["taid_t"] = torch.tensor(t)
        self._last_loss = float(loss.detach())
        parts["std"] = torch.exp(log_std).mean().detach()
        return loss, parts

    def after_step(self) -> None:
        """TAID's adaptive schedule (a no-op for the other losses)."""
        self.steps += 1
        if self.kind != "taid" or self._last_loss is None:
            return
        c = self.taid
        loss = self._last_loss
        if math.isfinite(self.prev) and self.prev > 0:
            rel = (self.prev - loss) / self.prev
            self.m = c.beta * self.m + (1.0 - c.beta) * rel
        self.prev = loss
        linear = c.t_start + (c.t_end - c.t_start) * min(1.0, self.steps / self.total_steps)
        sigmoid = 1.0 / (1.0 + math.exp(-self.m))
        self.t = min(c.t_end, max(linear, self.t + c.alpha * sigmoid * (1.0 - self.t)))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"taid": torch.tensor([self.t, self.m, self.prev, float(self.steps)], dtype=torch.float64)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if "taid" in tensors:
            t, m, prev, steps = (float(v) for v in tensors["taid"])
            self.t, self.m, self.prev, self.steps = t, m, prev, int(steps)
