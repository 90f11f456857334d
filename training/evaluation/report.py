"""The evaluation report: one dict, written as `report.json` (for scripts) and `report.md` (for people).

Schema (version 1; keys are only ever added, never renamed or removed — see docs/report_schema.md):

    schema_version        1
    partial               true when the run was interrupted: the report holds the finished episodes only
    overall               metric block over every episode
    per_env.<env id>      metric block per env id (task or embodiment)
    latency_ms.per_call   {p50, p90, p99, mean, count}: wall time of one batched policy `act` call, in ms
    latency_ms.per_action the same divided by the batch size (actions returned by the call)
    latency_ms.first_call the first call of each env id, in ms (warm-up; excluded from the percentiles)
    env_steps             env steps simulated in counted episodes
    env_steps_per_s       env_steps / rollout_s
    rollout_s             wall time of the rollout loops (env creation and report writing excluded)
    config                how the evaluation was run (policy, env ids, episodes, num_envs, seed, env kwargs, ...)
    versions              alloy, python, numpy, torch, gymnasium, mujoco, metaworld, platform
    episode_records       one record per episode: env_id, index, seed, success, reason, return, length,
                          steps_to_success, time_to_success, error
    files                 paths (relative to the run directory) of report.md, plots and videos

Metric block:

    episodes, successes, success_rate (null without episodes), success_ci [lo, hi] (95% Wilson),
    return_mean, return_std, length_mean (env steps),
    failure_reasons {collision, timeout, instability, exception, other}: counts over failed episodes,
    time_to_success_mean (simulated seconds to the first success, over successful episodes; null if none),
    steps_to_success_mean (env steps to the first success, over successful episodes; null if none)
"""

from __future__ import annotations

import math
import platform
import sys
from importlib import metadata
from pathlib import Path

from policies.atomic import atomic_write_json, atomic_write_text
from training.evaluation.metrics import EpisodeResult, percentiles, summarize

SCHEMA_VERSION = 1


def versions() -> dict:
    """Versions of what decides the outcome of a rollout."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name, dist in (
        ("alloy", "alloy-robotics"),
        ("numpy", "numpy"),
        ("torch", "torch"),
        ("gymnasium", "gymnasium"),
        ("mujoco", "mujoco"),
        ("metaworld", "metaworld"),
    ):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def build_report(
    results: list[EpisodeResult],
    env_ids: list[str],
    call_ms: list[float],
    action_ms: list[float],
    first_call_ms: list[float],
    env_steps: int,
    rollout_s: float,
    config: dict,
    partial: bool = False,
    files: dict | None = None,
) -> dict:
    """Assemble the report dict from finished episodes and the measured timings."""
    per_env = {env_id: summarize([r for r in results if r.env_id == env_id]) for env_id in env_ids}
    return {
        "schema_version": SCHEMA_VERSION,
        "partial": partial,
        "overall": summarize(results),
        "per_env": per_env,
        "latency_ms": {
            "per_call": percentiles(call_ms),
            "per_action": percentiles(action_ms),
            "first_call": list(first_call_ms),
        },
        "env_steps": int(env_steps),
        "env_steps_per_s": env_steps / rollout_s if rollout_s > 0 else None,
        "rollout_s": rollout_s,
        "config": config,
        "versions": versions(),
        "episode_records": [r.to_dict() for r in results],
        "files": files or {},
    }


def _clean(value):
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _num(value, fmt: str = "{:.3g}") -> str:
    return "-" if value is None else fmt.format(value)


def markdown(report: dict) -> str:
    """The report as a Markdown page: one table row per env id and one for all episodes."""
    cfg = report["config"]
    lines = [
        f"# Evaluation of `{cfg.get('policy', '?')}`" + (" (partial: interrupted)" if report["partial"] else ""),
        "",
        f"seed {cfg.get('seed')}, {cfg.get('episodes')} episodes per env, {cfg.get('num_envs')} envs"
        + (f", env kwargs `{cfg.get('env_kwargs')}`" if cfg.get("env_kwargs") else ""),
        "",
        "| env | episodes | success | 95% CI | return | length | time to success (s) | collision | timeout "
        "| instability | exception | other |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = list(report["per_env"].items()) + [("**overall**", report["overall"])]
    for name, m in rows:
        f = m["failure_reasons"]
        lo, hi = m["success_ci"]
        lines.append(
            f"| {name} | {m['episodes']} | {_num(m['success_rate'], '{:.1%}')} | [{lo:.2f}, {hi:.2f}] "
            f"| {_num(m['return_mean'])} | {_num(m['length_mean'], '{:.1f}')} | {_num(m['time_to_success_mean'])} "
            f"| {f['collision']} | {f['timeout']} | {f['instability']} | {f['exception']} | {f['other']} |"
        )
    call, act = report["latency_ms"]["per_call"], report["latency_ms"]["per_action"]
    lines += [
        "",
        f"Policy latency per act call: p50 {_num(call['p50'])} ms, p90 {_num(call['p90'])} ms, "
        f"p99 {_num(call['p99'])} ms ({call['count']} calls); per action: p50 {_num(act['p50'])} ms, "
        f"p90 {_num(act['p90'])} ms, p99 {_num(act['p99'])} ms.",
        f"Env steps per second: {_num(report['env_steps_per_s'], '{:.0f}')} ({report['env_steps']} steps in "
        f"{report['rollout_s']:.1f} s).",
    ]
    files = report.get("files", {})
    for key in ("success_plot", "latency_plot"):
        if key in files:
            lines += ["", f"![{key}]({files[key]})"]
    for video in files.get("videos", []):
        lines += ["", f"Video: [{video}]({video})"]
    return "\n".join(lines) + "\n"


def write_report(report: dict, run_dir: str | Path, call_ms: list[float] | None = None) -> dict:
    """Write report.json, report.md and the plots into `run_dir`; returns the report with `files` filled in.

    The numbers are written before the plots, so that a second Ctrl-C or a plotting problem never loses them.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    files = dict(report.get("files", {}))
    files["report_md"] = "report.md"
    report = {**report, "files": files}
    atomic_write_json(run_dir / "report.json", _clean(report))
    atomic_write_text(run_dir / "report.md", markdown(report))
    try:
        from training.evaluation.plots import plot_latency, plot_success

        plot_success(report, run_dir / "success.png")
        files["success_plot"] = "success.png"
        plot_latency(call_ms or [], run_dir / "latency.png")
        files["latency_plot"] = "latency.png"
    except Exception as e:  # noqa: BLE001 - plots are a convenience: never lose the numbers because a plot failed
        files["plot_error"] = f"{type(e).__name__}: {e}"
    report = {**report, "files": files}
    atomic_write_json(run_dir / "report.json", _clean(report))
    atomic_write_text(run_dir / "report.md", markdown(report))
    return report
