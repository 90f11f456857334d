"""Episode outcomes and the statistics the report is made of.

Success rates come with a 95% Wilson score interval: unlike the normal approximation it stays inside [0, 1] and
is honest for the small episode counts and rates near 0 or 1 that policy evaluations usually have.
"""

from __future__ import annotations

import math

import numpy as np

from training.rollout.episode import FAILURE_REASONS, EpisodeResult

Z_95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion; [0, 1] when there is no episode."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no 1e-17 from rounding
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def summarize(results: list[EpisodeResult]) -> dict:
    """The metric block of the report for a set of episodes (one env id, or all of them)."""
    n = len(results)
    successes = sum(r.success for r in results)
    lo, hi = wilson_interval(successes, n)
    reasons = {k: 0 for k in FAILURE_REASONS}
    for r in results:
        if not r.success:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
    won = [r for r in results if r.success]
    return {
        "episodes": n,
        "successes": successes,
        "success_rate": successes / n if n else None,
        "success_ci": [lo, hi],
        "return_mean": _mean(r.ret for r in results),
        "return_std": float(np.std([r.ret for r in results])) if n else None,
        "length_mean": _mean(r.length for r in results),
        "failure_reasons": reasons,
        "time_to_success_mean": _mean(r.time_to_success for r in won),
        "steps_to_success_mean": _mean(r.steps_to_success for r in won),
    }


def percentiles(values_ms: list[float]) -> dict:
    """p50/p90/p99, mean and count of latencies in milliseconds (None when nothing was measured)."""
    if not values_ms:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "count": 0}
    a = np.asarray(values_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(a.mean()), "count": int(a.size)}
