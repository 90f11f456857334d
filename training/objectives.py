"""Training objectives: what the one `Trainer` minimises, as small objects (batch -> loss and logged parts).

The trainer owns everything around the loss (optimiser, schedule, EMA, DDP, checkpoints, resume, evaluation, logs);
an objective says only how a batch becomes a loss for the trained policy, and which extra state it keeps (for
example the consistency target network) so that a resumed run continues bit-exactly.

    loss(model, batch, rs) -> (loss, {name: value})   model: the trained policy (as the trainer holds it)
    after_step()                                      after each optimiser step (e.g. update a target network)
    state_tensors() / load_state_tensors(tensors)     extra state for checkpoints (tensors only)
    checkpoint_sections()                             extra config.yaml sections of saved checkpoints
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class Objective(Protocol):
    name: str

    def loss(self, model: nn.Module, batch: dict, rs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def after_step(self) -> None: ...

    def state_tensors(self) -> dict[str, torch.Tensor]: ...

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...

    def checkpoint_sections(self) -> dict[str, Any]: ...


class ObjectiveBase:
    """Defaults for objectives without state of their own."""

    name = "objective"

    def after_step(self) -> None:
        pass

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def checkpoint_sections(self) -> dict[str, Any]:
        return {}


class ImitationObjective(ObjectiveBase):
    """The policy's own training loss: the diffusion (or regression) loss of its denoiser x process x scheme."""

    name = "imitation"

    def loss(self, model, batch, rs):
        return model(batch, rs)


class ObjectiveModule(nn.Module):
    """The trained policy with its objective as `forward`, so DDP and `torch.compile` see one module whose forward
    computes the loss (the objective's frozen networks stay outside it: they are not parameters to synchronise)."""

    def __init__(self, policy: nn.Module, objective: Objective):
        super().__init__()
        self.policy = policy
        self.objective = objective

    def forward(self, batch, rs):
        return self.objective.loss(self.policy, batch, rs)


def module_state(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's weights as checkpoint tensors under `prefix.` (detached CPU copies)."""
    return {f"{prefix}.{k}": v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def load_module_state(prefix: str, module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load `module_state(prefix, ...)` tensors back; a missing or foreign entry is a TrainingError."""
    from training.errors import TrainingError

    mine = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    try:
        module.load_state_dict(mine, strict=True)
    except RuntimeError as e:
        raise TrainingError(f"the checkpoint's {prefix} state does not fit this objective "
                            f"({str(e).splitlines()[0]}); resume with the same settings or start a new run") from None
