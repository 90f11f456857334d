"""Run an exported policy with NumPy and ONNX Runtime only: the same `reset` / batched `act` as `Policy.act`.

The artifact's graphs hold the denoiser and the sampler (its constants inside, its noise as inputs); this module
does what happens around them, exactly as the torch policy does it: validation of the observations, normalisation,
the per-env observation history (a fresh env's history is its first observation repeated), the language lookup,
the chunk queue (Ta actions per replanning, only the envs whose queue ran out are replanned) or the streaming
buffer (fresh envs warm up, the others replan), and the action's un-normalisation. A residual specialist is its
base artifact plus the residual actor's graph. Noise comes from a seedable NumPy generator, drawn in the order and
shapes the artifact lists, so a torch policy given the same draws (`policies.noise.given`) acts the same.

Nothing here imports torch or gymnasium.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from policies.errors import PolicyError
from policies.runtime.artifact import SPEC_FILE, read_artifact
from policies.runtime.features import residual_features, standardize

Graph = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def onnx_graph(path: Path, threads: int = 1) -> Graph:
    """An ONNX Runtime session on the CPU provider (created once: creation costs far more than a call)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise PolicyError(f"{path} is not a valid ONNX graph ({str(e).splitlines()[0][:200]}); export it again") \
            from None
    names = [o.name for o in session.get_outputs()]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return session.run(names, feeds)

    return run


