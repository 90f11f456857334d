"""The settings of `alloy distill` (a light module: the CLI composes and checks configs without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METHODS = ("dagger", "offline")
OBJECTIVES = ("auto", "imitation", "mse", "kl", "taid")


@dataclass
class BetaSchedule:
    """DAgger's probability that the specialist (not the student) drives an episode, per round r = 0..rounds-1:
    `linear` falls from `start` to `end` at round `rounds_to_end` (0: the last round) and stays there;
    `exponential` is start * decay^r, floored at `end`. Round 0 is always driven by the specialists (there is no
    student yet)."""

    kind: str = "linear"  # linear | exponential
    start: float = 1.0
    end: float = 0.0
    rounds_to_end: int = 0
    decay: float = 0.5


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
    method: str = "dagger"  # dagger | offline
    objective: str = "auto"  # auto (kl for a gaussian student, else imitation) | imitation | mse | kl | taid
    rounds: int = 6  # DAgger rounds (offline collects the same number of episodes at once)
    episodes_per_round: int = 16  # per robot
    steps_per_round: int = 1500  # trainer steps per round (offline trains rounds * steps_per_round at once)
    beta: BetaSchedule = field(default_factory=BetaSchedule)
    noise_std: float = 0.3  # offline: action noise of the noisy share of the specialists' episodes
    noisy_episodes: float = 0.5  # offline: share of episodes driven with noise (the rest deterministically)
    envs_per_robot: int = 2
    workers: int | None = None  # None: one group of envs per core
    randomize: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # env id -> ranges; default: each
    #                                                                        specialist's own RL randomisation
    label_std_floor: float = 0.05  # teacher std floor (action units) for deterministic labellers (the base)
    eval_episodes: int = 100  # final evaluation per robot and per variant
    eval_num_envs: int = 8
    round_eval_episodes: int = 0  # per robot after each round (a learning curve); 0: none
    variants: list[Variant] = field(default_factory=list)
    compare: bool = True  # also evaluate the base and each specialist on its robot, for the report
    seed: int = 0
    device: str = "auto"
    progress: bool = True
