"""Export a policy to a deployable artifact: ONNX graphs (and optionally `torch.export` programs) plus `policy.json`.

What becomes a graph is the part of `act` that runs the networks: the context encoder, the denoiser and the whole
sampler of the policy's scheme, with every sampler constant folded in and every noise draw an input (recorded once
through `policies.noise`, so the graph's noise inputs are exactly the draws the torch policy makes, in the same
order and shapes). MoDE's expert cache is engaged while tracing, so the graph holds the fused experts. The rest of
`act` (normalisation, observation history, the chunk queue or streaming buffer, per-env resets) is plain bookkeeping
that `policies.runtime.Runtime` does in NumPy from the spec. Graphs per scheme:

    chunk, truncated (and consistency students, Gaussian and regression heads):  plan(hist[, lang], noise...) -> chunk
    streaming:  warm(hist[, lang], noise...) -> buffer    replan(hist[, lang], buffer, noise...) -> buffer
    residual specialist:  residual(features) -> (mean, log_std), beside its base's own artifact in base/

`hist` is the normalised observation history (B, To, F); every input and output has a free batch dimension.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from policies import noise as noise_source
from policies.atomic import atomic_dir
from policies.errors import PolicyError
from policies.expert_cache import engaged, recorded, replayed
from policies.runtime.artifact import FORMAT, FORMAT_VERSION, SPEC_FILE, file_sha256, spec_digest
from policies.version import alloy_version

log = logging.getLogger(__name__)

FORMATS = ("onnx", "pt2")
OPSET = 18


class _Graph(nn.Module):
    """One traced entry point of a policy: `kind` is plan | warm | replan. `routing` holds the MoDE expert-cache
    entries of an eager pass, replayed call by call while tracing."""

    def __init__(self, policy, kind: str, uses_lang: bool):
        super().__init__()
        self.policy, self.kind, self.uses_lang = policy, kind, uses_lang
        self.routing: list | None = None

    def forward(self, hist, *rest):
        p = self.policy
        rest = list(rest)
        lang = rest.pop(0) if self.uses_lang else None
        buffer = rest.pop(0) if self.kind == "replan" else None
        noise = noise_source.given(rest) if rest else contextlib.nullcontext()  # none given: recording the draws
        routing = replayed(p.expert_cache, self.routing) if self.routing is not None else contextlib.nullcontext()
        with noise, routing, engaged(p.expert_cache, p.net):
            ctx = p.net.encode(hist, lang)
            b = hist.shape[0]
            if self.kind == "plan":
                if p.scheme.cfg.name == "truncated":
                    return p.scheme.plan(p, ctx)
                return p.process.sample(lambda x, level: p.net.denoise(x, level, ctx),
                                        (b, p.pred_horizon, p.action_dim), hist.device)
            plan = p.scheme.plan(p.process, hist.device, hist.dtype, b)
            return plan.warm(p, ctx) if self.kind == "warm" else plan.replan(p, buffer, ctx)


class _Actor(nn.Module):
    def __init__(self, actor):
        super().__init__()
        self.actor = actor

    def forward(self, features):
        return self.actor(features)


def _record_noise(module: nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The draws the graph makes for these inputs (their shapes are its noise inputs); a MoDE graph also keeps the
    expert-cache entry of each denoiser call, for the traced pass."""
    rec = noise_source.Recorder()
    cache = getattr(getattr(module, "policy", None), "expert_cache", None)
    if isinstance(module, _Graph):
        module.routing = None  # an eager pass routes for itself
    with torch.no_grad(), noise_source.drawn_by(rec), recorded(cache) as routing:
        module(*inputs)
    if isinstance(module, _Graph) and cache is not None:
        module.routing = list(routing)
    return rec.draws


