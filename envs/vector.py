"""Vector envs for evaluation, collection and RL: many alloy envs stepped together, in processes or in-process.

Worker processes build their env through `envs.make_env` (or a caller's factory for envs alloy does not register),
so an unknown id or a bad env kwarg fails in the parent with `EnvError` before any worker starts. Workers ignore
Ctrl-C: the parent decides what to do with an interrupt (evaluation writes its partial report first) and closes
them. Rendering is headless: `MUJOCO_GL` is chosen before any worker starts (EGL with an NVIDIA driver, OSMesa
otherwise, a user's own choice or a display is kept) and is inherited by the workers.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from envs.errors import EnvError

EnvFactory = Callable[..., gym.Env]
Wrapper = Callable[[gym.Env], gym.Env]


def headless_gl_backend() -> str | None:
    """The `MUJOCO_GL` value offscreen rendering should use here; None keeps the default (a display exists)."""
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    if os.environ.get("DISPLAY"):
        return None
    return "egl" if os.path.exists("/proc/driver/nvidia/version") else "osmesa"


def _make_one(
    env_id: str,
    index: int,
    seed: int | None,
    render: bool,
    env_fn: EnvFactory | None,
    wrappers: Sequence[Wrapper],
    env_kwargs: dict[str, Any],
) -> gym.Env:
    """Build env `index` of a vector env; runs in the worker process (and once in the parent for the spaces)."""
    if multiprocessing.parent_process() is not None:
        # Only the parent reacts to Ctrl-C; a worker dying on SIGINT would lose the episodes in flight.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    kwargs = dict(env_kwargs)
    if render:
        kwargs["render_mode"] = "rgb_array"
    if env_fn is None:
        from envs.registry import make_env

        env_fn = functools.partial(make_env, env_id)
    try:
        env = env_fn(**kwargs)
    except TypeError as e:
        if not env_kwargs:
            raise
        raise EnvError(f"{env_id} does not accept the env kwargs {sorted(env_kwargs)} ({e}); check their names") from None
    for wrap in wrappers:
        env = wrap(env)
    if seed is not None:
        # Seed the env's generator once, the Gymnasium way; later plain reset() calls continue that stream.
        env.reset(seed=seed + index)
        env.action_space.seed(seed + index)
    return env


def make_vec_env(
    env_id: str,
    num_envs: int,
    seed: int | None,
    asynchronous: bool = True,
    *,
    render_envs: int = 0,
    wrappers: Sequence[Wrapper] = (),
    autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
    env_fn: EnvFactory | None = None,
    context: str | None = None,
    **env_kwargs: Any,
) -> gym.vector.VectorEnv:
    """`num_envs` copies of `env_id` (with `env_kwargs`) as one Gymnasium vector env.

    `asynchronous=True` runs each env in its own process (the fast default); False steps them in this process,
    which is easier to debug. Env `i` is seeded with `seed + i` at creation; pass seeds to `reset` for explicit
    episode seeds. The first `render_envs` envs are made with `render_mode="rgb_array"`. `wrappers` are applied
    inside the worker, innermost first. `env_fn` replaces `envs.make_env` for envs alloy does not register.
    """
    if int(num_envs) <= 0:
        raise EnvError(f"num_envs must be a positive integer, got {num_envs}; use num_envs=1 or more")
    if render_envs:
        backend = headless_gl_backend()
        if backend is not None:
            os.environ["MUJOCO_GL"] = backend
    fns = [
        _EnvBuilder(env_id, i, seed, i < render_envs, env_fn, tuple(wrappers), dict(env_kwargs))
        for i in range(int(num_envs))
    ]
    if asynchronous:
        return AsyncVectorEnv(fns, context=context, autoreset_mode=autoreset_mode)
    return SyncVectorEnv(fns, autoreset_mode=autoreset_mode)


class _EnvBuilder:
    """A picklable env factory (a closure would also do under cloudpickle; this keeps the fields inspectable)."""

    def __init__(self, env_id, index, seed, render, env_fn, wrappers, env_kwargs):
        self.args = (env_id, index, seed, render, env_fn, wrappers, env_kwargs)

    def __call__(self) -> gym.Env:
        return _make_one(*self.args)
