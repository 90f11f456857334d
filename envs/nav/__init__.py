"""Cross-embodiment navigation in MuJoCo: one task, several robots, one body-frame velocity command.

Importing this package registers `alloy/Nav-<Embodiment>-v0` for every robot. It is cheap: nothing is
compiled until an env is made.
"""

from __future__ import annotations

import gymnasium as gym

from envs.nav.embodiments import EMBODIMENTS, env_id_for
from envs.rendering import configure_headless_gl

configure_headless_gl()  # before anything here imports mujoco (also done by `import envs`, which runs first)

ENV_IDS: tuple[str, ...] = tuple(env_id_for(name) for name in EMBODIMENTS)

for _name, _env_id in zip(EMBODIMENTS, ENV_IDS):
    if _env_id not in gym.registry:
        gym.register(
            id=_env_id,
            entry_point="envs.nav.env:NavEnv",
            kwargs={"embodiment": _name},
        )

__all__ = ["EMBODIMENTS", "ENV_IDS"]
