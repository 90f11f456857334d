"""benchmarks/training/summarize.py: the table is built from what the runs wrote, and bad arguments fail clearly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("summarize", ROOT / "benchmarks/training/summarize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(rate, per_env):
    return {"overall": {"success_rate": rate, "episodes": 2 * len(per_env)},
            "per_env": {k: {"success_rate": v} for k, v in per_env.items()},
            "config": {"policy": "p", "episodes": 2, "seed": 0, "action_horizon": 1, "inference_steps": None}}


def test_training_and_eval_runs_land_in_one_table(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "evals").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"step": 8, "samples_seen": 64, "train_wall_s": 2.0,
                                                  "samples_per_s": 32.0, "device": "cpu"}))
    for step, rate in ((4, 0.5), (8, 0.75)):
        (run / "evals" / f"step_{step:07d}.json").write_text(json.dumps({"step": step, **_report(rate, {"a": rate})}))
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "report.json").write_text(json.dumps(_report(1.0, {"a": 1.0, "b": 1.0})))
    out = tmp_path / "table.json"
    assert _module().main(["--out", str(out), f"mlp={run}", f"mlp_ta1={ev}"]) == 0
    table = json.loads(out.read_text())
    assert {s: e["success_rate"] for s, e in table["mlp"]["evals"].items()} == {"4": 0.5, "8": 0.75}
    assert table["mlp"]["samples_per_s"] == 32.0 and table["mlp_ta1"]["eval"]["per_env"] == {"a": 1.0, "b": 1.0}
    assert table["mlp_ta1"]["config"]["action_horizon"] == 1 and "mlp_ta1" in capsys.readouterr().out
    # --update keeps the earlier rows and replaces a named one; without it the table starts afresh
    assert _module().main(["--out", str(out), "--update", f"mlp_ta1={run}"]) == 0
    table = json.loads(out.read_text())
    assert set(table) == {"mlp", "mlp_ta1"} and table["mlp_ta1"]["kind"] == "train"
    assert _module().main(["--out", str(out), f"dit={ev}"]) == 0
    assert set(json.loads(out.read_text())) == {"dit"}


def test_bad_arguments(tmp_path, capsys):
    assert _module().main(["--out", str(tmp_path / "t.json"), "no-equals-sign"]) == 2
    assert "NAME=DIR" in capsys.readouterr().err
    try:
        _module().main(["--out", str(tmp_path / "t.json"), f"x={tmp_path}"])
    except SystemExit as e:
        assert "neither metrics.json" in str(e)
    else:
        raise AssertionError("an empty directory must be refused")
    assert not (tmp_path / "t.json").exists()
