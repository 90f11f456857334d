"""A vector env that steps its envs in groups, one group per core, the first one in this process.

Gymnasium's `AsyncVectorEnv` gives every env its own process and leaves the parent idle while they step. With
more envs than cores that costs a pipe round trip and two context switches per env per step (about 0.4 ms on a
small VM, more than a Meta-World step), and one core's worth of the parent's time is wasted waiting. Here the envs
are split into `groups` contiguous groups (`SyncVectorEnv` each): with `local=True` this process steps group 0
itself while worker processes step the others, so every core simulates and a step costs one round trip per
worker, overlapped with the parent's own simulation. Both sides busy-poll their pipe briefly before blocking (see
`_await`): on a VM, waking a halted vCPU for every message costs more than the step. Observations, rewards and
infos are merged back in env order, with the same layout (`key` / `_key` masks) as any Gymnasium vector env.

Isolation: an exception, NaN or divergence is still one env's business (the evaluation guard catches it inside
the env), but a hard crash (segfault, `os._exit`) of an env in the local group ends this process. `processes` and
`env_workers` (env index -> index into `processes`, -1 for the local group) let callers find the envs a dead
worker took with it. Workers ignore Ctrl-C; the parent decides (see `envs/vector.py`).

A group policy (`group_policy`, a picklable factory) puts a copy of a policy in every group's own process: it acts
on the group's observations right after they are made, in parallel with the other groups, and its batched action
rides in the info under `POLICY_ACTION` (see `PolicyGroup`). Residual RL uses it for its frozen base, so that the
base's inference is spread over the cores instead of running in this process while the workers wait.

No wait on a worker is unbounded: every reply is awaited at most `timeout` seconds (`start_timeout` until the
first reset has returned, which covers building the envs and their first frame). A worker that does not answer in
time is killed (its Python stack is first dumped to stderr) and `envs.errors.WorkerTimeout` is raised, naming the
envs it held; `processes` then shows it dead, as if it had crashed. The `WorkerWatch` mixin that does this is
shared with the asynchronous vector env of `envs/vector.py`. An env of the local group runs in this process and
cannot be timed out: use `workers=N` (no local group) to isolate every env.
"""

from __future__ import annotations

import faulthandler
import functools
import logging
import math
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv
from gymnasium.vector.utils import CloudpickleWrapper, batch_space

from envs.errors import EnvError, WorkerTimeout

log = logging.getLogger(__name__)

DEFAULT_WORKER_TIMEOUT_S = 60.0  # per reply of a running worker (a step, reset, call or set_attr of its group)
DEFAULT_WORKER_START_TIMEOUT_S = 180.0  # building a worker's envs and everything up to its first reset's reply
TIMEOUT_ENV = "ALLOY_WORKER_TIMEOUT"
START_TIMEOUT_ENV = "ALLOY_WORKER_START_TIMEOUT"


