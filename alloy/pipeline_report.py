"""The pipeline's report: what every stage measured, in one table, plots, `report.md` and a self-contained
`report.html` (images embedded, videos beside it and linked).

Everything here is read from the stages' own outputs (`report.json` of evaluations, `rl.json` of RL runs, the
distillation's `report.json`, the export's `export.json`); nothing is measured again.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

POLICIES = (("base", "imitation base"), ("planner", "planner, path heading"), ("specialist", "specialist"),
            ("generalist", "generalist"), ("artifact", "exported generalist"))


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _fan_out(stage_dir: Path) -> dict[str, dict]:
    """env id -> per-env metrics from every job of an evaluation multirun."""
    out: dict[str, dict] = {}
    for report in sorted(stage_dir.glob("*/report.json")):
        out.update(_read(report).get("per_env", {}))
    return out


def collect_table(cfg, stages: dict, record: dict) -> tuple[dict, dict]:
    from envs.nav.embodiments import env_id_for as env_of

    robots = [env_of(r) for r in cfg.robots]
    table: dict[str, dict[str, Any]] = {r: {} for r in robots}
    extras: dict[str, Any] = {}
    for stage, column in (("eval_base", "base"), ("eval_planner", "planner"), ("eval_artifact", "artifact")):
        if stage in record:
            for env, m in _fan_out(stages[stage].dir).items():
                if env in table:
                    table[env][column] = m
    if "rl" in record:
        curves = {}
        for robot in cfg.rl_robots:
            rl = _read(stages["rl"].dir / robot / "rl.json")
            final = _read(stages["rl"].dir / robot / "final_eval" / "report.json")
            env = env_of(robot)
            if final.get("per_env", {}).get(env):
                table[env]["specialist"] = final["per_env"][env]
            curves[robot] = rl.get("evals", [])
            extras.setdefault("rl", {})[robot] = {k: rl.get(k) for k in ("env_steps", "train_wall_s", "best")}
        extras["rl_curves"] = curves
        if env_of(cfg.base_robot) in table and "base" in table[env_of(cfg.base_robot)]:
            table[env_of(cfg.base_robot)].setdefault("specialist", table[env_of(cfg.base_robot)]["base"])
    if "distill" in record:
        d = _read(stages["distill"].dir / "report.json")
        for env, row in d.get("robots", {}).items():
            if env in table and row.get("generalist"):
                table[env]["generalist"] = row["generalist"]
        extras["variants"] = d.get("variants", [])
        extras["distill"] = {k: d.get(k) for k in ("method", "student", "objective", "rounds")}
    if "export" in record:
        extras["export"] = _read(stages["export"].dir / "export.json")
    return table, extras


def _cell(m: dict | None) -> str:
    if not m or m.get("success_rate") is None:
        return "-"
    lo, hi = m["success_ci"]
    t = m.get("time_to_success_mean")
    return f"{m['success_rate']:.0%} [{lo:.2f}, {hi:.2f}]" + (f", {t:.1f} s" if t is not None else "")


def _plots(run_dir: Path, table: dict, extras: dict) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out: dict[str, Path] = {}
    robots = list(table)
    cols = [(k, label) for k, label in POLICIES if any(k in row for row in table.values())]
    if cols:
        fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=120)
        width = 0.8 / len(cols)
        x = np.arange(len(robots))
        for j, (k, label) in enumerate(cols):
            vals = [table[r].get(k, {}).get("success_rate") or 0.0 for r in robots]
            lo = [v - (table[r].get(k, {}).get("success_ci") or [v, v])[0] for v, r in zip(vals, robots)]
            hi = [(table[r].get(k, {}).get("success_ci") or [v, v])[1] - v for v, r in zip(vals, robots)]
            ax.bar(x + (j - (len(cols) - 1) / 2) * width, vals, width, yerr=[lo, hi], capsize=2, label=label)
        ax.set_xticks(x, [r.split("/")[-1].replace("Nav-", "").replace("-v0", "") for r in robots])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("success rate (95% CI)")
        ax.legend(fontsize=7, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
        fig.tight_layout()
        out["success"] = run_dir / "success.png"
        fig.savefig(out["success"])
        plt.close(fig)
    curves = extras.get("rl_curves") or {}
    if any(curves.values()):
        from training.rl.train import learning_curve_plot

        out["rl_curves"] = learning_curve_plot(curves, run_dir / "rl_curves.png", "residual RL: success vs env steps")
    return out


def write_report(cfg, run_dir: Path, stages: dict, record: dict) -> dict:
    from policies.atomic import atomic_write_json, atomic_write_text

    table, extras = collect_table(cfg, stages, record)
    cols = [(k, label) for k, label in POLICIES if any(k in row for row in table.values())]
    lines = ["# alloy pipeline", "",
             "Success with 95% Wilson interval and mean time to goal over successful episodes, per robot "
             f"({cfg.eval_episodes} episodes per cell unless a stage says otherwise).", ""]
    if cols:
        lines += ["| robot | " + " | ".join(label for _, label in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for robot, row in table.items():
            lines.append(f"| {robot} | " + " | ".join(_cell(row.get(k)) for k, _ in cols) + " |")
        means = {label: [row[k]["success_rate"] for row in table.values() if row.get(k)] for k, label in cols}
        lines += ["", "Mean over the robots: " + ", ".join(f"{label} {sum(v) / len(v):.0%}" for label, v in
                                                         means.items() if v)]
    variants = extras.get("variants") or []
    if variants:
        lines += ["", "## Robot variants (generalist)", "", "| variant | robot | parameters | in training ranges | "
                  "generalist |", "|---|---|---|---|---|"]
        for v in variants:
            lines.append(f"| {v['name']} | {v['env']} | {v['kwargs']} | {'yes' if v['in_range'] else 'no'} | "
                         f"{_cell(v.get('generalist'))} |")
    if extras.get("rl"):
        lines += ["", "## Residual RL", "", "| robot | env steps | wall s | best periodic eval |", "|---|---|---|---|"]
        for robot, r in extras["rl"].items():
            best = r.get("best") or {}
            wall = r.get("train_wall_s")
            lines.append(f"| {robot} | {r.get('env_steps')} | {wall:.0f} | "
                         f"{best.get('success_rate', float('nan')):.0%} at {best.get('step', '-')} |"
                         if wall is not None else f"| {robot} | {r.get('env_steps')} | - | - |")
    if extras.get("export"):
        e = extras["export"]
        diffs = {k[len("max_abs_action_diff_"):]: v for k, v in e.items() if k.startswith("max_abs_action_diff_")}
        lines += ["", "## Export", "", f"artifact `{e.get('artifact')}` ({', '.join(e.get('formats', []))}); "
                  "max |torch - artifact| action difference on the same noise: "
                  + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items())]
    lines += ["", "## Stages", "", "| stage | key | cached | seconds |", "|---|---|---|---|"]
    for name, r in record.items():
        s = r.get("seconds")
        lines.append(f"| {name} | {r['key']} | {'yes' if r['cached'] else 'no'} | "
                     f"{'-' if s is None or (isinstance(s, float) and math.isnan(s)) else f'{s:.0f}'} |")
    plots = _plots(run_dir, table, extras)
    md = "\n".join(lines) + "\n"
    for name, path in plots.items():
        md += f"\n![{name}]({path.name})\n"
    atomic_write_text(run_dir / "report.md", md)
    atomic_write_text(run_dir / "report.html", _html(lines, plots, run_dir))
    report = {"robots": table, **{k: v for k, v in extras.items() if k != "rl_curves"}, "stages": record}
    atomic_write_json(run_dir / "report.json", json.loads(json.dumps(report, default=float)))
    return report


def _html(lines: list[str], plots: dict[str, Path], run_dir: Path) -> str:
    """The markdown report as one HTML page: tables as tables, images inlined, videos linked."""
    body, table_open = [], False
    for line in lines:
        if line.startswith("|") and set(line.replace("|", "").strip()) <= set("-: "):
            continue  # the markdown separator row
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            tag = "th" if not table_open else "td"
            if not table_open:
                body.append("<table>")
                table_open = True
            body.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if table_open:
            body.append("</table>")
            table_open = False
        if line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if table_open:
        body.append("</table>")
    for name, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        body.append(f'<h2>{html.escape(name)}</h2><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
    videos = sorted(p for p in run_dir.glob("*/**/*.mp4"))
    if videos:
        body.append("<h2>Videos</h2><ul>" + "".join(
            f'<li><a href="{html.escape(str(v.relative_to(run_dir)))}">{html.escape(str(v.relative_to(run_dir)))}</a></li>'
            for v in videos) + "</ul>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>alloy pipeline</title><style>{style}</style>" \
           f"</head><body>{''.join(body)}</body></html>\n"
