"""Compose and validate a command's config before any work starts.

Every command's composed config is checked against its schema (a dataclass), so that a typo in a key, an unknown
group option or a value of the wrong type ends in one line that names the bad key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from policies.config_fields import explain, num, rule_of, violation


class ConfigError(ValueError):
    """A config that does not compose or does not match its schema; the message is one line."""


# Hydra configs holding a schema's defaults, which a primary config composes under a group before the group's
# option (configs/train.yaml: `- net_defaults@policy` then `- policy: dit`), so that the schema is the one source of
# defaults, each option's file holds only what makes it that choice, `--cfg job` shows every value and any key can
# be overridden. Plain (untyped) configs: composing stays as loose as with YAML and `validate` reports bad keys.
def _schema_defaults() -> dict[str, type]:
    from distill.config import DistillConfig
    from policies.config import DiffusionConfig, NetConfig, SchemeConfig
    from training.rl.config import RLConfig

    return {"net_defaults": NetConfig, "diffusion_defaults": DiffusionConfig, "scheme_defaults": SchemeConfig,
            "rl_defaults": RLConfig, "distill_defaults": DistillConfig}


def _register_schema_defaults() -> None:
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, config_cls in _schema_defaults().items():
        store.store(name=name, node=dataclasses.asdict(config_cls()))


_register_schema_defaults()


# Plain keys that share their name with a config group (eval's `policy=<checkpoint>` beside train's `policy=dit`)
# travel through composition under this node, because Hydra reads `policy=...` as a group choice.
VALUES_NODE = "cli_values"


def route_value_overrides(overrides: list[str], value_keys: tuple[str, ...]) -> list[str]:
    """Rewrite `key=value` for each of a command's value keys into `+cli_values.key=value`."""
    routed = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and key.lstrip("+") in value_keys:
            override = f"+{VALUES_NODE}.{key.lstrip('+')}={value}"
        routed.append(override)
    return routed


def _apply_routed_values(cfg: DictConfig) -> DictConfig:
    if VALUES_NODE in cfg:
        with open_dict(cfg):
            for key, value in cfg[VALUES_NODE].items():
                cfg[key] = value
            del cfg[VALUES_NODE]
    return cfg


@dataclasses.dataclass
class BaseConfig:
    """Keys every command has (from `configs/_base.yaml`)."""

    seed: int = num(0, lo=0)
    device: str = "auto"
    run_dir: str = ""


def schema_of(config_cls: type) -> type:
    """The command's schema with the base keys added when the command's dataclass does not inherit them."""
    if issubclass(config_cls, BaseConfig):
        return config_cls
    return dataclasses.make_dataclass(config_cls.__name__, [], bases=(config_cls, BaseConfig))


def _valid_keys(schema: Any, full_key: str) -> list[str]:
    """Keys allowed at the parent of `full_key` in the schema, to list them in an error."""
    node = schema
    parts = [p for p in full_key.replace("]", "").replace("[", ".").split(".") if p][:-1]
    for part in parts:
        if not isinstance(node, DictConfig) or part not in node:
            return []
        node = node._get_node(part)
        if not isinstance(node, (DictConfig, ListConfig)):
            return []
    if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():
        return sorted(str(k) for k in node.keys())
    return []


@functools.cache
def _structured(config_cls: type) -> tuple[type, DictConfig]:
    """The command's schema class and its OmegaConf form, built once (merging copies it, never changes it)."""
    schema_cls = schema_of(config_cls)
    return schema_cls, OmegaConf.structured(schema_cls)


def validate(cfg: DictConfig, config_cls: type) -> DictConfig:
    """Merge the composed config into the typed schema; raise ConfigError with one line on any mismatch."""
    schema_cls, schema = _structured(config_cls)
    cfg = _apply_routed_values(cfg)
    try:
        merged = OmegaConf.merge(schema, cfg)
    except ConfigKeyError as e:
        key = e.full_key or str(e.key)
        valid = _valid_keys(schema, key)
        parent = key.rpartition(".")[0]
        where = f" under '{parent}'" if parent else ""
        hint = f"; valid keys{where}: {', '.join(valid)}" if valid else ""
        raise ConfigError(f"unknown config key '{key}'{hint}") from None
    except ValidationError as e:
        key = e.full_key or str(e.key)
        raise ConfigError(f"invalid value for '{key}': {e.msg.splitlines()[0]}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config: {str(e).splitlines()[0]}") from None
    missing = sorted(OmegaConf.missing_keys(merged) | _required_left_empty(merged, schema_cls))
    if missing:
        raise ConfigError(f"missing required value '{missing[0]}'; set it on the command line: {missing[0]}=...")
    check_ranges(merged, schema_cls)
    return merged