def _seconds(value: Any, name: str) -> float | None:
    """A timeout in seconds; None for none (inf, "none", "off")."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("none", "off", "inf", "infinity"):
            return None
        value = text
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise EnvError(f"{name} must be a number of seconds (or 'none'), got {value!r}") from None
    if math.isnan(seconds) or seconds <= 0:
        raise EnvError(f"{name} must be a positive number of seconds (or 'none'), got {value!r}")
    return None if math.isinf(seconds) else seconds


def worker_timeouts(timeout: float | str | None = None,
                    start_timeout: float | str | None = None) -> tuple[float | None, float | None]:
    """(per-call, start) timeouts of vector-env workers in seconds, None meaning no limit.

    An argument left None takes the environment variable (`ALLOY_WORKER_TIMEOUT`, `ALLOY_WORKER_START_TIMEOUT`),
    else the default (60 s, 180 s). `math.inf` or "none" disables a limit. A default start timeout is never
    shorter than the per-call one; an explicit one is taken as given.
    """
    if timeout is None:
        timeout = os.environ.get(TIMEOUT_ENV) or DEFAULT_WORKER_TIMEOUT_S
    explicit_start = start_timeout is not None or bool(os.environ.get(START_TIMEOUT_ENV))
    if start_timeout is None:
        start_timeout = os.environ.get(START_TIMEOUT_ENV) or DEFAULT_WORKER_START_TIMEOUT_S
    per_call = _seconds(timeout, "worker_timeout")
    start = _seconds(start_timeout, "worker_start_timeout")
    if not explicit_start and start is not None:
        start = None if per_call is None else max(start, per_call)
    return per_call, start


class WorkerPipe:
    """The parent's end of a worker's pipe whose `recv` waits at most its owner's current timeout.

    It counts the requests sent and not yet answered, so that on a timeout the owner can tell the workers that are
    stuck (a request out, no reply readable) from those that answered. Everything else is the `Connection`'s.
    """

    def __init__(self, conn, owner: WorkerWatch, worker: int):
        self.conn, self.owner, self.worker = conn, owner, worker
        self.pending = 0
        self.command = ""

    def send(self, obj: Any) -> None:
        self.conn.send(obj)
        self.expect(str(obj[0]) if isinstance(obj, tuple) and obj else type(obj).__name__)

    def expect(self, command: str) -> None:
        """One more reply is owed, to `command`."""
        self.pending += 1
        self.command = command

    def recv(self) -> Any:
        limit = self.owner._wait_limit()
        if limit is not None and not self.conn.poll(limit):
            self.owner._worker_timed_out(self.worker)
        value = self.conn.recv()
        self.pending = max(0, self.pending - 1)
        return value

    def stuck(self) -> bool:
        """A request is out and no reply (nor end of file) is readable."""
        try:
            return self.pending > 0 and not self.conn.poll(0)
        except (OSError, ValueError):  # closed
            return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def stop_process(process, grace_s: float = 1.0) -> None:
    """Terminate `process` (SIGTERM), then kill it (SIGKILL) if it is still alive after `grace_s`; reap it."""
    if process.is_alive():
        process.terminate()
        process.join(grace_s)
    if process.is_alive():
        process.kill()
        process.join(grace_s)


def enable_stack_dumps() -> None:
    """In a worker: SIGUSR1 prints every thread's Python stack to stderr (the parent asks before killing it)."""
    if hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
        try:
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        except (RuntimeError, ValueError, OSError):  # no usable stderr
            pass


_COMMAND_NAMES = {"ok": "start", "_check_spaces": "start", "_call": "call", "_setattr": "set_attr"}


def _dump_stacks(processes, wait_s: float = 0.3) -> None:
    """Ask live workers for their Python stacks (see `enable_stack_dumps`) and give them `wait_s` to print."""
    asked = False
    for process in processes:
        if hasattr(signal, "SIGUSR1") and process.is_alive() and process.pid:
            try:
                os.kill(process.pid, signal.SIGUSR1)
                asked = True
            except OSError:
                pass
    if asked:
        time.sleep(wait_s)


class WorkerWatch:
    """Timeouts on the replies of worker processes, for a vector env with `parent_pipes`, `processes` and
    `env_workers` (env index -> index into `processes`, -1 for an env stepped in this process).

    Until `_started` (set once the first reset has returned) replies may take `start_timeout`, later `timeout`.
    A worker that misses its limit is killed; `worker_failures` maps it to why, and `WorkerTimeout` is raised.
    """

    worker_timeout: float | None = DEFAULT_WORKER_TIMEOUT_S
    worker_start_timeout: float | None = DEFAULT_WORKER_START_TIMEOUT_S
    _started = False

    def _watch_init(self, timeout: float | None, start_timeout: float | None) -> None:
        self.worker_timeout, self.worker_start_timeout = timeout, start_timeout
        self._started = False
        self.worker_failures: dict[int, str] = {}

    def _watch_pipe(self, conn, worker: int) -> WorkerPipe:
        return conn if isinstance(conn, WorkerPipe) else WorkerPipe(conn, self, worker)

    def _wait_limit(self) -> float | None:
        return self.worker_timeout if self._started else self.worker_start_timeout

    def _worker_timed_out(self, worker: int) -> NoReturn:
        """`worker` missed its limit: kill it and every other worker still owing a reply, then raise."""
        limit = self._wait_limit()
        pipes = self.parent_pipes
        stuck = [w for w, pipe in enumerate(pipes)
                 if pipe is not None and (w == worker or (isinstance(pipe, WorkerPipe) and pipe.stuck()))]
        command = _COMMAND_NAMES.get(getattr(pipes[worker], "command", ""), getattr(pipes[worker], "command", ""))
        if command == "reset" and not self._started:
            what = "its first reset"
        elif command == "start":
            what = "its start (building its envs)"
        else:
            what = repr(command or "a call")
        _dump_stacks([self.processes[w] for w in stuck])
        for w in stuck:
            stop_process(self.processes[w])
        env_indices = [i for i, w in enumerate(self.env_workers) if w in stuck]
        exitcodes = [self.processes[w].exitcode for w in stuck]
        names = ", ".join(map(str, stuck))
        setting = TIMEOUT_ENV if self._started else START_TIMEOUT_ENV
        message = (
            f"vector-env worker{'s' if len(stuck) > 1 else ''} {names} (env{'s' if len(env_indices) != 1 else ''} "
            f"{', '.join(map(str, env_indices))}) gave no answer to {what} within {limit:g} s and "
            f"{'were' if len(stuck) > 1 else 'was'} killed; if the env is only slow, raise {setting} (seconds)"
        )
        for w in stuck:
            self.worker_failures[w] = message
        log.warning("%s (the Python stack of a stuck worker is printed on stderr just before)", message)
        raise WorkerTimeout(message, env_indices=env_indices, workers=stuck, command=command, timeout_s=limit,
                            exitcodes=exitcodes)


