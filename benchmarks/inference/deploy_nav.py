"""A trained policy in its deployment forms, timed side by side on one thread: torch eager, torch.compile, the
exported artifact in ONNX Runtime and its torch.export (pt2) programs; ms per executed action at batch 1 and 64,
parity with the torch policy, and the artifact's size. Run on an idle machine (the forms are timed round-robin).

    python benchmarks/inference/deploy_nav.py <checkpoint dir> [--env alloy/Nav-Holonomic-v0] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from alloy.benchmarks.deploy_forms import markdown, time_forms
from alloy.benchmarks.inference import _obs_batch
from policies import Policy


def variants(policy: Policy) -> dict[str, Policy]:
    """The checkpoint's denoiser (its trained weights) under the other fast schemes, for timing: chunk with DDIM and
    with EDM (10 steps), truncated (2 steps over 8 random anchors: timing does not depend on where they lie) and a
    one-step consistency student of the EDM chunk policy."""
    import dataclasses

    from distill.consistency import make_student
    from policies.config import DiffusionConfig, SchemeConfig

    spec, state = policy.spec, policy.state_dict()
    ta = spec.scheme.action_horizon

    def build(diffusion: DiffusionConfig, scheme: SchemeConfig) -> Policy:
        p = Policy(dataclasses.replace(spec, diffusion=diffusion, scheme=scheme))
        own = p.state_dict()
        p.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)
        return p.eval()

    out = {"chunk-ddim10": build(DiffusionConfig(name="ddim", num_inference_steps=10), SchemeConfig(action_horizon=ta)),
           "chunk-edm10": build(DiffusionConfig(name="edm", num_inference_steps=10), SchemeConfig(action_horizon=ta))}
    trunc = build(DiffusionConfig(name="ddim", num_inference_steps=10),
                  SchemeConfig(name="truncated", action_horizon=ta, num_anchors=8, trunc_steps=2))
    trunc.scheme.set_anchors(torch.randn(8, spec.net.pred_horizon, spec.action_dim) * 0.5)
    out["truncated-2"] = trunc
    out["consistency-1"] = make_student(out["chunk-edm10"], steps=1).eval()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--env", default="alloy/Nav-Holonomic-v0")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "deploy_nav")
    ap.add_argument("--window", type=int, default=40, help="executed actions per timed window")
    ap.add_argument("--repeats", type=int, default=10, help="windows per form and batch size (median reported)")
    ap.add_argument("--schemes", action="store_true", help="also the same denoiser under chunk (DDIM, EDM), "
                    "truncated and consistency")
    args = ap.parse_args()
    torch.set_num_threads(1)
    policy = Policy.from_pretrained(args.checkpoint, device="cpu").eval()
    obs1, obs64 = _obs_batch(args.env, 1, seed=0), _obs_batch(args.env, 64, seed=1)
    name = f"{policy.spec.net.name}-d{policy.spec.net.d_model}x{policy.spec.net.n_layers}-{policy.spec.scheme.name}"
    work = args.out / "artifacts"  # the exported forms (large: ignored by git)
    rows = time_forms(name, policy, obs1, obs64, work, args.window, args.repeats, warmup=4)
    art = work / name
    sizes = {p.name: p.stat().st_size for p in sorted(art.iterdir()) if p.is_file()}
    if args.schemes:
        for label, other in variants(policy).items():
            rows += time_forms(f"{name.rsplit('-', 1)[0]}-{label}", other, obs1, obs64, work, args.window,
                               args.repeats, warmup=4)
    result = {"checkpoint": str(args.checkpoint), "env": args.env, "rows": rows, "artifact_bytes": sizes,
              "onnx_bytes": sum(v for k, v in sizes.items() if k.endswith(".onnx")),
              "pt2_bytes": sum(v for k, v in sizes.items() if k.endswith(".pt2")),
              "torch": torch.__version__, "cpu_count": os.cpu_count(), "threads": 1,
              "note": "round-robin windows of every form; one thread; idle machine"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "deploy.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    md = "\n".join(markdown(rows)) + f"\n\nArtifact: ONNX {result['onnx_bytes'] / 1e6:.2f} MB, pt2 " \
                                     f"{result['pt2_bytes'] / 1e6:.2f} MB.\n"
    (args.out / "deploy.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
