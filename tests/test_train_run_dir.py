"""`alloy train` and its run directory: a directory that holds a checkpoint is refused unless resume=true or
overwrite=true (also when a killed write left only `.last.old`), resume=true with nothing to resume starts afresh
and says so, and the closing line counts only this invocation's steps and time."""

import json
import os
import re
from pathlib import Path

import pytest
from test_train_resume import DATASET, write_synthetic

from alloy import cli

TINY = ["policy=mlp", "policy.mlp_hidden=16", "policy.mlp_layers=1", "policy.pred_horizon=4", "scheme.action_horizon=2",
        "trainer.batch_size=8", "trainer.warmup_steps=1", "trainer.ckpt_every=2", "trainer.progress=false",
        "device=cpu", f"dataset={DATASET}"]


@pytest.fixture()
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_DATA_DIR", str(tmp_path / "data"))
    write_synthetic(episodes=2, T=12)
    return tmp_path / "data"


def train(run: Path, *extra: str) -> int:
    return cli.main(["train", *TINY, *extra, f"hydra.run.dir={run}"])


def step_of(run: Path) -> int:
    return json.loads((run / "checkpoints/last/train_state.json").read_text())["step"]


def error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_a_run_with_a_checkpoint_is_refused_unless_resume_or_overwrite(tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    assert train(run, "trainer.max_steps=6") == 0 and step_of(run) == 6
    capsys.readouterr()
    assert train(run, "trainer.max_steps=2") == 2  # was: the step-6 checkpoint silently became a step-2 one
    line = error_line(capsys)
    assert "already holds a training run" in line and "resume=true" in line and "overwrite=true" in line
    assert step_of(run) == 6
    assert train(run, "trainer.max_steps=2", "resume=true", "overwrite=true") == 2
    assert "pass one" in error_line(capsys)
    assert train(run, "trainer.max_steps=2", "overwrite=true") == 0
    assert step_of(run) == 2
    rows = (run / "train_log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [2]  # the earlier run's log went with it


def test_a_checkpoint_left_as_old_by_a_killed_write_still_counts(tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    assert train(run, "trainer.max_steps=2") == 0
    last = run / "checkpoints/last"
    os.replace(last, last.parent / ".last.old")  # killed between the two renames of its next write
    capsys.readouterr()
    assert train(run, "trainer.max_steps=2") == 2
    assert "already holds a training run" in error_line(capsys)
    assert last.is_dir() and not (last.parent / ".last.old").exists()  # the rollback was completed


def test_resume_with_nothing_to_resume_starts_afresh_and_says_so(tmp_path, data_dir, capsys):
    run = tmp_path / "fresh"
    assert train(run, "trainer.max_steps=2", "resume=true") == 0
    assert step_of(run) == 2
    assert "nothing to resume" in (run / "train.log").read_text()


def test_the_summary_counts_only_this_invocation(tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    assert train(run, "trainer.max_steps=4") == 0
    assert re.search(r"^trained 4 steps in [\d.]+ s", capsys.readouterr().out, re.M)
    first_s = json.loads((run / "checkpoints/last/train_state.json").read_text())["elapsed_s"]
    assert train(run, "trainer.max_steps=6", "resume=true") == 0
    out = capsys.readouterr().out
    m = re.search(r"^trained (\d+) steps in ([\d.]+) s .*resumed at step 4, now at step 6", out, re.M)
    assert m and int(m[1]) == 2, out  # was: "trained 6 steps", the earlier run's steps and time counted too
    total_s = json.loads((run / "checkpoints/last/train_state.json").read_text())["elapsed_s"]
    assert float(m[2]) == pytest.approx(total_s - first_s, abs=0.06)
