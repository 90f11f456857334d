"""The settings of `alloy rl` (a light module: the CLI composes and checks configs without importing SB3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALGOS = ("ppo", "sac")
NO_BASE = "none"


@dataclass
class PPOConfig:
    """SB3 PPO settings (COMPASS used lr 1e-4, clip 0.2, entropy 0.01, gamma 0.99, lambda 0.95, 32 envs x 256)."""

    n_steps: int = 128  # per env per rollout
    batch_size: int = 512
    n_epochs: int = 10
    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float = 0.0  # 0: none
    log_std_init: float = -1.0  # initial residual std exp(-1) = 0.37 before residual.scale


@dataclass
class SACConfig:
    """SB3 SAC settings."""

    buffer_size: int = 200_000
    learning_starts: int = 2000
    batch_size: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    train_freq: int = 1  # env steps (per env) between updates
    gradient_steps: int = 1
    ent_coef: str = "auto_0.1"
    log_std_init: float = -3.0


@dataclass
class NetArch:
    actor: list[int] = field(default_factory=lambda: [256, 256])
    critic: list[int] = field(default_factory=lambda: [256, 256])


@dataclass
class ResidualConfig:
    scale: float = 1.0  # executed action = clip(base + scale * residual); residual in [-1, 1]
    obs_keys: list[str] = field(default_factory=list)  # what the residual sees besides the base action; empty: all


@dataclass
class RLConfig:
    """The `alloy rl` settings that shape training (the command's schema adds the CLI's own keys)."""

    base: str = ""  # checkpoint directory of the frozen base, or `none` (plain RL from scratch, for comparison)
    env: str = ""
    algo: str = "ppo"  # ppo | sac
    total_steps: int = 300_000  # env steps (all envs together)
    num_envs: int = 16  # more envs amortise the base's per-call cost (it acts for all envs at once)
    workers: int | None = None  # None: one group of envs per core (this process steps the first)
    residual: ResidualConfig = field(default_factory=ResidualConfig)
    net: NetArch = field(default_factory=NetArch)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    critic_warmup_steps: int = 0  # env steps during which only the critic learns (the actor is frozen)
    explore_ramp_steps: int = 0  # progressive exploration: P(use residual) = min(1, t / this); 0: always
    randomize: dict[str, list[float]] = field(default_factory=dict)  # per-episode ranges of physical parameters
    reward: dict[str, float] = field(default_factory=dict)  # reward weights (nav: progress, success, collision, time)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_every: int = 50_000  # env steps; 0: only at the end
    eval_episodes: int = 50
    eval_num_envs: int = 8
    eval_env_kwargs: dict[str, Any] = field(default_factory=dict)  # the robot evaluations run on (default: nominal)
    ckpt_every: int = 50_000
    seed: int = 0
    device: str = "auto"
    progress: bool = True
