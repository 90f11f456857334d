"""The same trained policy in its deployment forms, timed side by side: torch eager, `torch.compile`, the exported
artifact in ONNX Runtime (one intra-op thread) and the artifact's `torch.export` programs (pt2).

Each form gets the same observations; ms per executed action at batch 1 (median over windows) and batch 64 are
measured round-robin (one window of every form per round) so that a machine's drift lands on every form alike.
The artifact's parity with the torch policy (same noise, `policies.export.parity`) is reported beside it.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger("alloy.bench.inference")

FORMS = ("torch eager", "torch.compile", "onnxruntime 1 thread", "pt2")


def _window(policy, obs: dict, window: int, warmup: int) -> float:
    policy.reset()
    for _ in range(warmup):
        policy.act(obs)
    t0 = time.perf_counter()
    for _ in range(window):
        policy.act(obs)
    return (time.perf_counter() - t0) * 1e3 / window


def compiled(policy):
    """A copy of the policy whose denoiser and encoder run through `torch.compile` (dynamic batch)."""
    p = copy.deepcopy(policy).eval()
    p.net.denoise = torch.compile(p.net.denoise, dynamic=True)
    p.net.encode = torch.compile(p.net.encode, dynamic=True)
    return p


def time_forms(name: str, policy, obs1: dict, obs64: dict, out_dir: Path, window: int, repeats: int,
               warmup: int) -> list[dict[str, Any]]:
    """Rows of every deployment form of `policy` (a `Policy`): ms/action at batch 1 and 64, parity, notes."""
    from policies.export import export_policy, parity
    from policies.interface import observation_for
    from policies.runtime import Runtime

    obs1, obs64 = observation_for(policy, obs1), observation_for(policy, obs64)
    artifact = export_policy(policy, out_dir / name, formats=("onnx", "pt2"))
    forms: dict[str, Any] = {"torch eager": policy}
    notes: dict[str, str] = {}
    try:
        forms["torch.compile"] = compiled(policy)
        forms["torch.compile"].act(obs1)  # compile now, not inside a timed window
        forms["torch.compile"].act(obs64)
    except Exception as e:  # noqa: BLE001 - compilation needs a C++ toolchain; the other forms still count
        forms.pop("torch.compile", None)
        notes["torch.compile"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    forms["onnxruntime 1 thread"] = Runtime(artifact, seed=0, threads=1)
    forms["pt2"] = Runtime(artifact, seed=0, backend="pt2")
    times: dict[str, dict[str, list[float]]] = {f: {"b1": [], "b64": []} for f in forms}
    torch.set_num_threads(1)
    for _ in range(repeats):
        for batch, obs in (("b1", obs1), ("b64", obs64)):
            for form, p in forms.items():
                times[form][batch].append(_window(p, obs, window, warmup))
    diffs = {"onnxruntime 1 thread": parity(policy, Runtime(artifact, seed=1), [obs1] * 8),
             "pt2": parity(policy, Runtime(artifact, seed=1, backend="pt2"), [obs1] * 8)}
    eager = float(np.median(times["torch eager"]["b1"]))
    rows = []
    for form in FORMS:
        if form not in forms:
            rows.append({"policy": name, "form": form, "note": notes.get(form, "not available")})
            continue
        b1, b64 = float(np.median(times[form]["b1"])), float(np.median(times[form]["b64"]))
        rows.append({"policy": name, "form": form, "ms_per_action_b1": b1, "ms_per_action_b64": b64,
                     "speedup_b1_vs_eager": eager / b1, "max_abs_action_diff": diffs.get(form, 0.0 if
                                                                                        form == "torch eager" else None)})
        log.info("%s %s: %.3f ms/action b1, %.3f b64", name, form, b1, b64)
    return rows


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["", "## Deployment forms (1 thread)", "",
             "| policy | form | ms/action b1 | ms/action b64 | vs eager b1 | max abs action diff |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "ms_per_action_b1" not in r:
            lines.append(f"| {r['policy']} | {r['form']} | - | - | - | {r.get('note', '')} |")
            continue
        diff = r.get("max_abs_action_diff")
        lines.append(f"| {r['policy']} | {r['form']} | {r['ms_per_action_b1']:.3f} | {r['ms_per_action_b64']:.3f} | "
                     f"{r['speedup_b1_vs_eager']:.2f}x | {'-' if diff is None else f'{diff:.1e}'} |")
    return lines
