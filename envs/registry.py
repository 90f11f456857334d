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


def has_teacher(env_id: str) -> bool:
    """Whether the env has alloy's privileged teacher (`teacher_action`): the nav robots and Meta-World tasks."""
    return env_id in nav.ENV_IDS or env_id.startswith(METAWORLD_PREFIX)


def is_gymnasium_id(env_id: str) -> bool:
    """A registered Gymnasium id that is not one of alloy's own envs (it has no teacher)."""
    return not has_teacher(env_id) and env_id in gym.registry


def check_box_spaces(env_id: str) -> None:
    """EnvError unless `env_id` makes an env with a Box action space and Box (or Dict of Box) observations."""
    try:
        env = gym.make(env_id)
    except Exception as e:  # noqa: BLE001 - a missing extra (box2d, ale-py, ...) is the user's to install
        raise EnvError(f"cannot make Gymnasium env {env_id!r}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    try:
        obs, act = env.observation_space, env.action_space
    finally:
        env.close()
    obs_spaces = list(obs.spaces.values()) if isinstance(obs, gym.spaces.Dict) else [obs]
    if not isinstance(act, gym.spaces.Box):
        raise EnvError(f"{env_id!r} has a {type(act).__name__} action space; alloy's policies act in Box (continuous) "
                       f"action spaces")
    if not all(isinstance(s, gym.spaces.Box) for s in obs_spaces):
        raise EnvError(f"{env_id!r} observes {type(obs).__name__}; alloy's policies read Box observations (or a Dict "
                       f"of Boxes)")


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
    if env_id not in nav.ENV_IDS and env_id in gym.registry:  # any other registered Gymnasium env (it has no teacher)
        env = gym.make(env_id, **kwargs)
        if isinstance(env.observation_space, gym.spaces.Box):
            from envs.wrappers import DictObservation

            env = DictObservation(env)  # policies and datasets read named observation arrays: {"obs": ...}
        return env
    if env_id not in nav.ENV_IDS:
        raise EnvError(f"unknown env id {env_id!r}; known ids: {', '.join(list_env_ids())}, or any registered "
                       f"Gymnasium id with Box spaces (e.g. Pendulum-v1)")
    return gym.make(env_id, **kwargs)
