"""Metrics and intervals on synthetic outcomes, the report files, and episode seeding."""

from __future__ import annotations

import json
import math

import pytest

from training.evaluation import EpisodeResult, episode_seed, summarize, wilson_interval
from training.evaluation.metrics import percentiles
from training.evaluation.report import build_report, markdown, write_report


def ep(i, success, reason="", ret=1.0, length=10, steps=None, t=None, env="a"):
    return EpisodeResult(env_id=env, index=i, seed=i, success=success, reason=reason, ret=ret, length=length,
                         steps_to_success=steps, time_to_success=t)


@pytest.mark.parametrize("k,n,lo,hi", [
    (0, 10, 0.0, 0.2775328),     # upper bound z^2 / (n + z^2)
    (10, 10, 0.7224672, 1.0),
    (5, 10, 0.2365931, 0.7634069),
    (1, 20, 0.0088814, 0.2361311),
])
def test_wilson_interval_matches_reference_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-6)


def test_wilson_bounds_solve_the_score_test_equation():
    """Independent definition: the bounds are the p with (k/n - p)^2 = z^2 p (1 - p) / n."""
    z = 1.959963984540054
    for k, n in [(1, 20), (7, 9), (33, 40), (2, 3)]:
        for p in wilson_interval(k, n):
            assert (k / n - p) ** 2 == pytest.approx(z * z * p * (1 - p) / n, abs=1e-12)


def test_wilson_interval_properties():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for n in (1, 3, 50, 1000):
        for k in range(0, n + 1, max(1, n // 7)):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0
    width = [wilson_interval(k, n)[1] - wilson_interval(k, n)[0] for k, n in ((50, 100), (500, 1000))]
    assert width[0] > width[1]


def test_summarize_counts_reasons_and_averages_success_times_over_successes_only():
    results = [
        ep(0, True, ret=3.0, length=4, steps=4, t=0.2),
        ep(1, True, ret=5.0, length=8, steps=8, t=0.6),
        ep(2, False, "collision", ret=-1.0, length=2),
        ep(3, False, "timeout", ret=0.0, length=20),
        ep(4, False, "timeout", ret=0.0, length=20),
        ep(5, False, "instability", ret=0.0, length=6),
        ep(6, False, "exception", ret=0.0, length=0),
    ]
    m = summarize(results)
    assert m["episodes"] == 7 and m["successes"] == 2
    assert m["success_rate"] == pytest.approx(2 / 7)
    assert m["success_ci"] == pytest.approx(list(wilson_interval(2, 7)))
    assert m["failure_reasons"] == {"collision": 1, "timeout": 2, "instability": 1, "exception": 1, "other": 0}
    assert m["return_mean"] == pytest.approx(1.0)
    assert m["length_mean"] == pytest.approx(60 / 7)
    assert m["time_to_success_mean"] == pytest.approx(0.4)
    assert m["steps_to_success_mean"] == pytest.approx(6.0)
    empty = summarize([])
    assert empty["success_rate"] is None and empty["success_ci"] == [0.0, 1.0] and empty["time_to_success_mean"] is None


def test_percentiles():
    p = percentiles([float(i) for i in range(1, 101)])
    assert p["p50"] == pytest.approx(50.5) and p["p90"] == pytest.approx(90.1) and p["p99"] == pytest.approx(99.01)
    assert p["count"] == 100 and percentiles([])["p50"] is None


def test_episode_seeds_are_stable_distinct_and_depend_on_the_run_seed():
    seeds = [episode_seed(0, i) for i in range(1000)]
    assert seeds == [episode_seed(0, i) for i in range(1000)]
    assert len(set(seeds)) == 1000
    assert seeds[:10] != [episode_seed(1, i) for i in range(10)]
    assert all(0 <= s < 2**32 for s in seeds) and episode_seed(-5, 0) >= 0


def test_report_files_have_the_documented_keys_and_no_nan(tmp_path):
    results = [ep(0, True, steps=3, t=float("nan"), env="a"), ep(1, False, "timeout", env="b")]
    report = build_report(results, ["a", "b"], [1.0, 2.0, 3.0], [0.5, 1.0, 1.5], [40.0], 13, 0.5,
                          {"policy": "p", "seed": 0, "episodes": 1, "num_envs": 1}, partial=False)
    write_report(report, tmp_path, [1.0, 2.0, 3.0])
    text = (tmp_path / "report.json").read_text()
    assert "NaN" not in text
    on_disk = json.loads(text)
    for key in ("success_rate", "success_ci", "episodes", "return_mean", "length_mean", "failure_reasons",
                "time_to_success_mean"):
        assert key in on_disk["overall"] and key in on_disk["per_env"]["a"]
    assert on_disk["per_env"]["b"]["success_rate"] == 0.0
    assert set(on_disk["latency_ms"]) >= {"per_call", "per_action"}
    assert set(on_disk["latency_ms"]["per_call"]) >= {"p50", "p90", "p99"}
    assert on_disk["env_steps_per_s"] == pytest.approx(26.0)
    assert on_disk["config"]["policy"] == "p" and on_disk["versions"]["numpy"]
    assert on_disk["files"]["success_plot"] == "success.png" and (tmp_path / "success.png").is_file()
    md = markdown(on_disk)
    assert "| a | 1 | 100.0% |" in md and "| b | 1 | 0.0% |" in md and "**overall**" in md
    assert math.isclose(on_disk["overall"]["success_rate"], 0.5)