def _dispatch(vec: SyncVectorEnv, command: str, data: Any) -> Any:
    """Run one parent command on a group's envs (in a worker, or here for the local group)."""
    if command == "step":
        return vec.step(data)
    if command == "reset":
        return vec.reset(**data)
    if command == "call":
        name, args, kwargs = data
        return vec.call(name, *args, **kwargs)
    if command == "set_attr":
        return vec.set_attr(*data)
    raise RuntimeError(f"unknown vector-env command {command!r}")


POLICY_ACTION = "alloy_policy_action"  # info key of a group policy's batched action (with its `_` mask)


class PolicyGroup:
    """A group's envs and the group's own copy of a policy, which acts once on every observation the group returns.

    `factory(group)` builds the policy in the group's process: anything with `reset(mask | None)` and a batched
    `act(obs) -> (n, action_dim)`. After a full reset and after a step in which no env of the group finished, the
    policy acts on the group's observations and its action rides in the reply's info under `POLICY_ACTION`. After
    a step that finished some envs it waits: the caller resets exactly those (a masked reset, as it must before the
    next step), the policy is reset for them and then acts on the group's observations, the fresh episodes' first
    ones included. So the policy acts exactly once per step, on the observations an in-process caller would give
    it; a step before the policy acted, or a reset of some (not all) envs that did not finish, is a protocol error.
    """

    def __init__(self, vec: SyncVectorEnv, factory: Callable[[int], Any], group: int):
        self.vec = vec
        self.policy = factory(group)
        self.acted = False  # whether the policy has acted on the group's current observations

    def run(self, command: str, data: Any) -> Any:
        if command == "step":
            if not self.acted:
                raise RuntimeError("group policy: a step before the policy acted (reset the envs that finished first)")
            obs, rewards, terminated, truncated, info = self.vec.step(data)
            self.acted = False
            if not np.any(np.logical_or(terminated, truncated)):
                info = self._act(obs, info)
            return obs, rewards, terminated, truncated, info
        if command == "reset":
            mask = (data.get("options") or {}).get("reset_mask")
            mask = None if mask is None or np.all(mask) else np.asarray(mask, dtype=bool)  # all of them: a full reset
            if mask is not None and self.acted:
                raise RuntimeError("group policy: a masked reset of envs that did not finish (the policy already "
                                   "acted on them)")
            obs, info = self.vec.reset(**data)
            self.policy.reset(mask)
            return obs, self._act(obs, info)
        return _dispatch(self.vec, command, data)

    def _act(self, obs: Any, info: dict) -> dict:
        action = np.asarray(self.policy.act(obs), dtype=np.float32)
        n = self.vec.num_envs
        if action.ndim != 2 or action.shape[0] != n:
            raise RuntimeError(f"group policy: act() returned shape {action.shape} for {n} envs; expected ({n}, dim)")
        self.acted = True
        return {**info, POLICY_ACTION: action, f"_{POLICY_ACTION}": np.ones(n, dtype=bool)}


