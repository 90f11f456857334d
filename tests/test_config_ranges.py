"""Every numeric value of every command's schema carries its allowed range (policies.config_fields), and a value out
of it ends in one `error: invalid value for '<key>': ...` line, exit 2, before the run directory exists.

The fields are found by walking each command's schema (nested dataclasses included), so a numeric field added
without a rule fails `test_every_numeric_field_has_a_rule`, and each rule is probed through `alloy.cli.main` with a
value just outside it; `test_rules` checks both sides of the rules themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import math
import types
import typing
from typing import Any

import pytest

from alloy import cli
from alloy.config import compose, route_value_overrides, schema_of, validate
from alloy.paths import config_dir
from policies.config_fields import Rule, rule_of

# What each command needs on the command line besides the probed value (its `???` keys).
REQUIRED = {
    "train": ["dataset=x"],
    "eval": ["env=alloy/Nav-Holonomic-v0"],
    "rl": ["base=none", "env=alloy/Nav-Diffdrive-v0"],
    "bench_rl": ["base=none"],
    "distill": ["specialists=[x]"],
    "export": ["policy=x"],
}
# Numeric fields without a rule, each with the reason; anything else without one fails the coverage test.
UNRULED = {
    ("pipeline", "eval_episodes"): "alloy/commands/pipeline.py is outside this change; its check() refuses < 1",
}


def argv_of(command: str) -> list[str]:
    return ["bench", command[len("bench_"):]] if command.startswith("bench_") else [command]


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def numeric_shape(hint: Any) -> tuple[list[str], type] | None:
    """How a field holds numbers ([] a number, ["list"], ["dict", "list"], ...) and their type (int or float);
    None when it holds none."""
    hint = _strip_optional(hint)
    if hint in (int, float):
        return [], hint
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    kind = "list" if origin is list and args else "dict" if origin is dict and len(args) == 2 else None
    inner = numeric_shape(args[-1]) if kind else None
    return None if inner is None else ([kind, *inner[0]], inner[1])


def walk(cls: type, prefix: str = ""):
    """(key, field, hint) of every field under `cls`, through nested dataclasses and lists of them."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = _strip_optional(hints[f.name])
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list and typing.get_args(hint) else None
        if dataclasses.is_dataclass(hint):
            yield from walk(hint, f"{prefix}{f.name}.")
        elif item is not None and dataclasses.is_dataclass(item):
            yield from walk(item, f"{prefix}{f.name}[0].")
        else:
            yield f"{prefix}{f.name}", f, hints[f.name]


def numeric_fields() -> list[tuple[str, str, dataclasses.Field, tuple[list[str], type]]]:
    out = []
    for command, module_name in sorted(cli.available_commands().items()):
        schema = schema_of(importlib.import_module(module_name).Config)
        for key, f, hint in walk(schema):
            shape = numeric_shape(hint)
            if shape is not None:
                out.append((command, key, f, shape))
    return out


FIELDS = numeric_fields()


def _outside(rule: Rule, integer: bool) -> list[Any]:
    """Values just outside the rule's bounds (each side it has); a NaN where it only asks for a finite number."""
    bad = []
    if rule.lo is not None:
        bad.append(rule.lo if rule.lo_open else rule.lo - 1)
    if rule.hi is not None:
        bad.append(rule.hi if rule.hi_open else rule.hi + 1)
    if not bad and not integer:
        bad.append(math.nan)
    return [int(b) if integer and not math.isnan(b) else float(b) for b in bad]


