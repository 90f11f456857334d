"""The CLI's contract: composition, validation errors as one line with exit 2, nothing written on error."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from alloy import cli
from alloy.paths import config_dir

FIXTURE = Path(__file__).parent / "fixtures" / "cli_probe"


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """A `probe` command with its own config dir, run from an empty working directory."""
    configs = tmp_path / "configs"
    shutil.copytree(FIXTURE / "configs", configs)
    shutil.copy(config_dir() / "_base.yaml", configs / "_base.yaml")
    spec = importlib.util.spec_from_file_location("alloy_probe_command", FIXTURE / "probe_command.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "alloy_probe_command", module)
    monkeypatch.setattr(cli, "config_dir", lambda: configs)
    monkeypatch.setattr(cli, "available_commands", lambda: {"probe": "alloy_probe_command", "bench_x": "alloy_probe_command"})
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "argv", ["alloy"])
    return work


def written(work: Path) -> list[Path]:
    return sorted(p for p in work.rglob("*") if p.is_file())


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_top_level_help_lists_commands(probe, capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "probe" in out and "bench <what>" in out


def test_unknown_command(probe, capsys):
    assert cli.main(["trian"]) == 2
    line = error_line(capsys)
    assert "'trian'" in line and "probe" in line


def test_run_writes_typed_config_into_run_dir(probe):
    assert cli.main(["probe", "trainer.max_steps=7", "seed=3"]) == 0
    (seen,) = probe.glob("outputs/probe/*/seen.json")
    assert json.loads(seen.read_text()) == {"max_steps": 7, "lr": 0.01, "width": 4, "seed": 3, "device": "auto",
                                              "net": "none"}


def test_group_option_selects_file(probe):
    assert cli.main(["probe", "width=b"]) == 0
    (seen,) = probe.glob("outputs/probe/*/seen.json")
    assert json.loads(seen.read_text())["width"] == 5


@pytest.mark.parametrize(
    "override, expected",
    [
        ("trainer.max_stepz=7", ["'trainer.max_stepz'", "lr, max_steps"]),
        ("+trainer.foo=1", ["'trainer.foo'", "lr, max_steps"]),
        ("widht=3", ["'widht'"]),
        ("trainer.max_steps=abc", ["'trainer.max_steps'", "Integer"]),
        ("width=c", ["'width=c'", "a, b, typo"]),
        ("width=typo", ["'width.widht'", "name, width"]),
        ("trainer.max_steps=[", ["cannot parse"]),
    ],
)
def test_config_errors_are_one_line_exit_2_nothing_written(probe, capsys, override, expected):
    assert cli.main(["probe", override]) == 2
    line = error_line(capsys)
    assert line.startswith("error: ")
    for text in expected:
        assert text in line
    assert written(probe) == []


def test_cfg_job_prints_and_writes_nothing(probe, capsys):
    assert cli.main(["probe", "trainer.max_steps=9", "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    assert "max_steps: 9" in out
    assert written(probe) == []


def test_cfg_job_still_validates(probe, capsys):
    assert cli.main(["probe", "trainer.nope=1", "--cfg", "job"]) == 2
    assert "'trainer.nope'" in error_line(capsys)


def test_command_help_lists_groups_and_options(probe, capsys):
    assert cli.main(["probe", "--help"]) == 0
    out = capsys.readouterr().out
    assert "probe command for tests" in out
    assert "width: a, b, typo" in out
    assert "max_steps: 5" in out


def test_multirun_runs_every_job(probe):
    assert cli.main(["probe", "-m", "width=a,b", "trainer.max_steps=1,2"]) == 0
    seen = [json.loads(p.read_text()) for p in probe.glob("multirun/probe/*/*/seen.json")]
    assert sorted((s["width"], s["max_steps"]) for s in seen) == [(4, 1), (4, 2), (5, 1), (5, 2)]


def test_multirun_validates_every_job_before_running_any(probe, capsys):
    assert cli.main(["probe", "-m", "width=a,c"]) == 2
    assert "'width=c'" in error_line(capsys)
    assert written(probe) == []


def test_conflicting_modes_are_one_line(probe, capsys):
    assert cli.main(["probe", "--cfg", "job", "-m", "width=a,b"]) == 2
    assert "only one of" in error_line(capsys)


def test_user_error_inside_run_is_one_line_exit_2(probe, capsys):
    assert cli.main(["probe", "fail=user"]) == 2
    assert error_line(capsys) == "error: the env is wrong; pick another one"


def test_interrupt_exits_130(probe):
    assert cli.main(["probe", "fail=interrupt"]) == 130


def test_bench_dispatch(probe, capsys):
    shutil.copy(cli.config_dir() / "probe.yaml", cli.config_dir() / "bench_x.yaml")
    assert cli.main(["bench", "x", "trainer.max_steps=2"]) == 0
    assert cli.main(["bench", "nope"]) == 2
    assert "valid choices: x" in error_line(capsys)
    assert cli.main(["bench"]) == 2


def test_every_real_command_has_help_and_cfg(capsys):
    """Each shipped command composes its default config and validates against its schema."""
    commands = cli.available_commands()
    for name, module_name in commands.items():
        module = importlib.import_module(module_name)
        assert isinstance(module.HELP, str) and module.HELP, name
        try:
            cli.check_config(name, module, [], multirun=False)
        except cli.ConfigError as e:  # a command may require a value on the command line, nothing else
            assert str(e).startswith("missing required value"), (name, str(e))


def test_value_key_named_like_a_group(probe):
    """`net=<path>` sets the plain key although `net/` is a config group (eval's policy=<checkpoint>)."""
    assert cli.main(["probe", "net=/some/dir"]) == 0
    (seen,) = probe.glob("outputs/probe/*/seen.json")
    assert json.loads(seen.read_text())["net"] == "/some/dir"


def test_command_check_runs_before_anything_is_written(probe, capsys):
    assert cli.main(["probe", "limit=0"]) == 2
    assert error_line(capsys) == "error: limit must be positive, got 0"
    assert written(probe) == []
