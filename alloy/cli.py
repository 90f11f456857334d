"""The `alloy` command line: one Hydra app per subcommand, validated before any work starts.

`alloy <command> [key=value ...] [--cfg job] [-m] [--help]`. A command is a module in `alloy.commands`
with `HELP`, a `Config` dataclass (its schema) and `run(cfg)`; its primary config is `configs/<command>.yaml`.
`alloy bench <what>` runs the command `bench_<what>`.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

import distill  # noqa: F401  registers distill's kinds of checkpoint (consistency students) with load_policy
from alloy.config import ConfigError, compose, mapping_hint, route_value_overrides, validate
from alloy.paths import config_dir

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
NO_WORK_FLAGS = {"-h", "--help", "-hh", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"}
HELP_FLAGS = {"-h", "--help"}  # alloy's own help (the command's groups and values); --hydra-help stays Hydra's


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception classes that mean the user gave bad input: printed as one line, exit 2."""
    from distill.errors import DistillError
    from envs.errors import EnvError
    from policies.errors import PolicyError
    from training.errors import TrainingError

    return (ConfigError, EnvError, PolicyError, TrainingError, DistillError)


def available_commands() -> dict[str, str]:
    """Command name -> module name, for every module in `alloy.commands` that has a config."""
    import alloy.commands as pkg

    found = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_") and (config_dir() / f"{info.name}.yaml").is_file():
            found[info.name] = f"alloy.commands.{info.name}"
    return found


def _help_line(module_name: str) -> str:
    try:
        return getattr(importlib.import_module(module_name), "HELP", "")
    except Exception as e:  # noqa: BLE001 - a broken command must not break `alloy --help`
        return f"(unavailable: {type(e).__name__}: {e})"


def print_usage(commands: dict[str, str]) -> None:
    top = {n: m for n, m in commands.items() if not n.startswith("bench_")}
    benches = {n[len("bench_"):]: m for n, m in commands.items() if n.startswith("bench_")}
    lines = [
        "usage: alloy <command> [key=value ...] [--cfg job] [-m] [--help]",
        "",
        "Diffusion-transformer policies for robot imitation learning and policy distillation.",
        "",
        "commands:",
    ]
    width = max([len(n) for n in top] + [len("bench <what>")]) + 2
    lines += [f"  {n:<{width}}{_help_line(m)}" for n, m in sorted(top.items())]
    if benches:
        lines.append(f"  {'bench <what>':<{width}}measured figures as JSON: {', '.join(sorted(benches))}")
    lines += [
        "",
        "Every command takes Hydra overrides (key=value, +key=value, group=option); `--help` lists its options",
        "and config groups, `--cfg job` prints the composed config, `-m` runs a multirun sweep.",
        "Runs write to outputs/<command>/<timestamp> (override with run_dir=... or hydra.run.dir=...).",
    ]
    print("\n".join(lines))


def _sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Every job's overrides of a multirun sweep, so that each composition is validated up front."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    except HydraException as e:
        raise ConfigError(f"cannot parse override: {str(e).splitlines()[0]}") from None
    return [job for batch in batches for job in batch]


def check_config(name: str, module: ModuleType, overrides: list[str], multirun: bool, *,
                 allow_missing: bool = False) -> list[str]:
    """Compose and validate every job's config; raise ConfigError before anything is written.

    With `allow_missing` (`--cfg job`: printing is not running) a required value left unset is no error; the keys
    still missing are returned, and the command's own value checks (which may load checkpoints) are skipped."""
    from alloy.cli_help import check_groups

    check_groups(name, module, overrides, config_dir())
    jobs = _sweep_jobs(overrides) if multirun else [overrides]
    check = getattr(module, "check", None)  # optional: checks of values the schema cannot express
    missing: list[str] = []
    for job in jobs:
        try:
            cfg = validate(compose(name, job, config_dir()), module.Config)
        except ConfigError as e:
            if not (allow_missing and str(e).startswith(MISSING_PREFIX)):
                raise ConfigError(mapping_hint(str(e), module.Config)) from None
            missing.append(str(e).split("'")[1])
            continue
        if not allow_missing and cfg.get("device", "auto") != "auto":  # auto never fails; the others import torch
            from training.runtime import resolve_device

            resolve_device(cfg.device)  # device=tpu, or cuda without CUDA: before the run directory exists
        if check is not None and not allow_missing:  # printing the config is not running the command
            check(_with_run_dir(cfg, job, multirun))
    return sorted(set(missing))