def _worker(env_fns: Sequence[Callable[[], gym.Env]], autoreset_mode: AutoresetMode, pipe, parent_pipe,
            group_policy=None, group: int = 0) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    enable_stack_dumps()
    parent_pipe.close()
    vec = None
    try:
        vec = SyncVectorEnv(list(env_fns), copy=False, autoreset_mode=autoreset_mode)
        if isinstance(group_policy, CloudpickleWrapper):
            group_policy = group_policy.fn
        run = functools.partial(_dispatch, vec) if group_policy is None else PolicyGroup(vec, group_policy, group).run
        pipe.send(("ok", None))
        while True:
            _await(pipe, WORKER_SPIN_S)
            command, data = pipe.recv()
            if command == "close":
                pipe.send(("ok", None))
                break
            try:
                result = run(command, data)
            except Exception as e:  # noqa: BLE001 - sent to the parent, which raises it
                pipe.send(("error", _picklable(e)))
            else:
                pipe.send(("ok", result))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass
    except Exception as e:  # noqa: BLE001 - construction failed: the parent raises it
        try:
            pipe.send(("error", _picklable(e)))
        except Exception:  # noqa: BLE001
            pass
    finally:
        if vec is not None:
            try:
                vec.close()
            except Exception:  # noqa: BLE001
                pass
        pipe.close()


WORKER_SPIN_S = 0.0005  # a parent that runs a neural policy between steps gets its core back soon
PARENT_SPIN_S = 0.002


def _await(pipe, spin_s: float) -> None:
    """Busy-poll `pipe` for up to `spin_s` before the blocking read.

    On a VM an idle vCPU is halted and handed back to the host; waking it for the next message then costs more
    than a Meta-World step. A step round trip is well under the spin window, so both sides stay awake through a
    rollout and block only in real pauses (policy inference longer than the window, the end of the run).
    """
    deadline = time.perf_counter() + spin_s
    while not pipe.poll() and time.perf_counter() < deadline:
        pass


def _picklable(error: BaseException) -> BaseException:
    """The exception itself when it pickles, else a RuntimeError carrying its text and traceback."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        return RuntimeError(f"{type(error).__name__} in a vector-env worker:\n{text}")


def _concat(parts: list[Any]) -> Any:
    """Concatenate batched observations (arrays, dicts and tuples of them) along the env axis."""
    first = parts[0]
    if isinstance(first, dict):
        return {k: _concat([p[k] for p in parts]) for k in first}
    if isinstance(first, tuple):
        return tuple(_concat([p[i] for p in parts]) for i in range(len(first)))
    return np.concatenate(parts, axis=0)


def _copy(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: _copy(v) for k, v in obs.items()}
    if isinstance(obs, tuple):
        return tuple(_copy(v) for v in obs)
    return np.array(obs, copy=True)


def _merge_infos(parts: list[dict], sizes: list[int]) -> dict:
    """Merge the infos of consecutive env groups into one info dict in Gymnasium's `key` / `_key` layout."""
    total, offsets = sum(sizes), np.cumsum([0] + list(sizes[:-1]))
    merged: dict[str, Any] = {}
    if all(p.keys() == parts[0].keys() for p in parts) and not any(isinstance(v, dict) for v in parts[0].values()):
        # every group reported every key (the evaluation guard's infos, every step): plain concatenation
        for key, value in parts[0].items():
            merged[key] = np.concatenate([value] + [p[key] for p in parts[1:]])
        return merged
    keys = [k for part in parts for k in part if not k.startswith("_")]
    for key in dict.fromkeys(keys):
        present = [(o, n, p) for o, n, p in zip(offsets, sizes, parts) if key in p]
        sample = present[0][2][key]
        if isinstance(sample, dict):
            sub_parts = [p.get(key, {}) for p in parts]
            merged[key] = _merge_infos(sub_parts, sizes)
            continue
        sample = np.asarray(sample)
        values = np.zeros((total, *sample.shape[1:]), dtype=sample.dtype)
        if sample.dtype == object:
            values = np.full((total, *sample.shape[1:]), None, dtype=object)
        mask = np.zeros(total, dtype=bool)
        for offset, n, part in present:
            values[offset:offset + n] = part[key]
            mask[offset:offset + n] = part.get(f"_{key}", np.ones(n, dtype=bool))
        merged[key], merged[f"_{key}"] = values, mask
    return merged