def _required_left_empty(cfg: DictConfig, schema_cls: type) -> set[str]:
    """Top-level keys the command requires (default `???`) that composed to an empty string: a `???` in a config
    file does not override the empty default a shared group (e.g. `rl_defaults`) put there first."""
    from omegaconf import MISSING

    return {f.name for f in dataclasses.fields(schema_cls)
            if f.default is MISSING and f.name in cfg and OmegaConf.select(cfg, f.name, throw_on_missing=False) == ""}


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass a field holds, directly, as Optional[...] or as the items of a list; None for plain values."""
    if dataclasses.is_dataclass(hint):
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (list, typing.Union, types.UnionType) and len(args) == 1 and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def mapping_hint(message: str, config_cls: type) -> str:
    """An unknown key one level inside a free-form mapping of the schema (`reward`, `randomize`, `env_kwargs`, ...)
    is a new entry, which Hydra takes only with a leading `+`: say so instead of listing the keys it has now."""
    key = _bad_key(message)
    if key is None or "." not in key:
        return message
    *path, leaf = key.split(".")
    cls: Any = schema_of(config_cls)
    hint: Any = None
    for part in path:
        if not dataclasses.is_dataclass(cls):
            return message
        hint = typing.get_type_hints(cls).get(part)
        cls = _dataclass_in(hint) if hint is not None else None
    if typing.get_origin(hint) is not dict:
        return message
    return (f"unknown config key '{key}': '{'.'.join(path)}' is a mapping without a '{leaf}' entry yet; "
            f"add one with '+{key}=<value>'")


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


@functools.cache
def _type_hints(config_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(config_cls)


def check_ranges(cfg: Any, config_cls: type, prefix: str = "") -> None:
    """Check every value of `cfg` against the rule its schema field carries (policies.config_fields), through nested
    dataclasses and lists of them; raise ConfigError naming the key, the value and what is allowed."""
    hints = _type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if f.name not in cfg:
            continue
        key, rule, inner = f"{prefix}{f.name}", rule_of(f), _dataclass_in(hints.get(f.name))
        try:
            value = cfg[f.name]
            plain = _plain(value) if rule is not None else None
        except OmegaConfBaseException:
            continue  # an interpolation resolved only at run time (hydra:...): checked when it runs
        if rule is not None:
            bad = violation(plain, rule, key)
            if bad is not None:
                raise ConfigError(f"invalid value for '{bad[0]}': {bad[1]!r}; {explain(rule, bad[1])}")
        if inner is not None and isinstance(value, DictConfig):
            check_ranges(value, inner, f"{key}.")
        elif inner is not None and isinstance(value, ListConfig):
            for i, item in enumerate(value):
                if isinstance(item, DictConfig):
                    check_ranges(item, inner, f"{key}[{i}].")


def compose(command: str, overrides: list[str], config_dir: Path) -> DictConfig:
    """Compose `configs/<command>.yaml` with overrides through Hydra, turning its errors into one-line ConfigErrors."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3", job_name=command):
            return hydra_compose(config_name=command, overrides=overrides)
    except MissingConfigException as e:
        raise ConfigError(_missing_option_message(e)) from None
    except OverrideParseException as e:
        raise ConfigError(f"cannot parse override: {str(e).splitlines()[0]}") from None
    except (HydraException, OmegaConfBaseException) as e:
        message = _composition_message(e)
    finally:
        GlobalHydra.instance().clear()
    key = _bad_key(message)
    if key is not None and overrides:
        try:  # list the valid keys at the bad key's parent, as composed without the user's overrides
            base = compose(command, [], config_dir)
        except ConfigError:
            base = None
        valid = _valid_keys(base, key) if base is not None else []
        if valid:
            parent = key.rpartition(".")[0]
            where = f" under '{parent}'" if parent else ""
            message = f"unknown config key '{key}'; valid keys{where}: {', '.join(valid)}"
    raise ConfigError(message)


def _bad_key(message: str) -> str | None:
    if message.startswith("unknown config key '"):
        return message.split("'")[1]
    return None


def _missing_option_message(e: Exception) -> str:
    missing = getattr(e, "missing_cfg_file", None) or ""
    options = list(getattr(e, "options", None) or [])
    group, _, choice = missing.rpartition("/")
    if group and options:
        return f"unknown option '{group}={choice}'; valid choices for '{group}': {', '.join(sorted(options))}"
    if group:
        return f"unknown config group or option '{missing}'"
    return str(e).splitlines()[0]


def _composition_message(e: Exception) -> str:
    """Find the OmegaConf error under a Hydra composition error and describe the bad key in one line."""
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and getattr(cause, "full_key", None):
            return f"unknown config key '{cause.full_key}' (run with --cfg job to see the valid keys)"
        if isinstance(cause, MissingMandatoryValue):
            return f"missing required value: {str(cause).splitlines()[0]}"
        cause = cause.__cause__ or cause.__context__
    text = str(e)
    for line in text.splitlines():
        if "Key '" in line and "not in" in line:
            key = line.split("Key '")[1].split("'")[0]
            first = text.splitlines()[0]
            full = first.split("'")[1] if first.count("'") >= 2 else key
            return f"unknown config key '{full}' (run with --cfg job to see the valid keys)"
    return text.splitlines()[0] if text else type(e).__name__
