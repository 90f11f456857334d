"""Wall time of `alloy collect` in two source trees, side by side (round-robin), on the same machine.

    python benchmarks/collect/time_collect.py --before /path/to/older/checkout --rounds 3 --out benchmarks/collect/nav200.json

Each round runs the same collection once per tree (alternating which goes first), each in a fresh process with
its own empty data directory, so drift of a shared machine lands on both columns. Run it on an otherwise idle
machine: timings must not share the cores with other work.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]


def once(tree: Path, args: list[str]) -> float:
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "ALLOY_DATA_DIR": d, "PYTHONPATH": str(tree), "MUJOCO_GL": "osmesa"}
        cmd = [sys.executable, "-m", "alloy.cli", "collect", *args, f"hydra.run.dir={d}/run", "progress=false"]
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(f"collect failed in {tree}:\n{r.stderr[-2000:]}")
        return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True, type=Path, help="source tree of the earlier version")
    p.add_argument("--after", default=HERE, type=Path, help="source tree of this version (default: this one)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path)
    p.add_argument("overrides", nargs="*", default=["suite=nav", "embodiment=holonomic", "episodes=200"])
    a = p.parse_args()
    times: dict[str, list[float]] = {"before": [], "after": []}
    for r in range(a.rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for name in order:
            times[name].append(once(getattr(a, name), a.overrides))
            print(f"round {r}: {name} {times[name][-1]:.2f} s", flush=True)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    result = {"command": "alloy collect " + " ".join(a.overrides), "rounds": a.rounds, "wall_s": times,
              "median_s": med, "after_over_before": med["after"] / med["before"], "cores": os.cpu_count(),
              "before_tree": str(a.before), "note": "round-robin, fresh process and data dir per run"}
    print(json.dumps(result, indent=1))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
