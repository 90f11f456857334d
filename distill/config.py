"""The settings of `alloy distill` (a light module: the CLI composes and checks configs without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from policies.config_fields import choice, num, seq

METHODS = ("dagger", "offline")
OBJECTIVES = ("auto", "imitation", "mse", "kl", "taid")


@dataclass
class BetaSchedule:
    """DAgger's probability that the specialist (not the student) drives an episode, per round r = 0..rounds-1:
    `linear` falls from `start` to `end` at round `rounds_to_end` (0: the last round) and stays there;
    `exponential` is start * decay^r, floored at `end`. Round 0 is always driven by the specialists (there is no
    student yet)."""

    kind: str = choice("linear", ("linear", "exponential"))
    start: float = num(1.0, lo=0, hi=1)  # a probability
    end: float = num(0.0, lo=0, hi=1)
    rounds_to_end: int = num(0, lo=0, note="0: the last round")
    decay: float = num(0.5, lo=0, hi=1, lo_open=True)


@dataclass
class Variant:
    """A robot the generalist is evaluated on besides the nominal ones: `env` with physical parameters `kwargs`."""

    name: str = ""
    env: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    in_range: bool = True  # inside the randomisation ranges the student was trained on (reported apart)


@dataclass
class DistillConfig:
    """What shapes a distillation run (the command's schema adds the student's policy groups and `resume`)."""

    specialists: list[str] = field(default_factory=list)  # checkpoint dirs, or `<env id>=<dir>` to name the robot
    method: str = choice("dagger", METHODS)
    # auto (kl for a gaussian student, else imitation) | imitation | mse | kl | taid
    objective: str = choice("auto", OBJECTIVES)
    rounds: int = num(6, lo=1)  # DAgger rounds (offline collects the same number of episodes at once)
    episodes_per_round: int = num(16, lo=1)  # per robot
    steps_per_round: int = num(1500, lo=1)  # trainer steps per round (offline trains rounds * steps_per_round at once)
    beta: BetaSchedule = field(default_factory=BetaSchedule)
    noise_std: float = num(0.3, lo=0)  # offline: action noise of the noisy share of the specialists' episodes
    noisy_episodes: float = num(0.5, lo=0, hi=1)  # offline: share of episodes driven with noise (the rest deterministically)
    envs_per_robot: int = num(2, lo=1)
    workers: int | None = num(None, lo=1)  # None: one group of envs per core
    # env id -> parameter -> [low, high]; default: each specialist's own RL randomisation
    randomize: dict[str, dict[str, list[Any]]] = seq(dict, length=2, ordered=True)  # numbers, checked by the rule
    label_std_floor: float = num(0.05, lo=0)  # teacher std floor (action units) for deterministic labellers (the base)
    eval_episodes: int = num(100, lo=1)  # final evaluation per robot and per variant
    eval_num_envs: int = num(8, lo=1)
    round_eval_episodes: int = num(0, lo=0)  # per robot after each round (a learning curve); 0: none
    variants: list[Variant] = field(default_factory=list)
    compare: bool = True  # also evaluate the base and each specialist on its robot, for the report
    seed: int = num(0, lo=0)
    device: str = "auto"
    # torch threads on CPU; 0: every core this process may use (give 1 to each of two runs that share two cores:
    # OpenMP threads spinning on a core another process needs slow both down badly)
    threads: int = num(0, lo=0, note="0: every core")
    progress: bool = True
