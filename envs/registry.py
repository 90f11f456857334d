"""One entry point to make any alloy env by id, with a clear error for unknown ids."""

from __future__ import annotations

import gymnasium as gym

from envs import nav
from envs.errors import EnvError

METAWORLD_PREFIX = "metaworld/"


def list_env_ids() -> list[str]:
    """All ids `make_env` accepts: registered nav ids, then `metaworld/<task>` for every v3 task."""
    from envs import metaworld

    return list(nav.ENV_IDS) + [METAWORLD_PREFIX + t for t in metaworld.TASKS]


def make_env(env_id: str, **kwargs) -> gym.Env:
    """Make one env by id: `alloy/Nav-<Embodiment>-v0`, `metaworld/<task>`, or any registered Gymnasium id."""
    if env_id.startswith(METAWORLD_PREFIX):
        from envs import metaworld

        task = env_id[len(METAWORLD_PREFIX):]
        if task not in metaworld.TASKS:
            raise EnvError(
                f"unknown Meta-World task {task!r}; known tasks: {', '.join(metaworld.TASKS)}"
            )
        return metaworld.make_metaworld_env(task, **kwargs)
    if env_id not in nav.ENV_IDS and env_id in gym.registry:
        return gym.make(env_id, **kwargs)  # any other registered Gymnasium env (it has no teacher)
    if env_id not in nav.ENV_IDS:
        raise EnvError(f"unknown env id {env_id!r}; known ids: {', '.join(list_env_ids())}")
    return gym.make(env_id, **kwargs)
