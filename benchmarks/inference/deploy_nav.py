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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--env", default="alloy/Nav-Holonomic-v0")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "deploy_nav")
    ap.add_argument("--window", type=int, default=40, help="executed actions per timed window")
    ap.add_argument("--repeats", type=int, default=10, help="windows per form and batch size (median reported)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    policy = Policy.from_pretrained(args.checkpoint, device="cpu").eval()
    obs1, obs64 = _obs_batch(args.env, 1, seed=0), _obs_batch(args.env, 64, seed=1)
    name = f"{policy.spec.net.name}-d{policy.spec.net.d_model}x{policy.spec.net.n_layers}-{policy.spec.scheme.name}"
    work = args.out / "artifacts"
    rows = time_forms(name, policy, obs1, obs64, work, args.window, args.repeats, warmup=4)
    art = work / name
    sizes = {p.name: p.stat().st_size for p in sorted(art.iterdir()) if p.is_file()}
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
