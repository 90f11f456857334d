"""The rollout engine and trainer refactors keep behaviour: the same seeds give the same demonstrations, the same
imitation losses and the same evaluation outcomes as the code before them (figures in
tests/fixtures/golden_behaviour.json, made by tests/golden/behaviour.py on the earlier code)."""

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def test_collect_train_eval_give_the_recorded_numbers(tmp_path, monkeypatch):
    sys.path.insert(0, str(HERE / "golden"))
    try:
        import behaviour
    finally:
        sys.path.pop(0)
    monkeypatch.setenv("ALLOY_DATA_DIR", str(tmp_path / "data"))
    got = behaviour.run(tmp_path)
    want = json.loads((HERE / "fixtures" / "golden_behaviour.json").read_text())
    assert got["collect"] == want["collect"]
    assert got["losses"] == pytest.approx(want["losses"], rel=1e-6, abs=1e-7)
    assert got["eval_teacher"] == want["eval_teacher"]
    assert got["eval_policy"] == want["eval_policy"]
