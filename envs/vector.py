"""Vector envs for evaluation, collection and RL: many alloy envs stepped together, in processes or in-process.

Worker processes build their env through `envs.make_env` (or a caller's factory for envs alloy does not register),
so an unknown id or a bad env kwarg fails in the parent with `EnvError` before any worker starts. Workers ignore
Ctrl-C: the parent decides what to do with an interrupt (evaluation writes its partial report first) and closes
them. Rendering is headless: `MUJOCO_GL` is chosen before any worker starts (`envs.rendering.headless_gl_backend`:
EGL with an NVIDIA driver, OSMesa otherwise, a user's own choice or a display is kept) and is inherited by the
workers. Workers that render are started from the forkserver, never forked from this process: after this process
has rendered once, a forked worker's first OSMesa call would wait forever (see `envs/rendering.py`).

No wait on a worker is unbounded (both `GroupedVectorEnv` and the asynchronous vector env here): a worker that
does not answer within `worker_timeout` (default 60 s, or `ALLOY_WORKER_TIMEOUT`; `worker_start_timeout`, default
180 s or `ALLOY_WORKER_START_TIMEOUT`, until the first reset has returned) is killed and
`envs.errors.WorkerTimeout` is raised with the env indices it held (see `envs.grouped_vector.worker_timeouts`).
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
from gymnasium.vector.async_vector_env import AsyncState

from envs.errors import EnvError, WorkerTimeout
from envs.grouped_vector import WorkerWatch, enable_stack_dumps, stop_process, worker_timeouts
from envs.rendering import headless_gl_backend, worker_start_method

EnvFactory = Callable[..., gym.Env]
Wrapper = Callable[[gym.Env], gym.Env]


__all__ = ["TimedAsyncVectorEnv", "available_cores", "headless_gl_backend", "make_vec_env", "vector_layout",
           "WorkerTimeout"]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which container limits and `taskset` set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


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
        enable_stack_dumps()  # a parent about to kill this worker for not answering asks for its stack first
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
    env_id: str | Sequence[str],
    num_envs: int,
    seed: int | None,
    asynchronous: bool = True,
    *,
    render_envs: int = 0,
    wrappers: Sequence[Wrapper] = (),
    autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
    env_fn: EnvFactory | None = None,
    context: str | None = None,
    workers: int | None = None,
    worker_timeout: float | None = None,
    worker_start_timeout: float | None = None,
    per_env_kwargs: Sequence[dict[str, Any]] | None = None,
    group_policy: Callable[[int], Any] | None = None,
    **env_kwargs: Any,
) -> gym.vector.VectorEnv:
    """`num_envs` copies of `env_id` (with `env_kwargs`) as one Gymnasium vector env.

    `env_id` may also be a sequence of `num_envs` ids (env `i` is `env_id[i]`, e.g. one slot per robot of a
    multi-robot rollout; their spaces must be the same) and `per_env_kwargs[i]` is merged over `env_kwargs` for env i.

    `asynchronous=True` steps the envs in worker processes (the fast default); False steps them in this process,
    which is easier to debug. `workers` picks the layout of the asynchronous case:
    - None (default): one group of envs per available core (at most one env per group); this process steps the
      first group and a worker process each other one (`GroupedVectorEnv`). On a small machine that spares most
      pipe round trips and puts the otherwise idle parent to work; a hard crash (segfault) of a first-group env
      ends this process (exceptions, NaN and divergence are caught per env by the evaluation guard);
    - an int N: N worker processes and none of the stepping here; N >= num_envs is one process per env
      (Gymnasium's `AsyncVectorEnv`), the most isolated layout.
    Env `i` is seeded with `seed + i` at creation; pass seeds to `reset` for explicit
    episode seeds. The first `render_envs` envs are made with `render_mode="rgb_array"`. `wrappers` are applied
    inside the worker, innermost first. `env_fn` replaces `envs.make_env` for envs alloy does not register.
    `group_policy` (a picklable factory `group -> policy`) gives every group of envs its own copy of a policy that
    acts on the group's observations in the group's process (see `envs.grouped_vector.PolicyGroup`); the vector env
    is then always a `GroupedVectorEnv` with the layout above. A forked worker must keep its copy single-threaded
    (thread pools do not survive a fork).
    `context` is the multiprocessing start method (default: the platform's, but never `fork` for workers that
    render). `worker_timeout` / `worker_start_timeout` bound every wait on a worker (see the module docstring;
    `math.inf` for none); a worker that misses one is killed and `WorkerTimeout` is raised.
    """
    if int(num_envs) <= 0:
        raise EnvError(f"num_envs must be a positive integer, got {num_envs}; use num_envs=1 or more")
    ids = [env_id] * int(num_envs) if isinstance(env_id, str) else [str(e) for e in env_id]
    extra = [{}] * int(num_envs) if per_env_kwargs is None else [dict(k) for k in per_env_kwargs]
    if len(ids) != int(num_envs) or len(extra) != int(num_envs):
        raise EnvError(f"give one env id and one kwargs dict per env: {len(ids)} ids and {len(extra)} kwargs for "
                       f"num_envs={num_envs}")
    if render_envs:
        backend = headless_gl_backend()
        if backend is not None:
            os.environ["MUJOCO_GL"] = backend
    timeout, start_timeout = worker_timeouts(worker_timeout, worker_start_timeout)
    fns = [
        _EnvBuilder(ids[i], i, seed, i < render_envs, env_fn, tuple(wrappers), {**env_kwargs, **extra[i]})
        for i in range(int(num_envs))
    ]
    layout = vector_layout(num_envs, asynchronous, workers)
    if layout["kind"] != "sync" or group_policy is not None:
        context = worker_start_method(context, renders=render_envs > 0)
    if layout["kind"] == "grouped" or group_policy is not None:  # a group policy needs groups, whatever the layout
        from envs.grouped_vector import GroupedVectorEnv

        return GroupedVectorEnv(fns, layout["groups"], autoreset_mode=autoreset_mode, context=context,
                                local=layout["parent_steps"], timeout=timeout, start_timeout=start_timeout,
                                group_policy=group_policy)
    if layout["kind"] == "async":
        return TimedAsyncVectorEnv(fns, context=context, autoreset_mode=autoreset_mode, timeout=timeout,
                                   start_timeout=start_timeout)
    return SyncVectorEnv(fns, autoreset_mode=autoreset_mode)


def vector_layout(num_envs: int, asynchronous: bool = True, workers: int | None = None) -> dict[str, Any]:
    """Which vector env `make_vec_env` builds for these arguments (see its docstring), as recorded in reports.

    kind: sync | async | grouped; groups: envs stepping at once; worker_processes; parent_steps: whether this
    process steps a group itself.
    """
    num_envs = int(num_envs)
    if workers is not None and int(workers) <= 0:
        raise EnvError(f"workers must be a positive integer, got {workers}; leave it unset for one per core")
    if not asynchronous:
        return {"kind": "sync", "groups": 1, "worker_processes": 0, "parent_steps": True}
    if workers is None:
        groups = min(num_envs, available_cores())
        if groups > 1:
            return {"kind": "grouped", "groups": groups, "worker_processes": groups - 1, "parent_steps": True}
        workers = 1
    workers = int(workers)
    if workers >= num_envs:
        return {"kind": "async", "groups": num_envs, "worker_processes": num_envs, "parent_steps": False}
    return {"kind": "grouped", "groups": workers, "worker_processes": workers, "parent_steps": False}


class _EnvBuilder:
    """A picklable env factory (a closure would also do under cloudpickle; this keeps the fields inspectable)."""

    def __init__(self, env_id, index, seed, render, env_fn, wrappers, env_kwargs):
        self.args = (env_id, index, seed, render, env_fn, wrappers, env_kwargs)

    def __call__(self) -> gym.Env:
        return _make_one(*self.args)


class TimedAsyncVectorEnv(WorkerWatch, AsyncVectorEnv):
    """Gymnasium's `AsyncVectorEnv` (one process per env) whose every wait on a worker has a timeout.

    `timeout` / `start_timeout` as in `envs.grouped_vector.worker_timeouts`; the start limit covers building the
    envs (Gymnasium's space check right after the workers start) and everything up to the first reset's reply.
    A worker that misses its limit is killed and `WorkerTimeout` is raised (the env is then unusable: close it).
    `env_workers[i] == i`: env i lives in `processes[i]`.
    """

    def __init__(self, env_fns, *, timeout: float | None = None, start_timeout: float | None = None, **kwargs: Any):
        self._watch_init(*worker_timeouts(timeout, start_timeout))
        self.env_workers = list(range(len(env_fns)))
        super().__init__(env_fns, **kwargs)

    def _check_spaces(self):  # the first message to the workers, answered once their env is built
        self.parent_pipes = [self._watch_pipe(p, w) for w, p in enumerate(self.parent_pipes)]
        try:
            return super()._check_spaces()
        except BaseException:
            self.close(terminate=True)
            raise

    def _worker_timed_out(self, worker: int):
        self._state = AsyncState.DEFAULT
        return super()._worker_timed_out(worker)

    def reset_wait(self, timeout: float | None = None):
        result = super().reset_wait(timeout)
        self._started = True
        return result

    def close_extras(self, timeout: float | None = None, terminate: bool = False) -> None:
        if self.worker_failures or not all(p.is_alive() for p in self.processes):
            terminate = True  # a lost worker answers nothing: do not wait for it
        try:
            super().close_extras(timeout=timeout, terminate=terminate)
        except (WorkerTimeout, EOFError, BrokenPipeError, ConnectionResetError, OSError) as e:
            gym.logger.warn(f"closing the vector env: {e}; terminating its workers")
            self._state = AsyncState.DEFAULT
            super().close_extras(terminate=True)
        for process in self.processes:
            stop_process(process)
