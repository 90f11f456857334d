"""PNG plots of a report: success per env with its 95% interval, and the policy latency distribution."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | Path) -> Path:
    """The figure as a PNG at `path`, written atomically (a reader never sees half an image)."""
    from policies.atomic import atomic_write_bytes

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _short(text: str, width: int = 48) -> str:
    """A long checkpoint path cut to its last parts (the run and checkpoint names say which policy it is)."""
    if len(text) <= width:
        return text
    parts = Path(text).parts
    for k in range(len(parts) - 1, 0, -1):
        tail = "/".join(parts[-k:])
        if len(tail) + 4 <= width:
            return ".../" + tail
    return "..." + text[-(width - 3):]


def success_title(report: dict) -> str:
    """Which policy on which env(s), over how many episodes: the plot names what it shows."""
    cfg = report.get("config", {})
    env_ids = list(cfg.get("env_ids") or report.get("per_env", {}))
    env = cfg.get("env") or (", ".join(env_ids[:3]) + (f" +{len(env_ids) - 3} more" if len(env_ids) > 3 else ""))
    return f"{_short(str(cfg.get('policy', '?')))} on {_short(str(env))}: {report['overall']['episodes']} episodes"


def plot_success(report: dict, path: str | Path) -> Path:
    """Bars of success rate per env id with Wilson 95% intervals as error bars, overall last."""
    plt = _pyplot()
    rows = [(k, v) for k, v in report["per_env"].items()] + [("overall", report["overall"])]
    names = [k for k, _ in rows]
    rates = np.array([v["success_rate"] if v["success_rate"] is not None else 0.0 for _, v in rows])
    lo = np.array([v["success_ci"][0] for _, v in rows])
    hi = np.array([v["success_ci"][1] for _, v in rows])
    err = np.vstack([np.clip(rates - lo, 0, None), np.clip(hi - rates, 0, None)])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(rows) + 2), 3.6))
    colors = ["tab:blue"] * (len(rows) - 1) + ["tab:gray"]
    ax.bar(range(len(rows)), rates, yerr=err, capsize=3, color=colors)
    ax.set_xticks(range(len(rows)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% Wilson CI)")
    ax.set_title(success_title(report), fontsize=9)
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_latency(call_ms: list[float], path: str | Path) -> Path:
    """Histogram of the time of each policy `act` call, with p50/p90/p99 marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    if call_ms:
        a = np.asarray(call_ms)
        ax.hist(a, bins=min(50, max(5, a.size // 5)), color="tab:blue")
        for q, style in ((50, "-"), (90, "--"), (99, ":")):
            ax.axvline(np.percentile(a, q), color="k", linestyle=style, label=f"p{q} {np.percentile(a, q):.2f} ms")
        ax.legend(fontsize=8)
    ax.set_xlabel("policy act call (ms)")
    ax.set_ylabel("calls")
    fig.tight_layout()
    return _save(plt, fig, path)
