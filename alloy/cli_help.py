"""What each command takes: its own config groups and plain values, for `--help` and for the one-line error when a
user reaches for a group that another command takes (`alloy train suite=nav`).

Hydra's own help lists every group under configs/; a command only takes the groups of its primary config's defaults
list, with the options meant for it (an option file marked `# @command <name>` belongs to that command only).
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

from alloy.config import ConfigError

SIMPLE_VALUE = re.compile(r"^[\w./-]+$")  # a single option, not a sweep (a,b) or a function (range(...))
RUN_DIR_HELP = "where this run writes (default outputs/{name}/<timestamp>); the same as hydra.run.dir=<dir>"


def command_groups(name: str, config_dir: Path) -> dict[str, str | None]:
    """The config groups in `configs/<name>.yaml`'s defaults list, each with its default option (None: optional)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3", job_name=name):
            cfg = compose(config_name=name, return_hydra_config=True)
        return {g: c for g, c in sorted(cfg.hydra.runtime.choices.items()) if not g.startswith("hydra/")}
    except Exception:  # noqa: BLE001 - a config that does not compose is reported by validation, not here
        return {}
    finally:
        GlobalHydra.instance().clear()


def all_groups(config_dir: Path) -> list[str]:
    """Every config group under configs/ (any command's)."""
    return sorted(p.name for p in config_dir.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def _marks(path: Path) -> list[str]:
    return [line.split()[-1] for line in path.read_text().splitlines() if line.startswith("# @command ")]


def group_options(config_dir: Path, group: str, command: str) -> list[str]:
    """A group's options for `command`: those marked `# @command <command>` if any are, else the unmarked ones."""
    files = sorted((config_dir / group).glob("*.yaml"))
    marked = [p.stem for p in files if command in _marks(p)]
    return marked or [p.stem for p in files if not _marks(p)]


def option_owner(config_dir: Path, group: str, option: str) -> str:
    """The command an option file is marked for ('' when unmarked or missing)."""
    path = config_dir / group / f"{option}.yaml"
    marks = _marks(path) if path.is_file() else []
    return marks[0] if marks else ""


def key_notes(config_dir: Path, name: str) -> dict[str, str]:
    """Top-level key -> its inline comment in `configs/<name>.yaml` (what the key means)."""
    notes = {}
    for line in (config_dir / f"{name}.yaml").read_text().splitlines():
        m = re.match(r"^(\w+):[^#]*#\s*(.+)$", line)
        if m:
            notes[m.group(1)] = m.group(2).strip()
    return notes


# ----------------------------------------------------------------------------------------------------------------
# A group this command does not take
# ----------------------------------------------------------------------------------------------------------------


def _datasets_for(overrides: dict[str, str]) -> str:
    """The dataset spec `alloy collect <suite>/<embodiment>` writes, for `alloy train suite=... embodiment=...`."""
    suite, robot = overrides.get("suite", ""), overrides.get("embodiment") or overrides.get("robot", "")
    if not all(SIMPLE_VALUE.match(v) for v in (suite, robot) if v):
        return "dataset=<id, id1+id2 or glob>"
    if robot or suite == "nav":
        return f"dataset=nav/{robot}/planner-v0" if robot else "dataset='nav/*/planner-v0'"
    if suite == "metaworld_mt10":
        from envs import metaworld

        return "dataset=" + "+".join(f"metaworld/{t}/expert-v0" for t in metaworld.MT10)
    return "dataset='metaworld/*/expert-v0'"


def _nav_env(robot: str) -> str:
    from envs.nav.embodiments import env_id_for

    return f"env={env_id_for(robot)}"


def misplaced_hint(command: str, group: str, overrides: dict[str, str]) -> str:
    """What to type instead of `group=...` in `command` ('' when there is nothing better than its --help)."""
    value = overrides.get(group, "")
    robot_group = group in ("embodiment", "robot")
    if command == "train" and (group == "suite" or robot_group):
        return (f"alloy train trains on datasets: pass {_datasets_for(overrides)} (what alloy collect writes for that "
                f"suite and robot; a collect with name=<n> writes <n>-v0)")
    if command == "eval" and group == "suite":
        return f"pass env={value} (env= takes a suite or an env id)"
    if command == "rl" and group == "embodiment":
        return f"pass robot={value}"
    if command in ("eval", "rl", "bench_rl", "bench_rollout") and (group == "suite" or robot_group):
        return f"pass {_nav_env(value)}" if robot_group and value else "pass env=<env id>"
    if command == "collect" and group == "robot":
        return f"pass suite=nav embodiment={value}"
    if command == "collect" and group in ("policy", "diffusion", "scheme", "trainer", "experiment", "student"):
        return "alloy collect rolls out a teacher: teacher=teacher or teacher=<saved policy dir>"
    if command in ("eval", "export") and group in ("diffusion", "scheme", "trainer", "experiment", "student"):
        return (f"alloy {command} takes a trained policy: policy=<checkpoint dir> (train one with alloy train "
                f"{group}={value})")
    return ""


def check_groups(name: str, module: ModuleType, overrides: list[str], config_dir: Path) -> None:
    """ConfigError, one line, for a group this command does not take or an option meant for another command."""
    pairs = {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and not key.startswith(("+", "~", "hydra.")) and "." not in key and "@" not in key:
            pairs[key] = value
    groups = all_groups(config_dir)
    if not any(key in groups for key in pairs):
        return
    own = command_groups(name, config_dir)
    command = name.replace("_", " ", 1) if name.startswith("bench_") else name
    for key, value in pairs.items():
        if key in own:
            options = group_options(config_dir, key, name)
            exists = SIMPLE_VALUE.match(value) and (config_dir / key / f"{value}.yaml").is_file()
            if exists and value not in options:
                owner = option_owner(config_dir, key, value)
                whose = f"a recipe of alloy {owner}" if owner else f"not for alloy {command}"
                raise ConfigError(f"{key}={value} is {whose}; alloy {command} takes {key}={'|'.join(options)}")
        elif key in groups:
            hint = misplaced_hint(name, key, pairs)
            takes = f"its config groups: {', '.join(f'{g}=' for g in own)}" if own else "it has no config group"
            raise ConfigError(f"alloy {command} does not take {key}= ({takes}; see alloy {command} --help)"
                              f"{'; ' + hint if hint else ''}")


# ----------------------------------------------------------------------------------------------------------------
# --help
# ----------------------------------------------------------------------------------------------------------------


def _config_lines(cfg, notes: dict[str, str]) -> list[str]:
    """The composed config as YAML, each top-level key followed by its comment from the primary config."""
    from omegaconf import OmegaConf

    lines = []
    for line in OmegaConf.to_yaml(cfg).rstrip("\n").splitlines():
        m = re.match(r"^(\w+):", line)
        note = notes.get(m.group(1)) if m else None
        lines.append(f"{line:<32} # {note}" if note and not line.endswith(":") else line)
    return lines


def help_text(name: str, module: ModuleType, overrides: list[str], config_dir: Path) -> str:
    """`alloy <name> --help`: what the command does, its values, its own groups and its config."""
    from omegaconf import OmegaConf

    from alloy.config import _apply_routed_values, compose

    command = name.replace("_", " ", 1) if name.startswith("bench_") else name
    notes = key_notes(config_dir, name)
    cfg = _apply_routed_values(compose(name, overrides, config_dir))
    groups = command_groups(name, config_dir)
    lines = [f"== alloy {command}: {getattr(module, 'HELP', '') or name} ==",
             f"usage: alloy {command} [key=value ...]{' [group=option ...]' if groups else ''} [--cfg job] [-m] "
             f"[--help]", ""]
    required = [k for k in cfg if OmegaConf.is_missing(cfg, k)]  # `???`: the command needs it to run
    keys = [*dict.fromkeys([*getattr(module, "VALUE_KEYS", ()), *required])]
    values = [(k, "???" if k in required else str(cfg.get(k, ""))) for k in keys] + [("run_dir", "<dir>")]
    lines.append("== Values (key=value) ==")
    for key, default in values:
        note = RUN_DIR_HELP.format(name=name) if key == "run_dir" else notes.get(key, "")
        lines.append(f"  {key + '=' + default:<30} {note}{'  (required)' if key in required else ''}".rstrip())
    lines += ["", "== Configuration groups (group=option) =="]
    if not groups:
        lines.append(f"  (none: alloy {command} takes no config group)")
    for group, default in groups.items():
        options = group_options(config_dir, group, name)
        lines.append(f"  {group}: {', '.join(options)}  ({'default: ' + default if default else 'optional: none by default'})")
    lines += ["", "== Config ==", "Override anything in the config (key=value; +key=value adds a key it lacks)", ""]
    lines += _config_lines(cfg, notes)
    lines += ["", "Use --hydra-help to view Hydra specific help"]
    return "\n".join(lines)