def _literal(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def bad_overrides(key: str, f: dataclasses.Field, shape_type: tuple[list[str], type]) -> list[tuple[str, str]]:
    """(override, key the error must name) with a value out of the field's rule."""
    rule, (shape, number) = rule_of(f), shape_type
    integer = number is int
    values: list[Any] = []
    if shape and shape[-1] == "list":
        n = rule.length or 1
        values = [[b] * n for b in _outside(rule, integer)]
        if rule.length is not None:
            values.append([1.0] * (rule.length + 1))
        if rule.ordered:
            values.append([2.0, 1.0])
    else:
        values = _outside(rule, integer)
    assert values, f"{key}: no value is out of its rule {rule}"
    dicts = shape.count("dict")
    target = "+" + ".".join([key] + ["probe"] * dicts) if dicts else key
    return [(f"{target}={_literal(values[0])}", key)]  # one per field keeps this fast; both sides: test_rules


CASES = [(command, override, key)
         for command, key, f, shape in FIELDS if rule_of(f) is not None and "[0]" not in key
         for override, key in bad_overrides(key, f, shape)]


def test_rules():
    from policies.config_fields import explain, violation

    prob = Rule(lo=0, hi=1, hi_open=True)
    assert [violation(x, prob, "p") for x in (0, 0.5)] == [None, None]
    for bad in (-0.1, 1.0, math.nan, math.inf, "a", True):
        assert violation(bad, prob, "p")[0] == "p", bad
    assert explain(prob, 1.0) == "it must be >= 0 and < 1"
    count = Rule(lo=1, integer=True, note="1: once")
    assert violation(None, count, "n") is None and explain(count, 0) == "it must be a positive integer (1: once)"
    assert explain(Rule(lo=0, lo_open=True), -1) == "it must be > 0"
    assert explain(Rule(), math.nan) == "it must be a finite number"
    pair = Rule(lo=0, length=2)
    assert violation([0.1, 0.2], pair, "b") is None
    assert violation([0.1], pair, "b") == ("b", [0.1]) and violation([0.1, -1], pair, "b") == ("b", [0.1, -1])
    assert explain(pair, [0.1]) == "it must be a list of 2 values, each >= 0"
    ranges = Rule(length=2, ordered=True)
    assert violation({"m": [1.0, 2.0], "w": [3.0, 1.0]}, ranges, "r") == ("r.w", [3.0, 1.0])
    assert violation({"a": {"m": [1.0]}}, ranges, "r") == ("r.a.m", [1.0])
    assert explain(ranges, [3.0, 1.0]) == "it must be a list of 2 values in non-decreasing order ([low, high])"
    assert explain(Rule(lo=1, integer=True), [0]) == "each value must be a positive integer"
    options = Rule(options=("a", "b"))
    assert violation("a", options, "o") is None and explain(options, "c") == "it must be one of: a, b"


def test_every_numeric_field_has_a_rule():
    missing = [f"{command}: {key}" for command, key, f, _ in FIELDS
               if rule_of(f) is None and (command, key) not in UNRULED]
    assert not missing, "numeric config fields without a rule (policies.config_fields.num/seq):\n" + "\n".join(missing)
    assert len(FIELDS) > 150  # the walk found the nested schemas


def test_every_committed_config_is_inside_its_rules():
    """The defaults and every option of every group (experiments included) pass their own rules."""
    from test_config_compose import cases

    for command, overrides in cases(config_dir(), sorted(cli.available_commands())).values():
        module = importlib.import_module(cli.available_commands()[command])
        routed = route_value_overrides(REQUIRED.get(command, []) + overrides, tuple(getattr(module, "VALUE_KEYS", ())))
        validate(compose(command, routed, config_dir()), module.Config)  # raises on a value out of its rule


_COMPOSED: dict = {}  # (command, required overrides) -> its composed config, for every probe of the module


@pytest.fixture
def composed_once(monkeypatch):
    """`alloy.cli`'s composition memoised per command: Hydra composes the command with its required values once,
    and the probed `key=value` / `+key=value` is set on a copy (Hydra's composition of overrides is covered by
    test_the_issue_examples and tests/test_cli.py); everything after composition runs as usual."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict

    real, base, parser = cli.compose, _COMPOSED, OverridesParser.create()

    def compose_with_probe(name, overrides, directory):
        given = [o for o in overrides if not o.startswith("hydra.")]
        required, probe = tuple(given[:-1]), parser.parse_override(given[-1])
        if (name, required) not in base:
            base[name, required] = real(name, list(required), directory)
        cfg = base[name, required].copy()
        with open_dict(cfg):
            OmegaConf.update(cfg, probe.key_or_group, probe.value(), merge=False, force_add=probe.is_add())
        return cfg

    monkeypatch.setattr(cli, "compose", compose_with_probe)
    help_module = importlib.util.find_spec("alloy.cli_help") and importlib.import_module("alloy.cli_help")
    if help_module and hasattr(help_module, "command_groups"):  # a command's groups: the same for every probe
        monkeypatch.setattr(help_module, "command_groups", _cached(help_module.command_groups))


@functools.cache
def _cached(function):
    return functools.cache(function)


@pytest.mark.parametrize("command,override,key", CASES, ids=[f"{c}:{o}" for c, o, _ in CASES])
def test_a_value_out_of_range_is_one_line_exit_2_nothing_written(tmp_path, capsys, composed_once, command,
                                                                  override, key):
    run_dir = tmp_path / "run"
    code = cli.main([*argv_of(command), *REQUIRED.get(command, []), override, f"hydra.run.dir={run_dir}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, (code, err)
    assert err[0].startswith(f"error: invalid value for '{key}"), err[0]  # from validate, before any check()
    assert "it must be" in err[0] or "each value must be" in err[0]
    assert not run_dir.exists()


@pytest.mark.parametrize("command,key", sorted(UNRULED))
def test_unruled_values_are_still_refused_before_work(tmp_path, capsys, command, key):
    run_dir = tmp_path / "run"
    assert cli.main([*argv_of(command), *REQUIRED.get(command, []), f"{key}=-1", f"hydra.run.dir={run_dir}"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and key in err[0], err
    assert not run_dir.exists()


@pytest.mark.parametrize("args,line", [
    (["train", "dataset=x", "trainer.lr=-1"], "error: invalid value for 'trainer.lr': -1.0; it must be > 0"),
    (["train", "dataset=x", "trainer.betas=[2.0,0.5]"],
     "error: invalid value for 'trainer.betas': [2.0, 0.5]; it must be a list of 2 values, each >= 0 and < 1"),
    (["train", "dataset=x", "trainer.weight_decay=-1"],
     "error: invalid value for 'trainer.weight_decay': -1.0; it must be >= 0"),
    (["train", "dataset=x", "trainer.warmup_steps=-3"],
     "error: invalid value for 'trainer.warmup_steps': -3; it must be >= 0"),
    (["collect", "suite=nav", "embodiment=holonomic", "episodes=-1"],
     "error: invalid value for 'episodes': -1; it must be >= 0 (0: episodes_per_task)"),
    (["rl", "base=none", "env=alloy/Nav-Diffdrive-v0", "+randomize.mass=[12.0,5.0]"],
     "error: invalid value for 'randomize.mass': [12.0, 5.0]; it must be a list of 2 values in non-decreasing "
     "order ([low, high])"),
    (["eval", "env=nav", "episodes=0"], "error: invalid value for 'episodes': 0; it must be a positive integer"),
    (["export", "policy=x", "format=zip"], "error: invalid value for 'format': 'zip'; it must be one of: onnx, pt2, all"),
])
def test_the_issue_examples(tmp_path, capsys, args, line):
    assert cli.main([*args, f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    assert capsys.readouterr().err.strip() == line
    assert not (tmp_path / "run").exists()
