"""Turn what a user types after `policy=` into something with `reset`/`act`, and check it fits the env.

`load_policy` dispatches on the spec: the word `teacher`, a checkpoint directory (`config.yaml` +
`model.safetensors`), or any format added with `register_loader` (the export runtime plugs its artifacts in
here, so evaluation code never changes when a new kind of policy appears).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.errors import TrainingError
from training.evaluation.teacher import TeacherPolicy

Matcher = Callable[[Path], bool]
Loader = Callable[..., Any]  # load(path, device, **sampling): sampling holds action_horizon / inference_steps when set


def _is_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file() and (path / "model.safetensors").is_file()


def _config_sections(path: Path) -> set[str]:
    import yaml

    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return set()  # Policy.from_pretrained reports what is wrong with the file
    return set(config) if isinstance(config, dict) else set()


def _load_checkpoint(path: Path, device: str, **sampling: Any) -> Any:
    from policies import Policy
    from training.runtime import resolve_device

    if "consistency" in _config_sections(path):  # a distilled student samples with its own few-step sampler
        from distill.consistency import load_student

        return load_student(path, device=resolve_device(device), **sampling)
    return Policy.from_pretrained(path, device=resolve_device(device), **sampling)


_LOADERS: list[tuple[str, Matcher, Loader]] = [("checkpoint", _is_checkpoint, _load_checkpoint)]


def register_loader(kind: str, matches: Matcher, load: Loader) -> None:
    """Teach `load_policy` a new kind of policy (e.g. an exported artifact); earlier registrations win ties."""
    _LOADERS[:] = [entry for entry in _LOADERS if entry[0] != kind] + [(kind, matches, load)]


def load_policy(spec: str | Path, device: str = "auto", action_horizon: int | None = None,
                inference_steps: int | None = None) -> Any:
    """The policy named by `spec`: `teacher`, a checkpoint directory, or a registered artifact format.
    `action_horizon` / `inference_steps` replace a checkpoint's saved sampling settings (None keeps them)."""
    sampling = {k: v for k, v in (("action_horizon", action_horizon), ("inference_steps", inference_steps))
                if v is not None}
    if str(spec) == "teacher":
        if sampling:
            raise TrainingError(f"{' and '.join(sampling)} apply to trained policies, not to the teacher; "
                                f"drop them or pass policy=<checkpoint dir>")
        return TeacherPolicy()
    path = Path(spec).expanduser()
    if not path.exists():
        raise TrainingError(f"policy {str(spec)!r} does not exist; pass policy=teacher or a checkpoint directory")
    for _kind, matches, load in _LOADERS:
        if matches(path):
            return load(path, device, **sampling)
    if any(path.glob("*.onnx")) or path.suffix == ".onnx":
        raise TrainingError(
            f"{str(spec)!r} looks like an exported artifact, which this alloy cannot evaluate yet; "
            "evaluate the checkpoint directory it was exported from"
        )
    kinds = ", ".join(["teacher"] + [k for k, _, _ in _LOADERS])
    raise TrainingError(
        f"{str(spec)!r} is not a policy alloy can load (a checkpoint directory holds config.yaml and "
        f"model.safetensors); accepted: {kinds}"
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
