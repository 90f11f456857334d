"""`alloy pipeline`: the stages chain end to end at toy size, and a bad stage override stops it before any work."""

from __future__ import annotations

import json

from alloy import cli

ENV = "alloy/Nav-Holonomic-v0"
TINY = [
    f"env={ENV}",
    'collect.overrides=["episodes=3","workers=1","progress=false"]',
    'train.overrides=["experiment=nav_mlp","trainer.max_steps=6","trainer.batch_size=8","trainer.ckpt_every=3",'
    '"trainer.warmup_steps=1","trainer.progress=false"]',
    'eval.overrides=["episodes=2","num_envs=1","asynchronous=false","video=false","progress=false"]',
]


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


def test_pipeline_runs_every_stage_and_summarises(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert cli.main(["pipeline", *TINY, f"hydra.run.dir={run_dir}"]) == 0
    for stage in ("collect", "train", "eval", "eval_teacher"):
        assert (run_dir / stage).is_dir(), stage
    assert (run_dir / "train" / "checkpoints" / "last" / "model.safetensors").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["dataset"] == "nav/holonomic/pipeline-v0"
    assert summary["eval"]["episodes"] == 2 and 0.0 <= summary["eval"]["success_rate"] <= 1.0
    assert summary["eval_teacher"]["success_rate"] == 1.0  # the planner solves its own layouts
    assert summary["train"]["step"] == 6
    assert set(summary["stage_seconds"]) == {"collect", "train", "eval", "eval_teacher"}
    assert "| teacher | 100.0% |" in (run_dir / "summary.md").read_text()

    # a second run reuses the dataset instead of collecting it again
    again = tmp_path / "again"
    assert cli.main(["pipeline", *TINY, "eval_teacher=false", f"hydra.run.dir={again}"]) == 0
    assert not (again / "collect").exists() and (again / "eval" / "report.json").is_file()
    assert "collect" not in json.loads((again / "summary.json").read_text())["stage_seconds"]


def test_a_typo_in_a_stage_override_stops_before_any_stage(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["pipeline", f"env={ENV}", 'train.overrides=["trainer.max_stepz=5"]', f"hydra.run.dir={run_dir}"]
    assert cli.main(args) == 2
    assert "max_stepz" in one_error_line(capsys)
    assert not (run_dir / "collect").exists()


def test_an_env_the_pipeline_cannot_collect_in_is_one_line(tmp_path, capsys):
    assert cli.main(["pipeline", "env=CartPole-v1", f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    line = one_error_line(capsys)
    assert "CartPole-v1" in line and "alloy/Nav-<Embodiment>-v0" in line
