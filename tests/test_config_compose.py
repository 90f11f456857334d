"""Every committed config composes to the values recorded in tests/fixtures/composed_configs.json.

The fixture holds, per case (a command and its overrides), the config as Hydra composes it (what `--cfg job`
prints) and as the command receives it (merged into its schema), both resolved and flattened to dotted keys.
It was recorded before the group files were cut down to what makes each choice that choice.
Cases: every command's primary config with no overrides, every option of every config group of `collect` and
`train` (each experiment among them), and the MLP under every diffusion process.
The experiments are the recipes of the figures in benchmarks/: a change of their values changes what those mean.

Regenerate the fixture only for an intended change of composed values (review the diff it makes):
    .venv/bin/python tests/test_config_compose.py --write
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "composed_configs.json"
RUN_DEPENDENT = ("run_dir",)  # set from the run directory at run time (empty while composing)


def _options(config_dir: Path, group: str, command: str = "train") -> list[str]:
    """A group's options for `command` (experiments declare another command with a `# @command <name>` line)."""
    def for_command(path: Path) -> bool:
        marks = [line.split()[-1] for line in path.read_text().splitlines() if line.startswith("# @command ")]
        return (marks[0] if marks else "train") == command
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml") if group != "experiment" or for_command(p))


def cases(config_dir: Path, commands: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Case id -> (command, overrides)."""
    out: dict[str, tuple[str, list[str]]] = {name: (name, []) for name in commands}
    for suite in _options(config_dir, "suite"):
        out[f"collect suite={suite}"] = ("collect", [f"suite={suite}"])
    for group in ("policy", "diffusion", "scheme", "experiment"):
        for option in _options(config_dir, group):
            out[f"train {group}={option}"] = ("train", [f"{group}={option}"])
    for experiment in _options(config_dir, "experiment", "pipeline"):
        out[f"pipeline experiment={experiment}"] = ("pipeline", [f"experiment={experiment}"])
    for diffusion in _options(config_dir, "diffusion"):  # the MLP picks regression unless diffusion= is given
        out[f"train policy=mlp diffusion={diffusion}"] = ("train", ["policy=mlp", f"diffusion={diffusion}"])
    return out


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


def _plain(cfg) -> dict[str, Any]:
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    for key in RUN_DEPENDENT:
        data.pop(key, None)
    return json.loads(json.dumps(_flatten(data), sort_keys=True))  # what the fixture holds: JSON types


@functools.cache
def _schema(config_cls: type):
    from omegaconf import OmegaConf

    from alloy.config import schema_of

    return OmegaConf.structured(schema_of(config_cls))


def compose_case(command: str, overrides: list[str]) -> dict[str, dict[str, Any]]:
    """The composed config (as `--cfg job` shows it) and the validated one (as the command gets it)."""
    from omegaconf import OmegaConf

    from alloy import cli
    from alloy.config import _apply_routed_values, compose, route_value_overrides
    from alloy.paths import config_dir

    module = importlib.import_module(cli.available_commands()[command])
    overrides = route_value_overrides(overrides, tuple(getattr(module, "VALUE_KEYS", ())))
    composed = compose(command, overrides, config_dir())
    # alloy.config.validate without its missing-value check: train's dataset and eval's env are `???` here.
    validated = OmegaConf.merge(_schema(module.Config), _apply_routed_values(composed.copy()))
    return {"composed": _plain(composed), "validated": _plain(validated)}


def compose_all() -> dict[str, dict[str, Any]]:
    from alloy import cli
    from alloy.paths import config_dir

    out = {}
    for case, (command, overrides) in cases(config_dir(), sorted(cli.available_commands())).items():
        out[case] = {"command": command, "overrides": overrides, **compose_case(command, overrides)}
    return out


def _diff(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    lines = []
    for key in sorted(set(expected) | set(actual)):
        if key not in actual:
            lines.append(f"  {key}: {expected[key]!r} -> (missing)")
        elif key not in expected:
            lines.append(f"  {key}: (new) -> {actual[key]!r}")
        elif (type(expected[key]), expected[key]) != (type(actual[key]), actual[key]):
            lines.append(f"  {key}: {expected[key]!r} -> {actual[key]!r}")
    return lines


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def current() -> dict[str, Any]:
    return compose_all()


def test_the_fixture_covers_every_case(recorded, current):
    missing, new = sorted(set(recorded) - set(current)), sorted(set(current) - set(recorded))
    assert not missing and not new, (f"cases gone: {missing}; cases not in the fixture: {new} "
                                     f"(regenerate it with `python tests/test_config_compose.py --write`)")


def test_every_config_composes_to_its_recorded_values(recorded, current):
    """What a command gets is unchanged key by key; what `--cfg job` shows may only gain keys the schema filled in
    anyway (the group defaults composed from policies/config.py), each with the value the command got."""
    problems = []
    for case in sorted(set(recorded) & set(current)):
        was, now = recorded[case], current[case]
        lines = _diff(was["validated"], now["validated"])
        if lines:
            problems.append(f"{case} (as the command gets it):\n" + "\n".join(lines))
        shown = {k: v for k, v in now["composed"].items() if k in was["composed"] or k not in was["validated"]
                 or (type(v), v) != (type(was["validated"][k]), was["validated"][k])}
        lines = _diff(was["composed"], shown)
        if lines:
            problems.append(f"{case} (as --cfg job shows it):\n" + "\n".join(lines))
    assert not problems, "composed configs changed (recorded -> now):\n" + "\n".join(problems)


def test_every_schema_key_is_in_the_commands_config(current):
    """A key the schema has but the command's YAML lacks composes only as `+key=...`: `key=...` would be refused as
    unknown although `--help` lists it (train's `threads` once was)."""
    absent = {case: [k for k in v["validated"] if k not in v["composed"]]
              for case, v in current.items() if not v["overrides"]}
    assert not {case: keys for case, keys in absent.items() if keys}


def test_diffusion_registry_knows_every_process():
    from policies.config import DiffusionConfig
    from policies.diffusion import PROCESSES, build_process
    from policies.diffusion.ddpm import DiffusersProcess
    from policies.diffusion.edm import EDMProcess
    from policies.diffusion.regression import RegressionProcess

    assert list(PROCESSES) == ["ddpm", "ddim", "edm", "regression", "gaussian"]
    for kind in ("ddpm", "ddim"):  # built in tests/test_fast_samplers.py (diffusers is slow to import)
        assert PROCESSES[kind].func is DiffusersProcess and PROCESSES[kind].keywords == {"kind": kind}
    assert isinstance(build_process(DiffusionConfig(name="edm", num_inference_steps=10)), EDMProcess)
    assert isinstance(build_process(DiffusionConfig(name="regression", num_inference_steps=1)), RegressionProcess)


def test_diffusion_registry_rejects_an_unknown_name_with_the_known_ones():
    from policies.config import DiffusionConfig
    from policies.diffusion import build_process
    from policies.errors import PolicyError

    with pytest.raises(PolicyError) as e:
        build_process(DiffusionConfig(name="ddpn"))
    message = str(e.value)
    assert "\n" not in message and "'ddpn'" in message
    for name in ("ddpm", "ddim", "edm", "regression"):
        assert name in message


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: python {sys.argv[0]} --write   (rewrites {FIXTURE.name} from the configs as they are)")
    import alloy

    print(f"composing with {Path(alloy.__file__).parent.parent}")
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(compose_all(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
