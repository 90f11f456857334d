"""`Policy`: denoiser x diffusion process x action scheme behind the small API every other part uses.

It owns normalisation (inside its weights), the per-env observation history, the language table (task one-hot ->
instruction embedding, so an env only has to report its task), and input validation. Checkpoints are a directory
with `config.yaml` (the `PolicySpec`) and `model.safetensors` (every parameter and buffer); loading never
unpickles anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import yaml
from torch import nn

from policies.atomic import atomic_dir, recover_dir, write_safetensors
from policies.config import FORMAT, FORMAT_VERSION, PolicySpec
from policies.diffusion import build_process
from policies.errors import PolicyError
from policies.expert_cache import ExpertCache, engaged
from policies.nets import NetDims, build_net
from policies.normalizer import Normalizer
from policies.random_source import RandomSource
from policies.schemes import build_scheme

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"


def _device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise PolicyError(f"device={device} was requested but CUDA is not available; use device=auto or cpu")
    return torch.device(device)


def _numeric(key: str, value: Any, spec: str) -> np.ndarray:
    """`value` as float32, or a PolicyError when it holds no numbers (strings, objects, complex values)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise PolicyError(f"observation '{key}' is not an array ({e}); the policy expects {spec}") from None
    if arr.dtype.kind not in "biuf":
        raise PolicyError(f"observation '{key}' is not numeric (dtype {arr.dtype}); the policy expects float "
                          f"arrays {spec}")
    return arr.astype(np.float32, copy=False)


