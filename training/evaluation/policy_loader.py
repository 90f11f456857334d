"""Turn a policy spec (`policy=` of `alloy eval`, `teacher=` of `alloy collect`) into something with `reset`/`act`,
and check it fits the env.

One registry of policy loaders, used by evaluation, collection and every other place that loads a policy from a path.
`load_policy` dispatches on the spec:

1. the word `teacher`: the env's own privileged teacher;
2. a checkpoint directory (`config.yaml` + `model.safetensors`): by the kind of checkpoint, i.e. a top-level section
   of its config.yaml that a package registered with `register_checkpoint_kind` (the consistency student's
   `consistency:` section is registered by `distill` when it is imported); a plain `Policy.from_pretrained`
   checkpoint otherwise;
3. any other format added with `register_loader(kind, matches, load)`, matched on the path: exported artifacts
   (`policy.json`, run by `policies.runtime.Runtime`) are registered here.

A package registers its kinds itself, on import, so that nothing here imports a package above `training`
(docs/ARCHITECTURE.md). Every loader is called as `load(path, device, **sampling)`: `path` a `Path`, `device` the
string the user gave (`auto`, `cpu`, `cuda[:i]`; `training.runtime.resolve_device` turns it into a torch device) and
`sampling` holding `action_horizon` / `inference_steps` when they are set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.errors import TrainingError
from training.evaluation.teacher import TeacherPolicy

Matcher = Callable[[Path], bool]
Loader = Callable[..., Any]  # load(path, device, **sampling): sampling holds action_horizon / inference_steps when set

# Checkpoint sections whose loader a package above `training` registers, named here only so that loading one without
# that package imported says which package to import (a string, not an import).
SECTION_PACKAGES: dict[str, str] = {"consistency": "distill"}


def _is_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file() and (path / "model.safetensors").is_file()


def _config_sections(path: Path) -> set[str]:
    import yaml

    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return set()  # Policy.from_pretrained reports what is wrong with the file
    return set(config) if isinstance(config, dict) else set()


def _load_plain_checkpoint(path: Path, device: str, **sampling: Any) -> Any:
    from policies import Policy
    from training.runtime import resolve_device

    return Policy.from_pretrained(path, device=resolve_device(device), **sampling)


# config.yaml section -> (kind, loader), in registration order: the first registered section present wins.
_CHECKPOINT_KINDS: dict[str, tuple[str, Loader]] = {}


def _load_checkpoint(path: Path, device: str, **sampling: Any) -> Any:
    sections = _config_sections(path)
    for section, (_kind, load) in _CHECKPOINT_KINDS.items():
        if section in sections:
            return load(path, device, **sampling)
    missing = sorted(s for s in sections if s in SECTION_PACKAGES)
    if missing:
        section = missing[0]
        package = SECTION_PACKAGES[section]
        raise TrainingError(
            f"{str(path)!r} is a {package} checkpoint (its config.yaml has a '{section}:' section) and no loader "
            f"for it is registered; `import {package}` before load_policy (the alloy CLI does) to register it"
        )
    return _load_plain_checkpoint(path, device, **sampling)


_LOADERS: list[tuple[str, Matcher, Loader]] = [("checkpoint", _is_checkpoint, _load_checkpoint)]


def _load_residual(path: Path, device: str, **sampling: Any) -> Any:
    """A residual specialist (`alloy rl`): its base is loaded through this registry, so any kind can be a base;
    sampling settings apply to the base."""
    from policies.residual import ResidualPolicy
    from training.runtime import resolve_device

    return ResidualPolicy.from_pretrained(path, device=resolve_device(device),
                                         load_base=lambda base_dir: load_policy(base_dir, device, **sampling))


def register_loader(kind: str, matches: Matcher, load: Loader) -> None:
    """Teach `load_policy` a new format matched on the path (e.g. an exported artifact): `matches(path)` says whether
    `path` is one, `load(path, device, **sampling)` loads it. Registering a `kind` again replaces it; among different
    kinds, earlier registrations win ties (checkpoint directories always come first)."""
    if kind == "checkpoint":
        raise TrainingError("the kind 'checkpoint' is built in; add a kind of checkpoint with register_checkpoint_kind")
    _LOADERS[:] = [entry for entry in _LOADERS if entry[0] != kind] + [(kind, matches, load)]


def register_checkpoint_kind(section: str, load: Loader, kind: str | None = None) -> None:
    """Teach `load_policy` a kind of checkpoint directory: one whose config.yaml has the top-level `section` (e.g.
    `consistency:`) is loaded with `load(path, device, **sampling)` instead of `Policy.from_pretrained`. `kind`
    names it in messages (default: the section). Registering a section again replaces its loader."""
    _CHECKPOINT_KINDS.pop(section, None)
    _CHECKPOINT_KINDS[section] = (kind or section, load)


register_checkpoint_kind("residual", _load_residual)


def _is_artifact(path: Path) -> bool:
    from policies.runtime import is_artifact

    return is_artifact(path)


def _load_artifact(path: Path, device: str, **sampling: Any) -> Any:
    """An exported artifact runs in the torch-free runtime (its sampling settings were fixed at export)."""
    if sampling:
        raise TrainingError(f"{' and '.join(sampling)} were fixed when {str(path)!r} was exported; export the "
                            f"checkpoint again with the settings you want")
    from policies.runtime import Runtime

    return Runtime(path)


register_loader("artifact", _is_artifact, _load_artifact)


def registered_kinds() -> list[str]:
    """Every kind `load_policy` accepts now, for messages."""
    return (["teacher", "checkpoint"] + [k for k, _ in _CHECKPOINT_KINDS.values()]
            + [k for k, _, _ in _LOADERS if k != "checkpoint"])


def load_policy(spec: str | Path, device: str = "auto", action_horizon: int | None = None,
                inference_steps: int | None = None) -> Any:
    """The policy named by `spec`: `teacher`, a checkpoint directory (of any registered kind), or a registered
    format, ready to act (checkpoints load in eval mode). `action_horizon` / `inference_steps` replace a
    checkpoint's saved sampling settings (None keeps them). Anything a user can get wrong raises one line
    (TrainingError, or the PolicyError / DistillError of the loader)."""
    sampling = {k: v for k, v in (("action_horizon", action_horizon), ("inference_steps", inference_steps))
                if v is not None}
    if str(spec) == "teacher":
        if sampling:
            raise TrainingError(f"{' and '.join(sampling)} apply to trained policies, not to the teacher; "
                                f"drop them or pass policy=<checkpoint dir>")
        return TeacherPolicy()
    from policies.atomic import recover_dir

    # a write killed between its two renames left only `.<name>.old`: rolled back first (read where it is on
    # read-only storage)
    path = recover_dir(Path(spec).expanduser())
    if not path.exists():
        raise TrainingError(f"policy {str(spec)!r} does not exist; pass `teacher` or a checkpoint directory")
    for _kind, matches, load in _LOADERS:
        if matches(path):
            try:
                return load(path, str(device), **sampling)
            except OSError as e:
                raise TrainingError(f"cannot read policy {str(spec)!r} ({type(e).__name__}: {e}); "
                                    f"check the path and its permissions") from None
    if any(path.glob("*.onnx")) or path.suffix == ".onnx":
        raise TrainingError(f"{str(spec)!r} holds ONNX files but no policy.json: pass the artifact directory written "
                            f"by `alloy export`")
    raise TrainingError(
        f"{str(spec)!r} is not a policy alloy can load (a checkpoint directory holds config.yaml and "
        f"model.safetensors); accepted: {', '.join(registered_kinds())}"
    )


def describe_policy(policy: Any, spec: str | None = None) -> str:
    """A short name for reports."""
    if spec is not None:
        return str(spec)
    return getattr(policy, "name", None) or type(policy).__name__


def _env_obs_shapes(observation_space) -> dict[str, tuple]:
    spaces = getattr(observation_space, "spaces", None)
    if isinstance(spaces, dict):
        return {k: tuple(s.shape) for k, s in spaces.items()}
    return {"obs": tuple(observation_space.shape)}


def _fmt(shapes: dict[str, tuple]) -> str:
    return "{" + ", ".join(f"{k}: {tuple(v)}" for k, v in shapes.items()) + "}"


def check_policy_matches_env(policy: Any, observation_space, action_space, env_id: str) -> None:
    """Raise one line naming both sides when the policy's observation or action spec differs from the env's."""
    obs_spec = getattr(policy, "obs_spec", None)
    action_dim = getattr(policy, "action_dim", None)
    env_obs = _env_obs_shapes(observation_space)
    env_action = tuple(action_space.shape)
    problems = []
    if obs_spec:
        want = {k: tuple(v) for k, v in dict(obs_spec).items()}
        if any(k not in env_obs or env_obs[k] != shape for k, shape in want.items()):
            problems.append(f"the policy expects observation {_fmt(want)}, the env gives {_fmt(env_obs)}")
    if action_dim is not None and env_action != (int(action_dim),):
        problems.append(f"the policy expects action ({int(action_dim)},), the env takes {env_action}")
    if problems:
        raise TrainingError(
            f"policy does not fit env {env_id!r}: {'; '.join(problems)}; evaluate it on an env like the one it was trained on"
        )
