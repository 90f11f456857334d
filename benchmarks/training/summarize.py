"""Gather training runs and evaluations into one JSON table (overall and per-env success, wall time, samples/s).

    python benchmarks/training/summarize.py --out benchmarks/training/mt50.json \
        mode=runs/mt50_mode mlp=runs/mt50_mlp mode_ta1=runs/mt50_mode_eval_ta1

`--update` keeps the rows already in the table (runs measured in an earlier session) and adds the named ones.

Each NAME=DIR is a training run directory (metrics.json, evals/step_<N>.json, checkpoints/last/config.yaml) or an
`alloy eval` directory (report.json). Nothing is recomputed: the figures are the ones the runs wrote.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml


def _policy_summary(run: Path) -> dict:
    config = run / "checkpoints" / "last" / "config.yaml"
    if not config.is_file():
        return {}
    policy = (yaml.safe_load(config.read_text()) or {}).get("policy") or {}
    net, scheme = policy.get("net") or {}, policy.get("scheme") or {}
    return {"net": net.get("name"), "diffusion": (policy.get("diffusion") or {}).get("name"),
            "d_model": net.get("d_model"), "n_layers": net.get("n_layers"), "obs_horizon": net.get("obs_horizon"),
            "pred_horizon": net.get("pred_horizon"), "action_horizon": scheme.get("action_horizon")}


def _evaluation(report: dict) -> dict:
    return {"success_rate": report["overall"]["success_rate"], "episodes": report["overall"]["episodes"],
            "per_env": {k: v["success_rate"] for k, v in sorted(report["per_env"].items())}}


def summarize_run(path: Path) -> dict:
    if (path / "report.json").is_file():  # an `alloy eval` directory
        report = json.loads((path / "report.json").read_text())
        return {"kind": "eval", "dir": str(path), "config": {k: report["config"].get(k) for k in
                ("policy", "episodes", "seed", "action_horizon", "inference_steps")}, "eval": _evaluation(report)}
    metrics_file = path / "metrics.json"
    if not metrics_file.is_file():
        raise SystemExit(f"{path} holds neither metrics.json (a training run) nor report.json (an alloy eval run)")
    metrics = json.loads(metrics_file.read_text())
    evals = {}
    for f in sorted((path / "evals").glob("step_*.json")):
        report = json.loads(f.read_text())
        evals[str(report["step"])] = _evaluation(report)
    return {"kind": "train", "dir": str(path), "policy": _policy_summary(path), "steps": metrics["step"],
            "samples_seen": metrics["samples_seen"], "train_wall_s": round(metrics["train_wall_s"], 1),
            "samples_per_s": round(metrics["samples_per_s"], 1), "device": metrics["device"], "evals": evals}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=DIR")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--update", action="store_true",
                        help="keep the rows already in --out and add (or replace) the named ones")
    args = parser.parse_args(argv)
    out = Path(args.out)
    table = json.loads(out.read_text()) if args.update and out.is_file() else {}
    for item in args.runs:
        name, sep, directory = item.partition("=")
        if not sep or not name or not directory:
            print(f"error: {item!r} is not NAME=DIR", file=sys.stderr)
            return 2
        table[name] = summarize_run(Path(directory))
    from policies.atomic import atomic_write_json

    atomic_write_json(out, table)
    for name, row in table.items():
        rates = ({s: e["success_rate"] for s, e in row["evals"].items()} if row["kind"] == "train"
                 else {"eval": row["eval"]["success_rate"]})
        print(f"{name:<16} {rates}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