class Policy(nn.Module):
    def __init__(self, spec: PolicySpec):
        super().__init__()
        spec.validate()
        if "action" in spec.obs_dims:
            raise PolicyError("an observation key may not be called 'action'; rename it in the dataset")
        self.spec = spec
        n = spec.net
        self.obs_horizon, self.pred_horizon, self.action_dim = n.obs_horizon, n.pred_horizon, spec.action_dim
        self.feature_keys = spec.feature_keys
        self.process = build_process(spec.diffusion)
        if hasattr(self.process, "bind"):  # processes with parameters sized by the policy (the Gaussian's std)
            self.process.bind(spec)
        goal_dim = spec.obs_dims["state"] if "state" in self.feature_keys else 0
        dims = NetDims(obs_features=sum(spec.obs_dims[k] for k in self.feature_keys), obs_horizon=n.obs_horizon,
                       pred_horizon=n.pred_horizon, action_dim=spec.action_dim, lang_dim=spec.lang_dim,
                       goal_dim=goal_dim, level_scale=self.process.level_scale, route_features=spec.route_slice)
        self.net = build_net(n, dims)
        self.normalizer = Normalizer({**{k: spec.obs_dims[k] for k in self.feature_keys}, "action": spec.action_dim},
                                     n.normalizer)
        if spec.uses_language:
            self.register_buffer("lang_table", torch.zeros(spec.obs_dims[n.lang_key], spec.lang_dim))
        self.scheme = build_scheme(spec.scheme, n.obs_horizon, n.pred_horizon, spec.action_dim)
        bind = getattr(self.scheme, "bind", None)  # schemes with parts sized by the denoiser (truncated's score head)
        if bind is not None:
            bind(self)
        # MoDE routes by noise level (and route keys) only: reuse routing and fused experts at fixed levels (on by
        # default).
        self.expert_cache = ExpertCache.for_net(self.net)
        self._history: torch.Tensor | None = None  # (B, To, F) normalised features
        self._fresh: np.ndarray | None = None  # (B,) envs whose history restarts at the next step
        self._lang: torch.Tensor | None = None
        self._affine_buffers: list[torch.Tensor] | None = None  # feature keys' normaliser buffers (scale, offset)
        self._affine_stamp: tuple | None = None
        self._affine: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ public facts
    @property
    def obs_spec(self) -> dict[str, tuple[int, ...]]:
        return {k: (d,) for k, d in self.spec.obs_dims.items()}

    @property
    def device(self) -> torch.device:
        return self.normalizer.fitted.device

    def set_language_table(self, table: torch.Tensor | np.ndarray) -> None:
        """Instruction embedding per task index (rows of the one-hot `lang_key`)."""
        if not self.spec.uses_language:
            raise PolicyError("this policy is not language-conditioned; build it with lang_dim > 0")
        table = torch.as_tensor(np.asarray(table, dtype=np.float32))
        if table.shape != self.lang_table.shape:
            raise PolicyError(f"language table has shape {tuple(table.shape)} but the policy expects "
                              f"{tuple(self.lang_table.shape)} (tasks x embedding dim)")
        self.lang_table.copy_(table)

    # ------------------------------------------------------------------ training
    def _features(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.normalizer.normalize(k, obs[k].float()) for k in self.feature_keys], dim=-1)

    def check_batch(self, batch: Mapping[str, Any]) -> None:
        """A dataset batch must match the policy's dims; a mismatch is a config error, named precisely."""
        obs = batch.get("obs")
        if not isinstance(obs, Mapping):
            raise PolicyError("the batch has no 'obs' dict; use training.data.WindowDataset batches")
        for key, dim in self.spec.obs_dims.items():
            if key not in obs:
                raise PolicyError(f"the dataset has no observation key '{key}' that the policy uses "
                                  f"(it has {', '.join(sorted(obs))}); set policy.obs_keys to match")
            shape = tuple(obs[key].shape)
            if len(shape) != 3 or shape[1:] != (self.obs_horizon, dim):
                raise PolicyError(f"dataset observation '{key}' has shape {shape} but the policy expects "
                                  f"(B, {self.obs_horizon}, {dim}); the dataset does not match the policy config")
        shape = tuple(batch["action"].shape)
        if len(shape) != 3 or shape[1:] != (self.pred_horizon, self.action_dim):
            raise PolicyError(f"dataset actions have shape {shape} but the policy expects "
                              f"(B, {self.pred_horizon}, {self.action_dim}); the dataset does not match the policy config")
        if self.spec.uses_language and tuple(batch["lang"].shape[1:]) != (self.spec.lang_dim,):
            raise PolicyError(f"dataset language embeddings have shape {tuple(batch['lang'].shape)} but the policy "
                              f"expects (B, {self.spec.lang_dim})")

    def compute_loss(self, batch: Mapping[str, Any], rs: RandomSource | None = None):
        """(total loss, {name: detached component}) on one dataset batch (tensors on the policy's device)."""
        self.check_batch(batch)
        actions = self.normalizer.normalize("action", batch["action"].float())
        if rs is None:
            rs = RandomSource(actions.shape[0], actions.device)
        obs = self._features(batch["obs"])
        lang = batch["lang"].float() if self.spec.uses_language else None
        goal = future = None
        if "state" in self.feature_keys:
            if "goal" in batch:
                goal = self.normalizer.normalize("state", batch["goal"].float())
            if "future_state" in batch:
                future = self.normalizer.normalize("state", batch["future_state"].float())
        ctx, aux = self.net.training_context(obs, lang, goal, future, rs)
        main = self.scheme.training_loss(self, ctx, actions, rs).mean()
        aux.update(self.net.pop_auxiliary_losses())
        total = main + sum(aux.values()) if aux else main
        return total, {"diffusion": main.detach(), **{k: v.detach() for k, v in aux.items()}}

    def forward(self, batch, rs=None):
        return self.compute_loss(batch, rs)

    def action_distribution(self, batch: Mapping[str, Any], rs: RandomSource | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """The Gaussian the policy puts on each demonstrated chunk position, with gradient: mean (B, Tp, da) and
        log std, in normalised action units. Only for the `gaussian` process (a student matched to a teacher)."""
        dist = getattr(self.process, "distribution", None)
        if dist is None:
            raise PolicyError(f"a {self.spec.diffusion.name} policy has no action distribution to match; use "
                              f"diffusion=gaussian for a Gaussian student")
        self.check_batch(batch)
        like = batch["action"].float()
        rs = rs if rs is not None else RandomSource(like.shape[0], like.device)
        obs = self._features(batch["obs"])
        lang = batch["lang"].float() if self.spec.uses_language else None
        ctx, _ = self.net.training_context(obs, lang, None, None, rs)
        self.net.pop_auxiliary_losses()
        return dist(lambda x, level: self.net.denoise(x, level, ctx), like)

    def normalize_actions(self, actions: torch.Tensor, std: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Env-unit actions (and their standard deviations) in the policy's normalised action units."""
        n = self.normalizer
        scaled_std = None if std is None else std.float() * n.action_scale.abs()
        return n.normalize("action", actions.float()), scaled_std

    # ------------------------------------------------------------------ inference
    def reset(self, mask: np.ndarray | None = None) -> None:
        if mask is None or self._history is None:
            self._history = self._fresh = self._lang = None
            return
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        if mask.shape[0] != self._fresh.shape[0]:
            raise PolicyError(f"reset mask has {mask.shape[0]} entries but the policy runs {self._fresh.shape[0]} envs")
        self._fresh |= mask
        self.scheme.reset(self._fresh.shape[0], mask)

    def obs_spec_text(self) -> str:
        """The observation spec act() takes, for messages: `{state: (B, 39), task: (B, 50)}`."""
        return "{" + ", ".join(f"{k}: (B, {d})" for k, d in self.spec.obs_dims.items()) + "}"

    def _validate(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Float32 (B, dim) arrays of exactly the policy's keys; PolicyError naming the expected spec otherwise (an
        unknown key is refused: the caller hands over `policies.interface.observation_for(policy, obs)`)."""
        spec = self.obs_spec_text()
        if not isinstance(obs, Mapping):
            raise PolicyError(f"act() takes a dict of observation arrays {spec}, got {type(obs).__name__}")
        extra = sorted(str(k) for k in obs if k not in self.spec.obs_dims)
        if extra:
            raise PolicyError(f"observation has unexpected key(s) {', '.join(extra)}; the policy expects {spec} "
                              f"(pass policies.interface.observation_for(policy, obs) to keep only its keys)")
        out, batch = {}, None
        for key, dim in self.spec.obs_dims.items():
            if key not in obs:
                raise PolicyError(f"observation lacks key '{key}'; the policy expects keys "
                                  f"{', '.join(self.spec.obs_dims)}: {spec}")
            arr = _numeric(key, obs[key], spec)
            if arr.ndim != 2 or arr.shape[1] != dim or (batch is not None and arr.shape[0] != batch):
                expect = f"({batch if batch is not None else 'B'}, {dim})"
                raise PolicyError(f"observation '{key}' has shape {arr.shape} but the policy expects {expect}; "
                                  f"pass batched arrays (num_envs, dim): {spec}")
            if arr.shape[0] == 0:
                raise PolicyError(f"observation '{key}' is an empty batch {arr.shape}; act() needs at least one env: "
                                  f"{spec}")
            if not np.isfinite(arr).all():
                raise PolicyError(f"observation '{key}' contains NaN or inf; check the env or its wrappers")
            batch = arr.shape[0]
            out[key] = arr
        return out

    def _feature_affine(self) -> tuple[torch.Tensor, ...]:
        """The normaliser's (scale, offset) of the feature keys side by side and the action's (scale, offset),
        rebuilt only when a buffer changes (fit, load_state_dict, a device move)."""
        bufs = self._affine_buffers
        if bufs is None:
            n = self.normalizer
            bufs = self._affine_buffers = [getattr(n, f"{k}_{part}") for part in ("scale", "offset")
                                           for k in self.feature_keys] + [n.action_scale, n.action_offset]
        stamp = tuple((b.data_ptr(), b._version) for b in bufs)
        if stamp != self._affine_stamp:
            half = len(self.feature_keys)
            self._affine = (torch.cat(bufs[:half]), torch.cat(bufs[half:2 * half]), bufs[-2], bufs[-1])
            self._affine_stamp = stamp
        return self._affine

    def _apply(self, fn, *args, **kwargs):  # .to() / .cuda() / .half() replace buffers: look them up again
        self._affine_buffers = None
        return super()._apply(fn, *args, **kwargs)

    def act(self, obs: Mapping[str, Any]) -> np.ndarray:
        """Actions (B, da) for a batch of observations (dict of (B, dim) arrays); keeps per-env history."""
        arrays = self._validate(obs)
        was_training = self.training
        switch = was_training or self.net.training or self.scheme.training  # act always samples in eval mode
        if switch:
            self.eval()
        try:
            with torch.inference_mode():
                return self._act(arrays)
        finally:
            if switch:
                self.train(was_training)

    def _act(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        device = self.device
        keys = self.feature_keys
        batch = arrays[keys[0]].shape[0]
        if self._history is None or self._history.shape[0] != batch:
            self._history = torch.zeros(batch, self.obs_horizon, sum(self.spec.obs_dims[k] for k in keys),
                                        device=device)
            self._fresh = np.ones(batch, dtype=bool)
            self.scheme.reset(batch, None)
        raw = arrays[keys[0]] if len(keys) == 1 else np.concatenate([arrays[k] for k in keys], axis=1)
        scale, offset, act_scale, act_offset = self._feature_affine()
        feat = torch.from_numpy(raw)
        if device.type != "cpu":
            feat = feat.to(device)
        feat = feat * scale + offset
        hist = torch.cat([self._history[:, 1:], feat[:, None]], dim=1)
        fresh = self._fresh
        if fresh.any():  # a fresh env's history starts as its first observation repeated
            if fresh.all():
                hist = feat[:, None].expand_as(hist).clone()
            else:
                rows = torch.from_numpy(np.flatnonzero(fresh)).to(device)
                hist[rows] = feat[rows, None]
            fresh[:] = False
        self._history = hist
        if self.spec.uses_language:
            self._lang = torch.from_numpy(arrays[self.spec.net.lang_key]).to(device) @ self.lang_table
        cache = self.expert_cache
        if cache is None:
            action = self.scheme.act(self)
        else:
            with engaged(cache, self.net):
                action = self.scheme.act(self)
        return ((action.float() - act_offset) / act_scale).cpu().numpy()  # Normalizer.unnormalize("action", .)
    def encode_current(self, rows: torch.Tensor | None = None):
        """Context for the current history of all envs or of `rows` (the scheme calls this once per step)."""
        hist, lang = self._history, self._lang
        if torch.is_grad_enabled():  # act keeps its state as inference tensors; autograd needs ordinary ones
            hist, lang = hist.clone(), (lang.clone() if lang is not None else None)
        if rows is not None:
            rows = rows.to(hist.device)
            hist = hist[rows]
            lang = lang[rows] if lang is not None else None
        return self.net.encode(hist, lang)

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
        """Write `config.yaml` + `model.safetensors` atomically; `extra` adds sections to config.yaml."""
        with atomic_dir(path) as tmp:
            self.write_files(tmp, extra)
        return Path(path)

    def write_files(self, directory: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> None:
        """Write the two policy files into an existing directory (callers that build a larger checkpoint
        directory atomically use this inside their own `atomic_dir`). Identical weights and spec give identical
        bytes in any process (sorted safetensors metadata, YAML in the spec's own key order)."""
        directory = Path(directory)
        config = {"format": FORMAT, "version": FORMAT_VERSION, "policy": self.spec.to_dict()}
        if extra:
            config.update({k: v for k, v in extra.items() if k not in config})
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in self.state_dict().items()}
        meta = {"format": FORMAT, "version": str(FORMAT_VERSION), "net": self.spec.net.name,
                "spec": json.dumps(self.spec.to_dict())}
        (directory / CONFIG_FILE).write_bytes(yaml.safe_dump(config, sort_keys=False).encode("utf-8"))
        write_safetensors(directory / WEIGHTS_FILE, tensors, metadata=meta)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        expect_net: str | None = None, action_horizon: int | None = None,
                        inference_steps: int | None = None) -> Policy:
        """Load a saved policy. `action_horizon` (Ta) and `inference_steps` replace the saved sampling settings;
        neither changes a weight, so the same checkpoint can be evaluated closer to closed loop or with more steps."""
        spec, tensors = read_checkpoint(path)
        if expect_net is not None and spec.net.name != expect_net:
            raise PolicyError(f"{path} holds a '{spec.net.name}' policy but a '{expect_net}' policy was expected")
        spec = with_sampling(spec, action_horizon, inference_steps)
        policy = cls(spec)
        try:
            policy.load_state_dict(tensors, strict=True)
        except RuntimeError as e:
            first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
            raise PolicyError(f"weights in {path} do not match its config ({first}); the checkpoint is corrupt "
                              f"or was written by another version") from None
        return policy.to(_device(device)).eval()


def with_sampling(spec: PolicySpec, action_horizon: int | None, inference_steps: int | None) -> PolicySpec:
    """`spec` with a new Ta and/or denoising step count (None keeps the saved one)."""
    scheme, diffusion = spec.scheme, spec.diffusion
    if action_horizon is not None:
        if scheme.name == "streaming" and int(action_horizon) != scheme.action_horizon:
            raise PolicyError(f"a streaming policy executes the Ta={scheme.action_horizon} it was trained with (its "
                              f"noise buffer is laid out in chunks of Ta); leave action_horizon unset")
        scheme = dataclasses.replace(scheme, action_horizon=int(action_horizon))
    if inference_steps is not None:
        if scheme.name != "chunk":
            raise PolicyError(f"inference_steps sets the chunk scheme's denoising steps; a {scheme.name} policy sets "
                              f"them in its scheme (scheme.stream_calls, scheme.trunc_steps)")
        diffusion = dataclasses.replace(diffusion, num_inference_steps=int(inference_steps))
    return dataclasses.replace(spec, scheme=scheme, diffusion=diffusion)


def read_checkpoint(path: str | os.PathLike) -> tuple[PolicySpec, dict[str, torch.Tensor]]:
    """The spec and tensors of a saved policy, with every way it can be foreign or broken named in one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = recover_dir(path)  # completes a crashed write's rollback, clears dead writers' temp dirs
    cfg_file, weights = root / CONFIG_FILE, root / WEIGHTS_FILE
    if not cfg_file.is_file() or not weights.is_file():
        raise PolicyError(f"no policy at {path} (needs {CONFIG_FILE} and {WEIGHTS_FILE}); pass a directory written "
                          f"by save_pretrained, e.g. <run_dir>/checkpoints/last")
    try:
        config = yaml.safe_load(cfg_file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise PolicyError(f"{cfg_file} is not valid YAML ({type(e).__name__}); the checkpoint is corrupt") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise PolicyError(f"{path} is not an alloy diffusion-policy checkpoint (format {found!r}); load it with the "
                          f"tool that wrote it")
    if int(config.get("version", -1)) > FORMAT_VERSION:
        raise PolicyError(f"{path} was written by a newer alloy (format version {config.get('version')}); upgrade alloy")
    spec = PolicySpec.from_dict(config.get("policy") or {})
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise PolicyError(f"{weights} is not a readable safetensors file ({str(e).splitlines()[0]}); the checkpoint "
                          f"is corrupt: save the policy again, or resume or evaluate from another checkpoint (e.g. "
                          f"checkpoints/best)") from None
    if meta.get("format") != FORMAT:
        raise PolicyError(f"{weights} was not written by an alloy policy (format {meta.get('format')!r}); "
                          f"load it with the tool that wrote it")
    if meta.get("net") != spec.net.name:
        raise PolicyError(f"{weights} holds a '{meta.get('net')}' policy but {cfg_file} says '{spec.net.name}'; the "
                          f"checkpoint directory mixes files from two runs")
    return spec, tensors
