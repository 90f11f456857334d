"""A residual specialist: a frozen base policy plus a small actor that corrects its actions for one robot.

    action = clip(base(obs) + scale * residual(features(obs), base(obs)), low, high)

The residual actor is what residual RL trains (a stable-baselines3 PPO or SAC actor, mirrored here layer for layer
so that a specialist runs without SB3). It sees the observation, each key divided by a fixed per-dimension scale
taken from the env's observation space, and the base action; its output layer starts at zero, so an untrained
specialist acts exactly as its base (clipped to the action space, as the env executes it).

A specialist is a checkpoint directory: `config.yaml` (format `alloy-residual`, the `residual:` section below, the
base's content hash), `model.safetensors` (the actor), and `base/`, a copy of the base checkpoint. It is a policy
like any other (`reset`, batched `act`, `obs_spec`, `action_dim`); `distribution(obs)` also gives the Gaussian the
actor samples from (mean and standard deviation in env units), which distillation students can match.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from policies.atomic import atomic_dir, recover_dir, write_safetensors
from policies.errors import PolicyError
from policies.hashing import TRAINING_FILES, policy_sha256
from policies.interface import observation_for
from policies.runtime.features import residual_features, standardize

FORMAT = "alloy-residual"
FORMAT_VERSION = 1
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
BASE_DIR = "base"
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SB3's clamp of a state-dependent log std


@dataclass
class ResidualSpec:
    """What rebuilds a residual actor. `obs_dims` orders the observation keys the actor sees; `obs_scale` divides
    each key (one number per dimension); `squash`: the actor's mean goes through tanh (SAC) instead of a clip (PPO);
    `state_std`: the log std is a head on the features (SAC) instead of one learned vector (PPO)."""

    obs_dims: dict[str, int]
    action_dim: int
    action_low: list[float]
    action_high: list[float]
    scale: float = 1.0
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "tanh"
    squash: bool = False
    state_std: bool = False
    # gSDE (PPO's `use_sde`): std^2 = (trunk features)^2 @ exp(log_std)^2, a (width, action_dim) matrix
    sde: bool = False
    algo: str = "ppo"
    embodiment: str = ""  # the robot it was trained for (descriptive: the env id is in `train`)
    normalize: bool = False  # features standardised by the running statistics of training (obs_mean, obs_var)
    clip_obs: float = 10.0

    def validate(self) -> None:
        if not self.obs_dims:
            raise PolicyError("a residual actor needs at least one observation key")
        if self.action_dim < 1 or len(self.action_low) != self.action_dim or len(self.action_high) != self.action_dim:
            raise PolicyError(f"action bounds must have action_dim={self.action_dim} entries each")
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise PolicyError(f"residual scale must be a positive number, got {self.scale}")
        if self.activation not in ACTIVATIONS:
            raise PolicyError(f"activation {self.activation!r} is unknown; choose one of {', '.join(ACTIVATIONS)}")
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise PolicyError(f"hidden layer sizes must be positive, got {self.hidden}")

    @property
    def feature_dim(self) -> int:
        return sum(self.obs_dims.values()) + self.action_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResidualSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise PolicyError(f"unknown residual config key(s) {', '.join(unknown)}; the checkpoint is from another "
                              f"version or tool")
        try:
            spec = cls(**{**data, "obs_dims": {str(k): int(v) for k, v in dict(data["obs_dims"]).items()}})
        except (KeyError, TypeError, ValueError) as e:
            raise PolicyError(f"residual config is incomplete or malformed ({type(e).__name__}: {e})") from None
        spec.validate()
        return spec


SDE_EPS = 1e-6  # SB3 adds it to the state-dependent variance


class ResidualActor(nn.Module):
    """features -> Gaussian over the residual: `trunk` + `mu` (+ `log_std` head or vector), as SB3 builds them."""

    def __init__(self, spec: ResidualSpec):
        super().__init__()
        spec.validate()
        self.spec = spec
        layers: list[nn.Module] = []
        width = spec.feature_dim
        for h in spec.hidden:
            layers += [nn.Linear(width, int(h)), ACTIVATIONS[spec.activation]()]
            width = int(h)
        self.trunk = nn.Sequential(*layers)
        self.mu = nn.Linear(width, spec.action_dim)
        if spec.state_std:
            self.log_std = nn.Linear(width, spec.action_dim)
        elif spec.sde:
            self.log_std = nn.Parameter(torch.zeros(width, spec.action_dim))
        else:
            self.log_std = nn.Parameter(torch.zeros(spec.action_dim))
        self.register_buffer("obs_scale", torch.ones(sum(spec.obs_dims.values())))
        self.register_buffer("obs_mean", torch.zeros(spec.feature_dim))  # used when spec.normalize
        self.register_buffer("obs_var", torch.ones(spec.feature_dim))
        nn.init.zeros_(self.mu.weight)  # the specialist starts as its base
        nn.init.zeros_(self.mu.bias)

    def set_obs_scale(self, scales: Mapping[str, np.ndarray]) -> None:
        """Per-key divisors (one per dimension; zeros become ones)."""
        parts = []
        for key, dim in self.spec.obs_dims.items():
            s = np.abs(np.asarray(scales[key], dtype=np.float32).reshape(-1))
            if s.shape != (dim,):
                raise PolicyError(f"observation scale of {key!r} has {s.shape[0]} entries, the key has {dim}")
            parts.append(np.where(np.isfinite(s) & (s > 0), s, 1.0))
        self.obs_scale.copy_(torch.from_numpy(np.concatenate(parts).astype(np.float32)))

    def features(self, obs: Mapping[str, Any], base_action: np.ndarray) -> torch.Tensor:
        """(B, F): the scaled observation keys, then the base action (see `residual_features`)."""
        flat = residual_features(obs, base_action, self.spec.obs_dims, self.obs_scale.cpu().numpy())
        if self.spec.normalize:
            flat = standardize(flat, self.obs_mean.cpu().numpy(), self.obs_var.cpu().numpy(), self.spec.clip_obs)
        return torch.from_numpy(flat).to(self.obs_scale.device)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log std of the Gaussian the residual is sampled from (before any squashing)."""
        h = self.trunk(features)
        mean = self.mu(h)
        if self.spec.state_std:
            log_std = self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)
        elif self.spec.sde:  # SB3's StateDependentNoiseDistribution (full_std, no expln)
            log_std = 0.5 * torch.log(torch.mm(h.reshape(-1, h.shape[-1]) ** 2, self.log_std.exp() ** 2) + SDE_EPS
                                      ).reshape(mean.shape)
        else:
            log_std = self.log_std.expand_as(mean)
        return mean, log_std

    def deterministic(self, features: torch.Tensor) -> torch.Tensor:
        """The residual's deterministic action, in [-1, 1]."""
        mean, _ = self(features)
        return torch.tanh(mean) if self.spec.squash else mean.clamp(-1.0, 1.0)