def _with_run_dir(cfg, overrides: list[str], multirun: bool):
    """`cfg` with `run_dir` set to the directory a `hydra.run.dir=` override names, so that a command's check can
    refuse a directory that already holds a run before Hydra writes its config files there (a default, timestamped
    run directory is new: run_dir stays empty)."""
    from omegaconf import OmegaConf

    given = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == "hydra.run.dir"]
    if multirun or not given or "${" in given[-1] or cfg.get("run_dir"):
        return cfg
    OmegaConf.set_struct(cfg, False)
    cfg.run_dir = str(Path(given[-1]).expanduser().absolute())
    OmegaConf.set_struct(cfg, True)
    return cfg


MISSING_PREFIX = "missing required value '"  # alloy.config.validate's message for a `???` left unset


def run_dir_alias(overrides: list[str], multirun: bool) -> list[str]:
    """`run_dir=<dir>` is where the run writes: Hydra's hydra.run.dir (hydra.sweep.dir for a multirun)."""
    target = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    out = []
    for override in overrides:
        key, sep, value = override.partition("=")
        out.append(f"{target}={value}" if sep and key.lstrip("+") == "run_dir" else override)
    return out


def _run_hydra(name: str, module: ModuleType, argv: list[str]) -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    errors = user_errors()

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=name)
    def _task(cfg):
        cfg = validate(cfg, module.Config)
        OmegaConf.set_struct(cfg, False)
        cfg.run_dir = HydraConfig.get().runtime.output_dir
        OmegaConf.set_struct(cfg, True)
        try:
            return module.run(cfg)
        except errors as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_USAGE)

    header = (getattr(module, "HELP", "") or name).replace("'", "")
    sys.argv = [
        f"alloy {name.replace('_', ' ', 1) if name.startswith('bench_') else name}",
        *argv,
        f"hydra.job.name={name}",
        f"hydra.help.header='== alloy {name}: {header} =='",
    ]
    _task()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = available_commands()
    if not argv or argv[0] in ("-h", "--help"):
        print_usage(commands)
        return 0
    name, rest = argv[0], argv[1:]
    if name == "bench":
        benches = sorted(n[len("bench_"):] for n in commands if n.startswith("bench_"))
        if not rest or rest[0].startswith("-"):
            print(f"usage: alloy bench <what> [key=value ...]; <what> is one of: {', '.join(benches)}")
            return 0 if rest[:1] in (["-h"], ["--help"]) else EXIT_USAGE
        if rest[0] not in benches:
            print(f"error: unknown benchmark '{rest[0]}'; valid choices: {', '.join(benches)}", file=sys.stderr)
            return EXIT_USAGE
        name, rest = f"bench_{rest[0]}", rest[1:]
    if name not in commands:
        valid = sorted({"bench" if n.startswith("bench_") else n for n in commands})
        print(f"error: unknown command '{name}'; valid commands: {', '.join(valid)}", file=sys.stderr)
        return EXIT_USAGE

    from hydra._internal.utils import get_args_parser

    module = importlib.import_module(commands[name])
    try:
        args, _ = get_args_parser().parse_known_args(rest)
        original_overrides = list(args.overrides)
        args.overrides = route_value_overrides(run_dir_alias(list(args.overrides), bool(args.multirun)),
                                               tuple(getattr(module, "VALUE_KEYS", ())))
        if HELP_FLAGS.intersection(rest):
            from alloy.cli_help import help_text

            print(help_text(name, module, list(args.overrides), config_dir()))
            return 0
        modes = [m for m in ("run", "multirun", "cfg", "info", "shell_completion") if getattr(args, m)]
        if len(modes) > 1:
            raise ConfigError(f"use only one of --{', --'.join(m.replace('_', '-') for m in modes)} at a time")
        if not NO_WORK_FLAGS.intersection(rest):
            missing = check_config(name, module, list(args.overrides), bool(args.multirun), allow_missing=bool(args.cfg))
            for key in missing:
                print(f"note: {key} is required to run: {key}=...", file=sys.stderr)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    flags = [token for token in rest if token not in set(original_overrides)]
    try:  # flags first, then overrides: Hydra's parser cannot read overrides on both sides of a flag
        _run_hydra(name, module, flags + list(args.overrides))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
