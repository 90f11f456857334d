"""Summarise the residual-RL benchmark (benchmarks/rl/run.sh): one JSON and one markdown table of every run's final
evaluation (200 episodes on seeds the best-checkpoint selection never saw), its wall time and env steps, and one PNG
per robot with the learning curves of every run on it (residual PPO, PPO from scratch, residual SAC).

    python benchmarks/rl/summarize.py <rl runs dir> [--out benchmarks/rl]
        [--previous benchmarks/rl/<earlier>/results.json:<run>[,<run>...]]   # earlier runs' rows and curves beside
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training.rl.train import learning_curve_plot


def label(run: dict) -> str:
    base = "scratch (no base)" if run["base"] in (None, "none", "") else "residual"
    return f"{run['algo'].upper()} {base}"


def unfinished(run_dir: Path) -> dict | None:
    """A run stopped before its end (no rl.json): its periodic evaluations and config, no final evaluation."""
    import yaml

    evals = sorted(run_dir.glob("evals/step_*.json"), key=lambda p: int(p.stem.split("_")[1]))
    config = run_dir / ".hydra" / "config.yaml"
    if not evals or not config.is_file():
        return None
    cfg = yaml.safe_load(config.read_text())
    hist = []
    for p in evals:
        d = json.loads(p.read_text())
        o = d["overall"]
        hist.append({"step": d["step"], "success_rate": o["success_rate"], "ci_low": o["success_ci"][0],
                     "ci_high": o["success_ci"][1]})
    best = max(hist, key=lambda h: h["success_rate"])
    return {"env": cfg["env"], "algo": cfg["algo"], "base": cfg["base"], "env_steps": hist[-1]["step"],
            "train_wall_s": float("nan"), "best": best, "evals": hist, "final_eval": None, "stopped": True}


def previous_runs(spec: str) -> dict[str, dict]:
    """Runs of an earlier summary (`<results.json>:<run>,<run>`), in the form `main` reads from run directories,
    so that a new run is plotted and tabled beside an earlier one whose run directory is gone."""
    path, _, names = spec.rpartition(":")
    if not path:
        raise SystemExit(f"error: --previous {spec!r}: expected <results.json>:<run>[,<run>...]")
    rows = {r["run"]: r for r in json.loads(Path(path).read_text())["runs"]}
    out = {}
    for name in names.split(","):
        if name not in rows:
            raise SystemExit(f"error: --previous: no run {name!r} in {path}; it has {', '.join(sorted(rows))}")
        r = rows[name]
        final = None if r["final_ci"] is None else {
            "success_rate": r["final_success"], "success_ci": r["final_ci"], "episodes": r["final_episodes"],
            "failure_reasons": r["failures"]}
        best = {"step": r["best_step"], "success_rate": r["best_eval_success_50"]}
        out[f"{name} (earlier: {Path(path).parent.name})"] = {
            "env": r["env"], "algo": r["algo"], "base": r["base"], "env_steps": r["env_steps"],
            "train_wall_s": r["train_wall_s"], "best": best, "evals": r["evals"], "final_eval": final,
            "stopped": r["stopped_before_end"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    ap.add_argument("--previous", action="append", default=[], metavar="RESULTS_JSON:RUN[,RUN]",
                    help="an earlier summary's runs to show beside these (repeatable)")
    args = ap.parse_args()
    runs = {}
    for path in sorted(args.runs.glob("*/rl.json")):
        runs[path.parent.name] = json.loads(path.read_text())
    for run_dir in sorted(p for p in args.runs.iterdir() if p.is_dir() and p.name not in runs):
        partial = unfinished(run_dir)
        if partial is not None:
            runs[run_dir.name] = partial
    for spec in args.previous:
        runs.update(previous_runs(spec))
    if not runs:
        raise SystemExit(f"error: no */rl.json under {args.runs}; run benchmarks/rl/run.sh first")
    rows, by_env = [], {}
    for name, run in runs.items():
        final = run.get("final_eval") or {}
        rows.append({
            "run": name, "env": run["env"], "algo": run["algo"], "base": run["base"], "env_steps": run["env_steps"],
            "train_wall_s": round(run["train_wall_s"], 1), "best_step": (run.get("best") or {}).get("step"),
            "best_eval_success_50": (run.get("best") or {}).get("success_rate"),
            "final_success": final.get("success_rate"), "final_ci": final.get("success_ci"),
            "final_episodes": final.get("episodes"), "failures": final.get("failure_reasons"),
            "evals": [{k: e[k] for k in ("step", "success_rate", "ci_low", "ci_high")} for e in run["evals"]],
            "stopped_before_end": bool(run.get("stopped")),
        })
        by_env.setdefault(run["env"], {})[f"{label(run)} ({name})"] = run["evals"]
    args.out.mkdir(parents=True, exist_ok=True)
    plots = {}
    for env, hists in by_env.items():
        robot = env.split("-")[1].lower()
        out = learning_curve_plot(hists, args.out / f"curves_{robot}.png", f"{env}: success vs env steps (50 eps)")
        plots[env] = out.name if out else None
    (args.out / "results.json").write_text(json.dumps({"runs": rows, "plots": plots}, indent=2, sort_keys=True) + "\n")
    lines = ["| run | env | algo | base | env steps | wall (s) | best step (its eval) | final success (200 eps) [95% CI] | "
             "failures |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = r["final_ci"]
        final = f"{100 * r['final_success']:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else \
            "stopped early: no final eval"
        fails = ", ".join(f"{k} {v}" for k, v in (r["failures"] or {}).items() if v) or "-"
        base = "none" if r["base"] in (None, "none", "") else Path(r["base"]).name
        lines.append(f"| {r['run']} | {r['env']} | {r['algo']} | {base} | {r['env_steps']} | {r['train_wall_s']:.0f} | "
                     f"{r['best_step']} ({100 * r['best_eval_success_50']:.0f}% of 50) | {final} | {fails} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
