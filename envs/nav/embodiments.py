"""The robots of the navigation suite and their physical parameters, with validated ranges.

Every parameter is a constructor kwarg of the env and can also be randomised per episode within a
sub-range, so the tables here are the single place that says what a valid robot is. Parameters that
do not apply to a robot (a holonomic disc has no wheel base) have the range (0, 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from envs.errors import EnvError

EMBODIMENTS: tuple[str, ...] = ("holonomic", "diffdrive", "ackermann", "skidsteer")

# Order of the physical parameters in the `embodiment` observation (after the one-hot id).
PARAM_NAMES: tuple[str, ...] = (
    "mass",
    "wheel_base",
    "max_speed",
    "max_accel",
    "steering_limit",
    "max_yaw_rate",
)
PARAM_UNITS = {
    "mass": "kg",
    "wheel_base": "m",
    "max_speed": "m/s",
    "max_accel": "m/s^2",
    "steering_limit": "rad",
    "max_yaw_rate": "rad/s",
}


@dataclass(frozen=True)
class EmbodimentSpec:
    """What a robot is: its scene file, whether it can strafe, default parameters and valid ranges."""

    name: str
    scene: str
    can_strafe: bool
    defaults: dict[str, float]
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def env_id(self) -> str:
        return env_id_for(self.name)


SPECS: dict[str, EmbodimentSpec] = {
    "holonomic": EmbodimentSpec(
        name="holonomic",
        scene="nav/holonomic.xml",
        can_strafe=True,
        defaults=dict(mass=10.0, wheel_base=0.0, max_speed=1.0, max_accel=2.0,
                      steering_limit=0.0, max_yaw_rate=2.0),
        ranges=dict(mass=(2.0, 40.0), wheel_base=(0.0, 0.0), max_speed=(0.2, 2.0),
                    max_accel=(0.2, 5.0), steering_limit=(0.0, 0.0), max_yaw_rate=(0.5, 4.0)),
    ),
    "diffdrive": EmbodimentSpec(
        name="diffdrive",
        scene="nav/diffdrive.xml",
        can_strafe=False,
        defaults=dict(mass=8.1, wheel_base=0.34, max_speed=0.8, max_accel=1.5,
                      steering_limit=0.0, max_yaw_rate=2.5),
        ranges=dict(mass=(3.0, 30.0), wheel_base=(0.24, 0.36), max_speed=(0.2, 1.5),
                    max_accel=(0.2, 4.0), steering_limit=(0.0, 0.0), max_yaw_rate=(0.5, 5.0)),
    ),
    "ackermann": EmbodimentSpec(
        name="ackermann",
        scene="nav/ackermann.xml",
        can_strafe=False,
        defaults=dict(mass=6.3, wheel_base=0.32, max_speed=1.0, max_accel=2.0,
                      steering_limit=0.5, max_yaw_rate=1.5),
        ranges=dict(mass=(3.0, 20.0), wheel_base=(0.24, 0.38), max_speed=(0.2, 2.0),
                    max_accel=(0.2, 4.0), steering_limit=(0.2, 0.7), max_yaw_rate=(0.5, 3.0)),
    ),
    "skidsteer": EmbodimentSpec(
        name="skidsteer",
        scene="nav/skidsteer.xml",
        can_strafe=False,
        defaults=dict(mass=30.0, wheel_base=0.4, max_speed=0.6, max_accel=0.5,
                      steering_limit=0.0, max_yaw_rate=1.0),
        ranges=dict(mass=(15.0, 60.0), wheel_base=(0.32, 0.40), max_speed=(0.2, 1.0),
                    max_accel=(0.1, 1.5), steering_limit=(0.0, 0.0), max_yaw_rate=(0.3, 2.0)),
    ),
}

# Upper bounds of each parameter over every robot: the `embodiment` observation space is the same
# for all robots so that one policy can be conditioned on any of them.
PARAM_HIGH: dict[str, float] = {
    p: max(spec.ranges[p][1] for spec in SPECS.values()) for p in PARAM_NAMES
}


def env_id_for(name: str) -> str:
    """Gymnasium id of a robot: `alloy/Nav-<Name>-v0`."""
    return f"alloy/Nav-{name.capitalize()}-v0"


def get_spec(name: str) -> EmbodimentSpec:
    if name not in SPECS:
        raise EnvError(f"unknown embodiment {name!r}; choose one of: {', '.join(EMBODIMENTS)}")
    return SPECS[name]


def _check_value(spec: EmbodimentSpec, key: str, value: float) -> float:
    lo, hi = spec.ranges[key]
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise EnvError(f"{spec.name}: {key} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value < lo - 1e-9 or value > hi + 1e-9:
        if lo == hi:
            raise EnvError(
                f"{spec.name}: {key}={value} does not apply to this robot (it is fixed at {lo}); "
                f"remove it"
            )
        raise EnvError(
            f"{spec.name}: {key}={value} is outside its valid range [{lo}, {hi}] "
            f"{PARAM_UNITS[key]}; pick a value inside it"
        )
    return value


def resolve_params(spec: EmbodimentSpec, overrides: dict[str, float | None]) -> dict[str, float]:
    """Defaults updated by the given values (None = default), each checked against its range."""
    params = dict(spec.defaults)
    for key, value in overrides.items():
        if key not in params:
            raise EnvError(f"unknown embodiment parameter {key!r}; known: {', '.join(PARAM_NAMES)}")
        if value is not None:
            params[key] = _check_value(spec, key, value)
    return params


def resolve_randomization(
    spec: EmbodimentSpec, randomize: dict[str, object] | None
) -> dict[str, tuple[float, float]]:
    """Per-episode sampling ranges `{param: (low, high)}`, each inside the parameter's valid range."""
    if not randomize:
        return {}
    if not isinstance(randomize, dict):
        raise EnvError(f"randomize must be a mapping param -> [low, high], got {type(randomize).__name__}")
    out: dict[str, tuple[float, float]] = {}
    for key, bounds in randomize.items():
        if key not in spec.defaults:
            raise EnvError(f"cannot randomise unknown parameter {key!r}; known: {', '.join(PARAM_NAMES)}")
        try:
            lo, hi = (float(b) for b in bounds)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise EnvError(f"randomize[{key!r}] must be a pair [low, high], got {bounds!r}") from None
        if lo > hi:
            raise EnvError(f"randomize[{key!r}] has low {lo} > high {hi}; swap them")
        out[key] = (_check_value(spec, key, lo), _check_value(spec, key, hi))
    return out