@contextlib.contextmanager
def _quiet():
    """torch.onnx's exporter prints progress and warnings about ops alloy does not use; keep the CLI's output clean."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        loggers = [logging.getLogger(n) for n in ("torch", "onnx_ir", "onnxscript")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _export(module: nn.Module, inputs: list[torch.Tensor], names: list[str], outputs: list[str],
            multiples: list[int], out: Path, stem: str, formats: tuple[str, ...]) -> dict[str, str]:
    """Write `<stem>.onnx` (checked with onnx.checker) and/or `<stem>.pt2`; dim 0 of input i is multiples[i] x B."""
    from torch.export import Dim

    batch = Dim("batch", min=1, max=65536)
    shapes = [{0: batch * m if m > 1 else batch} for m in multiples]
    if isinstance(module, _Graph) and len(shapes) > 1:
        shapes = (shapes[0], tuple(shapes[1:]))  # forward(hist, *rest)
    else:
        shapes = tuple(shapes)
    files: dict[str, str] = {}
    module.eval()
    with _quiet():  # (not under no_grad: torch.onnx's decomposition of such a program fails)
        if "onnx" in formats:
            path = out / f"{stem}.onnx"
            onnx_program = torch.onnx.export(module, tuple(inputs), input_names=names, output_names=outputs,
                                             opset_version=OPSET, dynamo=True, dynamic_shapes=shapes,
                                             external_data=False)
            onnx_program.save(str(path), external_data=False)
            import onnx

            onnx.checker.check_model(str(path), full_check=True)
            files["onnx"] = path.name
        if "pt2" in formats:
            path = out / f"{stem}.pt2"
            torch.export.save(torch.export.export(module, tuple(inputs), dynamic_shapes=shapes), str(path))
            files["pt2"] = path.name
    return files


def _example_inputs(policy, kind: str, features: int, b: int) -> tuple[list[torch.Tensor], list[str], list[int]]:
    """Example inputs of a graph for batch b, their names and their rows per env."""
    g = torch.Generator().manual_seed(b)
    inputs, names = [torch.randn(b, policy.obs_horizon, features, generator=g)], ["hist"]
    if policy.spec.uses_language:
        inputs.append(torch.randn(b, policy.spec.lang_dim, generator=g))
        names.append("lang")
    if kind == "replan":
        inputs.append(torch.randn(b, policy.pred_horizon, policy.action_dim, generator=g))
        names.append("buffer")
    return inputs, names, [1] * len(inputs)


def _diffusion_graphs(policy, out: Path, formats: tuple[str, ...]) -> dict[str, Any]:
    uses_lang = policy.spec.uses_language
    F = sum(policy.spec.obs_dims[k] for k in policy.feature_keys)
    scheme = policy.scheme.cfg.name
    if scheme == "truncated":
        policy.scheme._check_fitted()
    kinds = ["warm", "replan"] if scheme == "streaming" else ["plan"]
    graphs: dict[str, Any] = {}
    for kind in kinds:
        module = _Graph(policy, kind, uses_lang)
        one, _, _ = _example_inputs(policy, kind, F, 1)
        per_row = [int(d.shape[0]) for d in _record_noise(module, one)]  # draws scale with B: rows per env
        inputs, names, mult = _example_inputs(policy, kind, F, 2)
        draws = _record_noise(module, inputs)
        noise_shapes = [[-m, *map(int, d.shape[1:])] for m, d in zip(per_row, draws)]  # -m: m rows per env
        names += [f"noise_{i}" for i in range(len(draws))]
        output = "buffer_out" if kind != "plan" else "chunk"
        files = _export(module, inputs + draws, names, [output], mult + per_row, out, kind, formats)
        graphs[kind] = {**files, "inputs": names, "outputs": [output],
                        "noise": noise_shapes}
    return graphs


def _diffusion_spec(policy, out: Path, formats: tuple[str, ...]) -> dict[str, Any]:
    n = policy.normalizer
    keys = policy.feature_keys
    f_scale = torch.cat([getattr(n, f"{k}_scale") for k in keys]).float()
    f_offset = torch.cat([getattr(n, f"{k}_offset") for k in keys]).float()
    spec_p = {
        "net": policy.spec.net.name, "process": policy.process.name, "scheme": policy.scheme.cfg.name,
        "feature_keys": keys, "obs_horizon": policy.obs_horizon, "pred_horizon": policy.pred_horizon,
        "action_horizon": int(policy.scheme.action_horizon),
        "denoiser_calls": _calls(policy),
        "normalizer": {"feature_scale": f_scale.tolist(), "feature_offset": f_offset.tolist(),
                       "action_scale": n.action_scale.float().tolist(), "action_offset": n.action_offset.float().tolist()},
        "language": None,
        "config": policy.spec.to_dict(),
    }
    if policy.spec.uses_language:
        np.save(out / "lang_table.npy", policy.lang_table.detach().cpu().numpy().astype(np.float32),
                allow_pickle=False)
        spec_p["language"] = {"key": policy.spec.net.lang_key, "file": "lang_table.npy"}
    return {"kind": "diffusion", "policy": spec_p, "graphs": _diffusion_graphs(policy, out, formats)}


def _calls(policy) -> dict[str, Any]:
    s = policy.scheme
    if s.cfg.name == "streaming":
        return {"warm": int(s.levels), "replan": int(s.calls)}
    if s.cfg.name == "truncated":
        return {"plan": int(s.cfg.trunc_steps)}
    return {"plan": int(policy.process.num_net_calls())}


def _residual_spec(policy, out: Path, formats: tuple[str, ...]) -> dict[str, Any]:
    from policies.residual import ZeroBase

    if isinstance(policy.base, ZeroBase):
        raise PolicyError("a specialist trained without a base (base=none) has no base to export; export is for "
                          "residual specialists on an imitation base")
    from policies.runtime import Runtime

    if isinstance(policy.base, Runtime):  # the base is an exported artifact already: it goes in as it is
        import shutil

        shutil.copytree(policy.base.path, out / "base", ignore=shutil.ignore_patterns(".*"))
    else:
        (out / "base").mkdir()
        _write(policy.base, out / "base", formats, {})
    actor = policy.actor.float().eval()
    feats = torch.randn(2, actor.spec.feature_dim, generator=torch.Generator().manual_seed(0))
    files = _export(_Actor(actor), [feats], ["features"], ["mean", "log_std"], [1], out, "residual", formats)
    s = actor.spec
    return {"kind": "residual",
            "residual": {"base": "base", "obs_dims": dict(s.obs_dims), "obs_scale": actor.obs_scale.tolist(),
                         "scale": float(s.scale), "squash": bool(s.squash), "normalize": bool(s.normalize),
                         "clip_obs": float(s.clip_obs), "obs_mean": actor.obs_mean.tolist(),
                         "obs_var": actor.obs_var.tolist(), "action_low": list(s.action_low),
                         "action_high": list(s.action_high), "algo": s.algo, "embodiment": s.embodiment},
            "graphs": {"residual": {**files, "inputs": ["features"], "outputs": ["mean", "log_std"], "noise": []}}}


def _write(policy, out: Path, formats: tuple[str, ...], extra: dict[str, Any]) -> dict[str, Any]:
    from policies.policy import Policy
    from policies.residual import ResidualPolicy

    if isinstance(policy, ResidualPolicy):
        body = _residual_spec(policy, out, formats)
    elif isinstance(policy, Policy):
        body = _diffusion_spec(policy.float().eval().cpu(), out, formats)
    else:
        raise PolicyError(f"cannot export a {type(policy).__name__}; export a trained policy, a consistency student "
                          f"or a residual specialist")
    spec = {"format": FORMAT, "format_version": FORMAT_VERSION, "alloy_version": alloy_version(),
            "kind": body["kind"],
            "obs_spec": {k: {"shape": list(v), "dtype": "float32"} for k, v in dict(policy.obs_spec).items()},
            "action": {"dim": int(policy.action_dim), "dtype": "float32"},
            **{k: v for k, v in body.items() if k != "kind"}, **extra}
    files = sorted(p for p in out.rglob("*") if p.is_file() and p != out / SPEC_FILE)
    spec["files"] = {p.relative_to(out).as_posix(): file_sha256(p) for p in files}
    spec["spec_sha256"] = spec_digest(spec)
    (out / SPEC_FILE).write_bytes(json.dumps(spec, indent=1).encode("utf-8"))
    return spec


def export_policy(policy, out: str | os.PathLike, formats: tuple[str, ...] = ("onnx",),
                  extra: dict[str, Any] | None = None) -> Path:
    """Export `policy` (a `Policy`, consistency student or `ResidualPolicy`) to the artifact directory `out`,
    written atomically. `extra` adds top-level entries to policy.json (e.g. the embodiment descriptor's layout)."""
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise PolicyError(f"unknown export format(s) {bad or formats}; choose from {', '.join(FORMATS)} or all")
    with atomic_dir(out) as tmp:
        _write(policy, Path(tmp), tuple(formats), dict(extra or {}))
    return Path(out)


def parity(policy, runtime, observations: list[dict[str, np.ndarray]],
           resets: dict[int, np.ndarray] | None = None) -> float:
    """Max |action difference| between the torch policy and the runtime over a sequence of observation batches,
    with the runtime's noise draws given to the torch policy draw for draw (both reset first; `resets[t]`, a mask,
    resets those envs of both before step t)."""
    draws: list[np.ndarray] = []
    for rt in _runtimes(runtime):
        original = rt._noise

        def recording(graph, batch, original=original):
            feeds = original(graph, batch)
            draws.extend(feeds[k] for k in sorted(feeds, key=lambda k: int(k.split("_")[1])))
            return feeds

        rt._noise = recording
    policy.reset()
    runtime.reset()
    worst = 0.0
    for t, obs in enumerate(observations):
        if resets and t in resets:
            policy.reset(resets[t])
            runtime.reset(resets[t])
        start = len(draws)
        a_rt = runtime.act(obs)
        with noise_source.given([torch.from_numpy(d) for d in draws[start:]]):
            a_t = policy.act(obs)
        worst = max(worst, float(np.abs(np.asarray(a_t) - a_rt).max()))
    for rt in _runtimes(runtime):
        del rt._noise  # back to the class's method
    return worst


def _runtimes(runtime) -> list:
    out = [runtime]
    while getattr(out[-1], "kind", None) == "residual":
        out.append(out[-1].base)
    return out