class GroupedVectorEnv(WorkerWatch, VectorEnv):
    """`len(env_fns)` envs in `groups` contiguous groups: group 0 here (with `local`), each other in a process.

    `timeout` / `start_timeout`: see `worker_timeouts` (None: `ALLOY_WORKER_TIMEOUT` or 60 s, and
    `ALLOY_WORKER_START_TIMEOUT` or 180 s; `math.inf`: no limit).
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        groups: int,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        context: str | None = None,
        local: bool = True,
        timeout: float | None = None,
        start_timeout: float | None = None,
        group_policy: Callable[[int], Any] | None = None,
    ):
        self._watch_init(*worker_timeouts(timeout, start_timeout))
        self.group_policy = group_policy
        self.num_envs = len(env_fns)
        groups = max(1, min(int(groups), self.num_envs))
        self.autoreset_mode = AutoresetMode(autoreset_mode) if isinstance(autoreset_mode, str) else autoreset_mode
        group_of = [i * groups // self.num_envs for i in range(self.num_envs)]
        self.group_sizes = [group_of.count(g) for g in range(groups)]
        self.local = bool(local)
        # env i -> its worker's index in `processes`; -1: stepped in this process
        self.env_workers = [g - 1 if self.local else g for g in group_of]

        # The spaces and metadata come from one env built here, as AsyncVectorEnv does: a bad id or kwarg fails
        # in the parent, with its own exception, before any worker starts.
        probe = env_fns[0]()
        self.single_observation_space = probe.observation_space
        self.single_action_space = probe.action_space
        self.metadata = dict(probe.metadata)
        self.metadata["autoreset_mode"] = self.autoreset_mode
        self.render_mode = probe.render_mode
        self.spec = probe.spec
        if not self.local:
            probe.close()  # with a local group it becomes env 0 instead of being built twice
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        ctx = multiprocessing.get_context(context)
        self.parent_pipes, self.processes = [], []
        self._local_vec = None
        self._local_run: Callable[[str, Any], Any] | None = None
        start = 0
        for g, n in enumerate(self.group_sizes):
            if g == 0 and self.local:
                start += n
                continue
            parent_pipe, child_pipe = ctx.Pipe()
            process = ctx.Process(  # the factories travel by cloudpickle where the workers do not fork
                target=_worker, name=f"GroupedVectorEnv-{g}", daemon=True,
                args=([CloudpickleWrapper(fn) for fn in env_fns[start:start + n]], self.autoreset_mode, child_pipe,
                      parent_pipe, None if group_policy is None else CloudpickleWrapper(group_policy), g),
            )
            process.start()
            child_pipe.close()
            self.parent_pipes.append(self._watch_pipe(parent_pipe, len(self.processes)))
            self.parent_pipes[-1].expect("ok")  # the worker answers once its envs are built
            self.processes.append(process)
            start += n
        self._last_obs: list[Any] = [None] * groups
        try:
            if self.local:
                fns = [lambda: probe] + list(env_fns[1: self.group_sizes[0]])
                self._local_vec = SyncVectorEnv(fns, copy=False, autoreset_mode=self.autoreset_mode)
                self._local_run = (functools.partial(_dispatch, self._local_vec) if group_policy is None
                                   else PolicyGroup(self._local_vec, group_policy, 0).run)
            self._gather(self._remote_groups())
        except BaseException:
            if self.local and self._local_vec is None:
                probe.close()
            self.close(terminate=True)
            raise

    # ------------------------------------------------------------------------------------------------------
    def _slices(self) -> list[slice]:
        offsets = np.cumsum([0] + self.group_sizes)
        return [slice(int(offsets[g]), int(offsets[g + 1])) for g in range(len(self.group_sizes))]

    def _remote_groups(self) -> list[int]:
        return list(range(1 if self.local else 0, len(self.group_sizes)))

    def _pipe(self, group: int):
        return self.parent_pipes[group - 1 if self.local else group]

    def _run(self, commands: dict[int, tuple[str, Any]]) -> dict[int, Any]:
        """Send each group its command, run the local group's meanwhile, then collect every reply.

        Every remote reply is read even after an error, so that the pipes stay in step; the first error is raised.
        """
        remote = [g for g in commands if g != 0 or not self.local]
        for g in remote:
            self._pipe(g).send(commands[g])
        results, error = {}, None
        if self.local and 0 in commands:
            command, data = commands[0]
            try:
                results[0] = self._local_run(command, data)
            except Exception as e:  # noqa: BLE001 - raised after the workers' replies are read
                error = e
        try:
            gathered = self._gather(remote)
        except (WorkerTimeout, EOFError, BrokenPipeError, ConnectionResetError):
            raise  # a lost worker comes first: the caller must learn which envs went with it
        except Exception as e:  # noqa: BLE001
            raise (error or e) from None
        if error is not None:
            raise error
        results.update(zip(remote, gathered))
        return results

    def _gather(self, groups) -> list[Any]:
        """Receive one reply from each of the remote `groups` (all of them, even after an error)."""
        results, error = [], None
        for g in groups:
            _await(self._pipe(g), PARENT_SPIN_S)
            status, value = self._pipe(g).recv()
            if status == "error" and error is None:
                error = value
            results.append(value)
        if error is not None:
            raise error
        return results

    # ------------------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset got {len(seeds)} seeds for {self.num_envs} envs")
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (self.num_envs,) or not mask.any():
                raise ValueError(f"reset_mask must be a boolean array of shape ({self.num_envs},) with a True value")
        commands = {}
        for g, sl in enumerate(self._slices()):
            data: dict[str, Any] = {"seed": seeds[sl]}
            if mask is not None:
                if not mask[sl].any():
                    if self._last_obs[g] is None:
                        raise ValueError("the first reset must reset every env (no reset_mask)")
                    continue
                data["options"] = {**options, "reset_mask": mask[sl]}
            elif options:
                data["options"] = dict(options)
            commands[g] = ("reset", data)
        replies = self._run(commands)
        self._started = True
        infos = []
        for g in range(len(self.group_sizes)):
            info = {}
            if g in replies:
                obs, info = replies[g]
                self._last_obs[g] = _copy(obs) if g == 0 and self.local else obs
            infos.append(info)
        return _concat(self._last_obs), _merge_infos(infos, self.group_sizes)

    def step(self, actions):
        actions = np.asarray(actions) if not isinstance(actions, (dict, tuple)) else actions
        replies = self._run({g: ("step", actions[sl]) for g, sl in enumerate(self._slices())})
        parts = [replies[g] for g in range(len(self.group_sizes))]
        obs, rewards, terminated, truncated, infos = zip(*parts)
        self._last_obs = list(obs)
        if self.local:  # the local SyncVectorEnv reuses its buffers (copy=False)
            self._last_obs[0] = _copy(self._last_obs[0])
        return (
            _concat(self._last_obs), np.concatenate(rewards), np.concatenate(terminated), np.concatenate(truncated),
            _merge_infos(list(infos), self.group_sizes),
        )

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        replies = self._run({g: ("call", (name, args, kwargs)) for g in range(len(self.group_sizes))})
        return tuple(v for g in range(len(self.group_sizes)) for v in replies[g])

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return self.call(name)

    def set_attr(self, name: str, values: Any) -> None:
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"set_attr got {len(values)} values for {self.num_envs} envs")
        self._run({g: ("set_attr", (name, list(values[sl]))) for g, sl in enumerate(self._slices())})

    def close_extras(self, terminate: bool = False, timeout: float = 5.0, **kwargs: Any) -> None:
        terminate = terminate or bool(self.worker_failures)
        if not terminate:
            try:
                for pipe in self.parent_pipes:
                    pipe.send(("close", None))
                for pipe in self.parent_pipes:
                    if pipe.poll(timeout):
                        pipe.recv()
            except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
                terminate = True
        for process in self.processes:
            if terminate and process.is_alive():
                process.terminate()
        for pipe in self.parent_pipes:
            pipe.close()
        for process in self.processes:
            process.join(timeout)
        for process in self.processes:
            stop_process(process)  # one that did not close in time (stuck in its env's close)
        if self._local_vec is not None:
            self._local_vec.close()
            self._local_vec = None

    def __del__(self):
        if not getattr(self, "closed", True) and "processes" in vars(self) and sys is not None:
            try:
                self.close(terminate=True)
            except Exception:  # noqa: BLE001
                pass
