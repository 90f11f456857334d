"""`alloy export`: a checkpoint to a deployable artifact (ONNX and/or torch.export) with a torch-free runtime."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from omegaconf import MISSING, DictConfig

from policies.config_fields import choice, num

HELP = "export a policy (checkpoint, consistency student, residual specialist) to ONNX / torch.export with a spec"
# `policy=<checkpoint dir>` is a plain value here, although `policy` is also train's config group.
VALUE_KEYS = ("policy",)

log = logging.getLogger("alloy.export")


@dataclasses.dataclass
class Config:
    policy: str = MISSING  # checkpoint directory (any kind alloy eval takes, except the teacher and artifacts)
    format: str = choice("onnx", ("onnx", "pt2", "all"))
    out: str = ""  # artifact directory; empty: <run_dir>/artifact
    overwrite: bool = False  # replace an existing artifact at `out`
    check_steps: int = num(20, lo=0)  # control steps of the torch-vs-artifact parity check on random observations; 0: none
    check_batch: int = num(4, lo=1)  # envs of the parity check


def formats_of(value: str) -> tuple[str, ...]:
    from policies.errors import PolicyError
    from policies.export import FORMATS

    if value == "all":
        return FORMATS
    if value not in FORMATS:
        raise PolicyError(f"unknown format {value!r}; choose one of: {', '.join(FORMATS)}, all")
    return (value,)


def check(cfg: DictConfig) -> None:
    from policies.atomic import recover_dir
    from training.errors import TrainingError

    formats_of(cfg.format)
    if cfg.policy == "teacher" or not recover_dir(Path(cfg.policy).expanduser()).is_dir():
        raise TrainingError(f"policy {cfg.policy!r} is not a checkpoint directory; pass one written by alloy train, "
                            f"alloy rl or alloy distill")
    if cfg.check_steps < 0 or cfg.check_batch < 1:
        raise TrainingError("check_steps must be >= 0 and check_batch >= 1")
    if not cfg.out:
        return
    out, source = Path(cfg.out).expanduser().resolve(), Path(cfg.policy).expanduser().resolve()
    if out == source or source in out.parents or out in source.parents:
        raise TrainingError(f"out={cfg.out} would overlap the policy it exports ({cfg.policy}); choose another out=")
    if out.exists() and not cfg.overwrite:
        raise TrainingError(f"{cfg.out} already exists; pass overwrite=true to replace it or choose another out=")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "policy.json").is_file())):
        raise TrainingError(f"{cfg.out} exists and is not an exported artifact; overwrite=true replaces artifacts "
                            f"only: choose another out=")


def descriptor_layout(obs_spec) -> dict | None:
    """The embodiment descriptor's layout, for policies that see one (nav)."""
    if "embodiment" not in dict(obs_spec or {}):
        return None
    from envs.nav.embodiments import EMBODIMENTS, PARAM_HIGH, PARAM_NAMES, PARAM_UNITS

    fields = [f"is_{e}" for e in EMBODIMENTS] + [f"{p} [{PARAM_UNITS[p]}]" for p in PARAM_NAMES] + ["can_strafe"]
    return {"key": "embodiment", "fields": fields, "param_high": {p: PARAM_HIGH[p] for p in PARAM_NAMES}}


def random_observations(obs_spec, steps: int, batch: int, seed: int) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [{k: rng.uniform(-1, 1, (batch, *shape)).astype(np.float32) for k, shape in dict(obs_spec).items()}
            for _ in range(steps)]


def run(cfg: DictConfig) -> None:

    from policies.atomic import atomic_write_json
    from policies.export import export_policy, parity
    from policies.runtime import Runtime
    from training.evaluation import load_policy

    check(cfg)
    out = Path(cfg.out) if cfg.out else Path(cfg.run_dir) / "artifact"
    policy = load_policy(cfg.policy, "cpu")
    extra = {"source": {"checkpoint": str(Path(cfg.policy).resolve())}}
    layout = descriptor_layout(policy.obs_spec)
    if layout is not None:
        extra["embodiment"] = layout
    formats = formats_of(cfg.format)
    log.info("exporting %s as %s to %s", cfg.policy, ", ".join(formats), out)
    export_policy(policy, out, formats, extra=extra)
    result = {"policy": cfg.policy, "artifact": str(out), "formats": list(formats)}
    if cfg.check_steps:
        obs = random_observations(policy.obs_spec, cfg.check_steps, cfg.check_batch, cfg.seed)
        for backend in formats:
            diff = parity(load_policy(cfg.policy, "cpu"), Runtime(out, seed=cfg.seed, backend=backend), obs)
            result[f"max_abs_action_diff_{backend}"] = diff
            log.info("parity over %d steps x %d envs (%s): max |torch - artifact| = %.3g", cfg.check_steps,
                     cfg.check_batch, backend, diff)
    atomic_write_json(Path(cfg.run_dir) / "export.json", json.loads(json.dumps(result, default=float)))
    sizes = {p.name: p.stat().st_size for p in out.rglob("*") if p.is_file()}
    print(f"artifact: {out} ({len(sizes)} files, {sum(sizes.values()) / 1e6:.1f} MB)" + "".join(
        f"; parity {b}: {result[f'max_abs_action_diff_{b}']:.2g}" for b in formats if
        f"max_abs_action_diff_{b}" in result) + "; policy.json holds the spec; run it with policies.runtime.Runtime")