class ZeroBase:
    """The base of a specialist trained without one (`alloy rl base=none`): it always says zero, so the residual
    is the whole policy."""

    name = "none"
    obs_spec = None

    def __init__(self, action_dim: int):
        self.action_dim = int(action_dim)

    def reset(self, mask: np.ndarray | None = None) -> None:
        pass

    def act(self, obs: Mapping[str, Any]) -> np.ndarray:
        n = len(np.asarray(next(iter(obs.values()))))
        return np.zeros((n, self.action_dim), dtype=np.float32)


class ResidualPolicy:
    """A frozen base policy (anything with `reset`/`act`; None: `ZeroBase`) and a `ResidualActor` on top of it."""

    name = "residual"

    def __init__(self, base, actor: ResidualActor, base_path: str | os.PathLike | None = None,
                 base_hash: str | None = None, extra: Mapping[str, Any] | None = None):
        self.spec = actor.spec
        self.base = ZeroBase(self.spec.action_dim) if base is None else base
        self.actor = actor.eval()
        self.base_path = Path(base_path) if base_path is not None else None
        self.base_hash = base_hash
        self.extra = dict(extra or {})
        for module in (self.actor, self.base):
            if isinstance(module, nn.Module):  # frozen: a specialist is used, never trained, through this class
                for p in module.parameters():
                    p.requires_grad_(False)
        self._low = np.asarray(self.spec.action_low, dtype=np.float32)
        self._high = np.asarray(self.spec.action_high, dtype=np.float32)
        self.last_std: np.ndarray | None = None

    # ------------------------------------------------------------------ the policy interface
    @property
    def obs_spec(self) -> dict[str, tuple[int, ...]]:
        spec = {k: tuple(v) for k, v in dict(getattr(self.base, "obs_spec", None) or {}).items()}
        spec.update({k: (d,) for k, d in self.spec.obs_dims.items()})
        return spec

    @property
    def action_dim(self) -> int:
        return self.spec.action_dim

    def reset(self, mask: np.ndarray | None = None) -> None:
        self.base.reset(mask)

    def eval(self) -> ResidualPolicy:
        if hasattr(self.base, "eval"):
            self.base.eval()
        self.actor.eval()
        return self

    def to(self, device) -> ResidualPolicy:
        if hasattr(self.base, "to"):
            self.base.to(device)
        self.actor.to(device)
        return self

    def act(self, obs: Mapping[str, Any]) -> np.ndarray:
        mean, std = self.distribution(obs)
        self.last_std = std
        return np.clip(mean, self._low, self._high)

    def distribution(self, obs: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Mean (base + scale * deterministic residual) and std (scale * the actor's std) in env units, per env;
        advances the base's per-env state like `act` (call one or the other once per control step)."""
        base_action = np.asarray(self.base.act(observation_for(self.base, obs)), dtype=np.float32)
        with torch.inference_mode():
            feats = self.actor.features(obs, base_action)
            mean, log_std = self.actor(feats)
            residual = torch.tanh(mean) if self.spec.squash else mean.clamp(-1.0, 1.0)
            std = log_std.exp() * self.spec.scale
        return (base_action + self.spec.scale * residual.cpu().numpy()).astype(np.float32), std.cpu().numpy()

    # ------------------------------------------------------------------ checkpoints
    def write_files(self, directory: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> None:
        """config.yaml, model.safetensors and base/ into an existing directory (see `save_pretrained`)."""
        directory = Path(directory)
        if isinstance(self.base, ZeroBase):
            base_entry: dict[str, Any] = {"dir": None, "sha256": None}
        else:
            if self.base_path is None:
                raise PolicyError("this residual policy does not know where its base checkpoint is; build it with "
                                  "base_path=<the base's directory> to save it")
            shutil.copytree(recover_dir(self.base_path), directory / BASE_DIR,
                            ignore=shutil.ignore_patterns(".*", *TRAINING_FILES))
            base_hash = policy_sha256(directory / BASE_DIR)
            if self.base_hash is not None and base_hash != self.base_hash:
                raise PolicyError(f"the base checkpoint at {self.base_path} changed since this specialist was built "
                                  f"on it (content hash {base_hash[:12]} != {self.base_hash[:12]})")
            base_entry = {"dir": BASE_DIR, "sha256": base_hash}
        config = {"format": FORMAT, "version": FORMAT_VERSION, "residual": self.spec.to_dict(), "base": base_entry}
        for k, v in {**self.extra, **(extra or {})}.items():
            config.setdefault(k, v)
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in self.actor.state_dict().items()}
        (directory / CONFIG_FILE).write_bytes(yaml.safe_dump(config, sort_keys=False).encode("utf-8"))
        write_safetensors(directory / WEIGHTS_FILE, tensors, metadata={"format": FORMAT,
                                                                       "version": str(FORMAT_VERSION)})

    def save_pretrained(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
        with atomic_dir(path) as tmp:
            self.write_files(tmp, extra)
        return Path(path)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        load_base: Callable[[Path], Any] | None = None) -> ResidualPolicy:
        """Load a specialist directory. `load_base(dir)` loads its base (default `Policy.from_pretrained`; the
        policy registry of `training.evaluation` passes one that takes any kind of checkpoint)."""
        config, actor, root = read_residual(path)
        base, base_dir, found = None, None, None
        if config["base"].get("dir") is not None:
            base_dir = root / BASE_DIR
            found = policy_sha256(base_dir)
            if found != config["base"].get("sha256"):
                raise PolicyError(f"the base inside {path} does not match the hash recorded with the specialist "
                                  f"({found[:12]} != {str(config['base'].get('sha256'))[:12]}); the checkpoint was "
                                  f"modified or is corrupt")
            if load_base is None:
                from policies.policy import Policy

                base = Policy.from_pretrained(base_dir, device=device)
            else:
                base = load_base(base_dir)
        extra = {k: v for k, v in config.items() if k not in ("format", "version", "residual", "base")}
        policy = cls(base, actor, base_path=base_dir, base_hash=found, extra=extra)
        policy.actor.to(device)
        return policy


def read_residual(path: str | os.PathLike) -> tuple[dict[str, Any], ResidualActor, Path]:
    """The config, actor and directory of a saved specialist; every way it can be foreign or broken in one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = recover_dir(path)
    cfg_file, weights = root / CONFIG_FILE, root / WEIGHTS_FILE
    if not cfg_file.is_file() or not weights.is_file():
        raise PolicyError(f"no residual specialist at {path} (needs {CONFIG_FILE}, {WEIGHTS_FILE} and {BASE_DIR}/); "
                          f"pass a directory written by `alloy rl`, e.g. <run_dir>/checkpoints/best")
    try:
        config = yaml.safe_load(cfg_file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise PolicyError(f"{cfg_file} is not valid YAML ({type(e).__name__}); the checkpoint is corrupt") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or not isinstance(config.get("base"), dict):
        raise PolicyError(f"{path} is not an alloy residual specialist; load it with the tool that wrote it")
    if int(config.get("version", -1)) > FORMAT_VERSION:
        raise PolicyError(f"{path} was written by a newer alloy (format version {config.get('version')}); upgrade alloy")
    if config["base"].get("dir") is not None and not (root / BASE_DIR).is_dir():
        raise PolicyError(f"the specialist at {path} has lost its {BASE_DIR}/ directory; the checkpoint is incomplete")
    spec = ResidualSpec.from_dict(config.get("residual") or {})
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise PolicyError(f"{weights} is not a readable safetensors file ({str(e).splitlines()[0]}); the checkpoint "
                          f"is corrupt") from None
    actor = ResidualActor(spec)
    try:
        actor.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        lines = str(e).splitlines()
        raise PolicyError(f"weights in {weights} do not match its config ({(lines[1] if len(lines) > 1 else lines[0]).strip()}); "
                          f"the checkpoint is corrupt") from None
    return config, actor, root
