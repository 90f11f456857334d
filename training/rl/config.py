"""The settings of `alloy rl` (a light module: the CLI composes and checks configs without importing SB3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from policies.config_fields import choice, num, seq

ALGOS = ("ppo", "sac")
NO_BASE = "none"


@dataclass
class PPOConfig:
    """SB3 PPO settings (COMPASS used lr 1e-4, clip 0.2, entropy 0.01, gamma 0.99, lambda 0.95, 32 envs x 256)."""

    n_steps: int = num(128, lo=1)  # per env per rollout
    batch_size: int = num(512, lo=1)
    n_epochs: int = num(10, lo=1)
    lr: float = num(3e-4, lo=0, lo_open=True)
    # linear: the learning rate falls linearly from `lr` to 0 over total_steps (a resumed run continues the same
    # line), so the policy settles at the end instead of oscillating around its best
    lr_schedule: str = choice("constant", ("constant", "linear"))
    gamma: float = num(0.99, lo=0, hi=1)  # discount
    gae_lambda: float = num(0.95, lo=0, hi=1)
    clip_range: float = num(0.2, lo=0, lo_open=True)
    ent_coef: float = num(0.0, lo=0)
    vf_coef: float = num(0.5, lo=0)
    max_grad_norm: float = num(0.5, lo=0, lo_open=True)
    target_kl: float = num(0.0, lo=0, note="0: none")
    log_std_init: float = num(-1.0)  # initial residual std exp(-1) = 0.37 before residual.scale
    # generalised state-dependent exploration (Raffin et al. 2022): noise that stays the same for sde_sample_freq
    # steps, so a robot whose acceleration limits filter out step-to-step noise still explores; its std is
    # (features^2 @ exp(log_std)^2)^0.5, about sqrt(width / 4) times exp(log_std_init) at the start
    use_sde: bool = False
    sde_sample_freq: int = num(8, lo=-1, note="-1: once per rollout")


@dataclass
class SACConfig:
    """SB3 SAC settings."""

    buffer_size: int = num(200_000, lo=1)
    learning_starts: int = num(2000, lo=0)
    batch_size: int = num(256, lo=1)
    lr: float = num(3e-4, lo=0, lo_open=True)
    gamma: float = num(0.99, lo=0, hi=1)
    tau: float = num(0.005, lo=0, hi=1, lo_open=True)  # soft target update rate
    train_freq: int = num(1, lo=1)  # env steps (per env) between updates
    gradient_steps: int = num(1, lo=1)
    ent_coef: str = "auto_0.1"
    log_std_init: float = num(-3.0)


@dataclass
class NetArch:
    actor: list[int] = seq(lambda: [256, 256], lo=1, integer=True)  # hidden layer widths
    critic: list[int] = seq(lambda: [256, 256], lo=1, integer=True)


@dataclass
class ResidualConfig:
    scale: float = num(1.0, lo=0, lo_open=True)  # executed action = clip(base + scale * residual); residual in [-1, 1]
    obs_keys: list[str] = field(default_factory=list)  # what the residual sees besides the base action; empty: all


@dataclass
class RLConfig:
    """The `alloy rl` settings that shape training (the command's schema adds the CLI's own keys)."""

    base: str = ""  # checkpoint directory of the frozen base, or `none` (plain RL from scratch, for comparison)
    env: str = ""
    algo: str = choice("ppo", ALGOS)
    total_steps: int = num(300_000, lo=1)  # env steps (all envs together)
    num_envs: int = num(16, lo=1)  # more envs amortise the base's per-call cost (it acts for all envs at once)
    workers: int | None = num(None, lo=1)  # None: one group of envs per core (this process steps the first)
    # the base acts in each env group's own process, in parallel with the others (on the CPU); false: here, once per
    # step for every env (always so on a GPU, where one batched call is cheapest)
    base_in_workers: bool = True
    residual: ResidualConfig = field(default_factory=ResidualConfig)
    net: NetArch = field(default_factory=NetArch)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    normalize: bool = True  # running normalisation of observations and rewards (SB3's VecNormalize); the
    #                          observation statistics are frozen into the specialist
    # asymmetric critic: the critic also sees what only the simulator knows (the env's info['privileged']; nav: the
    # obstacle-free distance to the goal, the direction it falls fastest, elapsed time), the actor and so the
    # specialist do not
    critic_privileged: bool = False
    critic_warmup_steps: int = num(0, lo=0)  # env steps during which only the critic learns (the actor is frozen)
    explore_ramp_steps: int = num(0, lo=0)  # progressive exploration: P(use residual) = min(1, t / this); 0: always
    # per-episode ranges [low, high] of physical parameters
    randomize: dict[str, list[Any]] = seq(dict, length=2, ordered=True)  # numbers (ints too), checked by the rule
    reward: dict[str, float] = seq(dict)  # reward weights (nav: progress, success, collision, time)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_every: int = num(50_000, lo=0, note="0: only at the end")  # env steps
    eval_episodes: int = num(50, lo=1)
    eval_num_envs: int = num(8, lo=1)
    eval_env_kwargs: dict[str, Any] = field(default_factory=dict)  # the robot evaluations run on (default: nominal)
    ckpt_every: int = num(50_000, lo=0, note="0: only at the end")
    seed: int = num(0, lo=0)
    device: str = "auto"
    progress: bool = True
