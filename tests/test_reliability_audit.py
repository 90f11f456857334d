"""Bad inputs found by trying alloy as a new user would (issue 15's audit, second pass): each is refused with one
`error:` line and exit 2 before anything is written, or (the artifact) refused when it is loaded."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from alloy import cli
from policies.errors import PolicyError


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


def check(name: str, *overrides: str) -> None:
    cli.check_config(name, importlib.import_module(f"alloy.commands.{name}"), list(overrides), multirun=False)


def test_randomisation_ranges_take_integers_and_refuse_a_reversed_range():
    check("rl", "base=none", "env=alloy/Nav-Diffdrive-v0", "+randomize.mass=[5,9]")  # the README's form
    with pytest.raises(cli.ConfigError, match=r"randomize.mass.*non-decreasing"):
        check("rl", "base=none", "env=alloy/Nav-Diffdrive-v0", "+randomize.mass=[9,4]")


@pytest.mark.parametrize("argv, words", [
    (["train", "dataset=x", "experiment=nav_dti"], ["experiment=nav_dti", "nav_dit"]),
    (["rl", "base=none", "robot=diffdrve"], ["robot=diffdrve", "diffdrive"]),
    (["train", "dataset=x", "trainer.lr=1e-3", "trainer.min_lr=1.0"], ["trainer.min_lr", "<= trainer.lr"]),
    (["rl", "env=alloy/Nav-Diffdrive-v0"], ["missing required value 'base'"]),
    (["collect", "suite=nav", "embodiment=holonomic", "name=../../escape"], ["'name'", "letters, digits"]),
    (["bench", "rl", "base=/nonexistent/base"], ["base", "base=none"]),
    # a new entry of a free-form mapping needs Hydra's `+`: the line says so rather than listing today's entries
    (["rl", "base=none", "env=alloy/Nav-Diffdrive-v0", "reward.time=-0.02"], ["'reward.time'", "'+reward.time=<value>'"]),
    (["rl", "base=none", "env=alloy/Nav-Diffdrive-v0", "env_kwargs.time_limit=40"], ["+env_kwargs.time_limit"]),
    (["rl", "base=none", "env=alloy/Nav-Diffdrive-v0", "ppo.gama=0.9"], ["'ppo.gama'", "gamma"]),
])
def test_typos_and_inconsistent_values_are_one_line(tmp_path, capsys, argv, words):
    assert cli.main([*argv, f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    line = one_error_line(capsys)
    assert all(w in line for w in words), line
    assert not (tmp_path / "run").exists()


def test_an_existing_run_is_refused_before_hydra_writes_into_it(tmp_path, capsys):
    for command, args in (("train", ["dataset=x"]), ("rl", ["base=none", "env=alloy/Nav-Diffdrive-v0"])):
        run = tmp_path / command
        (run / "checkpoints" / "last").mkdir(parents=True)
        assert cli.main([command, *args, f"hydra.run.dir={run}"]) == 2
        assert "already holds" in one_error_line(capsys)
        assert sorted(p.name for p in run.iterdir()) == ["checkpoints"]  # no .hydra/, no log


def test_an_unknown_dataset_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ALLOY_DATA_DIR", str(tmp_path / "data"))
    assert cli.main(["train", "dataset=nav/holonomic/nope-v0", f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    assert "dataset 'nav/holonomic/nope-v0' not found" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_export_never_overwrites_its_source_or_a_folder_that_is_not_an_artifact(tmp_path, capsys):
    from test_export_runtime import small

    ckpt = tmp_path / "ckpt"
    small("mlp", "gaussian", "chunk").save_pretrained(ckpt)
    assert cli.main(["export", f"policy={ckpt}", f"out={ckpt}", "overwrite=true"]) == 2
    assert "overlap" in one_error_line(capsys)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert cli.main(["export", f"policy={ckpt}", f"out={other}", "overwrite=true"]) == 2
    assert "not an exported artifact" in one_error_line(capsys)
    assert (ckpt / "model.safetensors").is_file() and (other / "keep.txt").read_text() == "mine"


def test_a_modified_policy_json_or_an_unlisted_graph_is_refused(tmp_path):
    from test_export_runtime import small

    from policies.export import export_policy
    from policies.runtime import Runtime

    out = export_policy(small("mlp", "gaussian", "chunk"), tmp_path / "a")
    Runtime(out)
    spec_file = out / "policy.json"
    original = spec_file.read_text()
    spec = json.loads(original)
    spec["policy"]["note"] = "edited"  # any change of the spec's content
    spec_file.write_text(json.dumps(spec, indent=1))
    with pytest.raises(PolicyError, match="does not match its own hash"):
        Runtime(out)
    spec = json.loads(original)
    graph = next(iter(spec["graphs"].values()))["onnx"]
    del spec["files"][graph]
    from policies.runtime.artifact import spec_digest

    spec["spec_sha256"] = spec_digest(spec)  # even with the spec's own hash made to match
    spec_file.write_text(json.dumps(spec, indent=1))
    with pytest.raises(PolicyError, match="has no hash for it"):
        Runtime(out)


def test_the_runtime_refuses_a_ragged_observation_with_the_spec(tmp_path):
    from test_export_runtime import small

    from policies.export import export_policy
    from policies.runtime import Runtime

    rt = Runtime(export_policy(small("mlp", "gaussian", "chunk"), tmp_path / "a"))
    with pytest.raises(PolicyError, match="is not an array.*expects"):
        rt.act({"state": [[0.0, 1.0], [0.0]]})
    assert rt.act({"state": np.zeros((2, 5), np.float32)}).shape == (2, 2)


def test_the_runtime_refuses_a_new_batch_size_without_reset_a_newer_format_and_a_missing_file(tmp_path):
    import shutil

    from test_export_runtime import small

    from policies.export import export_policy
    from policies.runtime import Runtime
    from policies.runtime.artifact import spec_digest

    out = export_policy(small("dit", "ddim", "chunk"), tmp_path / "a")
    rt = Runtime(out)
    rt.act({"state": np.zeros((3, 5), np.float32)})
    with pytest.raises(PolicyError, match="call reset"):
        rt.act({"state": np.zeros((2, 5), np.float32)})
    rt.reset()
    assert rt.act({"state": np.zeros((2, 5), np.float32)}).shape == (2, 2)
    with pytest.raises(PolicyError, match="NaN or inf"):
        rt.act({"state": np.full((2, 5), np.inf, np.float32)})

    newer = tmp_path / "newer"
    shutil.copytree(out, newer)
    spec = json.loads((newer / "policy.json").read_text())
    spec["format_version"] += 1
    spec["spec_sha256"] = spec_digest(spec)
    (newer / "policy.json").write_text(json.dumps(spec))
    with pytest.raises(PolicyError, match="newer alloy"):
        Runtime(newer)
    (out / "plan.onnx").unlink()
    with pytest.raises(PolicyError, match="lacks plan.onnx"):
        Runtime(out)