class Runtime:
    """`Runtime(dir)`: an exported policy. `backend` "onnx" (default) or "pt2" (the same graphs as `torch.export`
    programs; needs torch), `seed` seeds the noise generator, `threads` the ONNX Runtime intra-op threads."""

    def __init__(self, path: str | os.PathLike, seed: int | None = None, backend: str = "onnx", threads: int = 1,
                 verify: bool = True):
        self.path = Path(path)
        self.spec = read_artifact(self.path, verify=verify)
        self.backend = backend
        self.rng = np.random.default_rng(seed)
        self.kind = self.spec["kind"]
        self.name = f"artifact {self.path.name}"
        self.obs_spec = {k: tuple(v["shape"]) for k, v in self.spec["obs_spec"].items()}
        self.action_dim = int(self.spec["action"]["dim"])
        self.graphs = {name: self._load_graph(name, g, threads) for name, g in self.spec["graphs"].items()}
        self.last_std: np.ndarray | None = None
        if self.kind == "residual":
            r = self.spec["residual"]
            self.base = Runtime(self.path / r["base"], backend=backend, threads=threads, verify=verify)
            self.base.rng = self.rng  # one noise stream for the whole specialist
            self._obs_dims = {k: int(v) for k, v in r["obs_dims"].items()}
            self._obs_scale = np.asarray(r["obs_scale"], dtype=np.float32)
            self._low = np.asarray(r["action_low"], dtype=np.float32)
            self._high = np.asarray(r["action_high"], dtype=np.float32)
        else:
            p = self.spec["policy"]
            self.feature_keys = list(p["feature_keys"])
            self.scheme = p["scheme"]
            self.To, self.Tp, self.Ta = int(p["obs_horizon"]), int(p["pred_horizon"]), int(p["action_horizon"])
            n = p["normalizer"]
            self._f_scale = np.asarray(n["feature_scale"], dtype=np.float32)
            self._f_offset = np.asarray(n["feature_offset"], dtype=np.float32)
            self._a_scale = np.asarray(n["action_scale"], dtype=np.float32)
            self._a_offset = np.asarray(n["action_offset"], dtype=np.float32)
            lang = p.get("language")
            self._lang_key = lang["key"] if lang else None
            self._lang_table = np.load(self.path / lang["file"], allow_pickle=False) if lang else None
            self.reset()

    def _load_graph(self, name: str, graph: Mapping[str, Any], threads: int) -> Graph:
        if self.backend == "onnx":
            return onnx_graph(self.path / graph["onnx"], threads)
        if self.backend == "pt2":
            if not graph.get("pt2"):
                raise PolicyError(f"{self.path} has no pt2 form of graph {name!r}; export it with format=pt2 or all")
            from policies.runtime.pt2 import pt2_graph  # torch, only for this backend

            return pt2_graph(self.path / graph["pt2"])
        raise PolicyError(f"unknown runtime backend {self.backend!r}; use onnx or pt2")

    def seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)
        if self.kind == "residual":
            self.base.rng = self.rng

    # ------------------------------------------------------------------ the policy interface
    def reset(self, mask: np.ndarray | None = None) -> None:
        if self.kind == "residual":
            self.base.reset(mask)
            return
        if mask is None or getattr(self, "_hist", None) is None:
            self._hist = self._fresh = self._cursor = self._queue = self._buffer = self._warm = None
            return
        m = np.asarray(mask, dtype=bool).reshape(-1)
        if m.shape[0] != self._fresh.shape[0]:
            raise PolicyError(f"reset mask has {m.shape[0]} entries but the policy runs {self._fresh.shape[0]} envs")
        self._fresh |= m
        self._cursor[m] = self.Ta
        if self._warm is not None:
            self._warm |= m

    def act(self, obs: Mapping[str, Any]) -> np.ndarray:
        arrays = self._validate(obs)
        if self.kind == "residual":
            return self._act_residual(arrays)
        return self._act_diffusion(arrays)

    def _validate(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(obs, Mapping):
            raise PolicyError(f"act() takes a dict of observation arrays, got {type(obs).__name__}")
        extra = sorted(set(obs) - set(self.obs_spec))
        if extra:
            raise PolicyError(f"unexpected observation key(s) {extra}; the policy expects {self._expected()}")
        out, batch = {}, None
        for key, shape in self.obs_spec.items():
            if key not in obs:
                raise PolicyError(f"observation lacks key '{key}'; the policy expects {self._expected()}")
            try:
                raw = np.asarray(obs[key])
            except (ValueError, TypeError) as e:  # ragged nested lists
                raise PolicyError(f"observation '{key}' is not an array ({e}); the policy expects "
                                  f"{self._expected()}") from None
            if raw.dtype.kind not in "fiub":
                raise PolicyError(f"observation '{key}' is not numeric (dtype {raw.dtype}); the policy expects "
                                  f"{self._expected()}")
            arr = raw.astype(np.float32, copy=False)
            if arr.ndim != 1 + len(shape) or tuple(arr.shape[1:]) != shape or (batch is not None and arr.shape[0] != batch):
                raise PolicyError(f"observation '{key}' has shape {arr.shape}; the policy expects {self._expected()}")
            if arr.shape[0] == 0:
                raise PolicyError(f"the batch is empty; pass at least one env's observation ({self._expected()})")
            if not np.isfinite(arr).all():
                raise PolicyError(f"observation '{key}' contains NaN or inf; check the env or its wrappers")
            batch = arr.shape[0]
            out[key] = arr
        return out

    def _expected(self) -> str:
        return "{" + ", ".join(f"{k}: (B, {', '.join(map(str, s))}) float32" for k, s in self.obs_spec.items()) + "}"

    # ------------------------------------------------------------------ diffusion policies
    def _noise(self, graph: str, batch: int) -> dict[str, np.ndarray]:
        shapes = self.spec["graphs"][graph]["noise"]
        return {f"noise_{i}": self.rng.standard_normal([batch * -d if d < 0 else d for d in shape], dtype=np.float32)
                for i, shape in enumerate(shapes)}  # a negative first dim -m: m rows per env

    def _call(self, graph: str, rows: np.ndarray | None, **inputs: np.ndarray) -> np.ndarray:
        hist = self._hist if rows is None else self._hist[rows]
        feeds = {"hist": hist, **inputs}
        if self._lang is not None:
            feeds["lang"] = self._lang if rows is None else self._lang[rows]
        feeds.update(self._noise(graph, hist.shape[0]))
        return np.asarray(self.graphs[graph](feeds)[0], dtype=np.float32)

    def _act_diffusion(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        keys = self.feature_keys
        b = arrays[keys[0]].shape[0]
        feat = (np.concatenate([arrays[k] for k in keys], axis=1) * self._f_scale + self._f_offset).astype(np.float32)
        if self._hist is not None and self._hist.shape[0] != b:
            raise PolicyError(f"the batch has {b} envs but this episode started with {self._hist.shape[0]}; call "
                              f"reset() before changing the number of envs ({self._expected()})")
        if self._hist is None:
            self._hist = np.zeros((b, self.To, feat.shape[1]), dtype=np.float32)
            self._fresh = np.ones(b, dtype=bool)
            self._cursor = np.full(b, self.Ta, dtype=np.int64)
            self._queue = np.zeros((b, self.Ta, self.action_dim), dtype=np.float32)
            self._buffer = np.zeros((b, self.Tp, self.action_dim), dtype=np.float32)
            self._warm = np.ones(b, dtype=bool) if self.scheme == "streaming" else None
        hist = np.concatenate([self._hist[:, 1:], feat[:, None]], axis=1)
        if self._fresh.any():
            hist[self._fresh] = feat[self._fresh, None]
            self._fresh[:] = False
        self._hist = hist
        self._lang = (arrays[self._lang_key] @ self._lang_table).astype(np.float32) if self._lang_key else None
        need = np.flatnonzero(self._cursor >= self.Ta)
        if need.size:
            start = self.To - 1
            if self.scheme == "streaming":
                for warm in (True, False):  # the torch scheme's order: fresh envs first
                    sel = need[self._warm[need] == warm]
                    if not sel.size:
                        continue
                    rows = None if sel.size == b else sel
                    if warm:
                        buf = self._call("warm", rows)
                    else:
                        buf = self._call("replan", rows, buffer=self._buffer if rows is None else self._buffer[rows])
                    self._buffer[sel] = buf
                    self._queue[sel] = buf[:, start:start + self.Ta]
                self._warm[need] = False
            else:
                chunk = self._call("plan", None if need.size == b else need)
                self._queue[need] = chunk[:, start:start + self.Ta]
            self._cursor[need] = 0
        action = self._queue[np.arange(b), self._cursor]
        self._cursor += 1
        return ((action - self._a_offset) / self._a_scale).astype(np.float32)

    # ------------------------------------------------------------------ residual specialists
    def _act_residual(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        base_action = self.base.act({k: arrays[k] for k in self.base.obs_spec})
        feats = residual_features(arrays, base_action, self._obs_dims, self._obs_scale)
        r = self.spec["residual"]
        if r.get("normalize"):
            feats = standardize(feats, np.asarray(r["obs_mean"], np.float32), np.asarray(r["obs_var"], np.float32),
                                float(r["clip_obs"]))
        mean, log_std = self.graphs["residual"]({"features": feats})
        residual = np.tanh(mean) if r["squash"] else np.clip(mean, -1.0, 1.0)
        self.last_std = (np.exp(log_std) * float(r["scale"])).astype(np.float32)
        return np.clip(base_action + float(r["scale"]) * residual, self._low, self._high).astype(np.float32)


def is_artifact(path: str | os.PathLike) -> bool:
    return (Path(path) / SPEC_FILE).is_file()
