"""The error classes of the envs package: `EnvError` for mistakes a user can make with an environment (bad id,
action, parameters), and `WorkerTimeout` for a vector-env worker process that stopped answering."""

from __future__ import annotations

from collections.abc import Sequence


class EnvError(ValueError):
    """A user-caused environment error; its message is one line that says what to do."""


class WorkerTimeout(EnvError):
    """A vector-env worker process did not answer a call within its timeout; it has been killed.

    Raised by the vector envs of `envs.vector.make_vec_env` (the grouped one and the asynchronous one). When it is
    raised the stuck workers are already dead (`vec.processes[w].is_alive()` is False and `.exitcode` is set for
    every `w` in `workers`), so a caller handles it like a worker that died: fail the episodes of `env_indices`
    (with `reason` as the error) and replay the others on a new vector env. The vector env itself is no longer
    usable; close it (`close(terminate=True)`).

    Attributes: `env_indices` (the envs the killed workers held, in env order), `workers` (their indices into
    `vec.processes`), `command` (the call that got no answer: reset, step, call, set_attr, start, ...),
    `timeout_s` (the limit that expired), `exitcodes` (of the killed workers) and `reason` (the message, one line).
    """

    def __init__(self, message: str, *, env_indices: Sequence[int] = (), workers: Sequence[int] = (),
                 command: str = "", timeout_s: float | None = None, exitcodes: Sequence[int | None] = ()):
        super().__init__(message)
        self.reason = message
        self.env_indices = tuple(int(i) for i in env_indices)
        self.workers = tuple(int(w) for w in workers)
        self.command = str(command)
        self.timeout_s = timeout_s
        self.exitcodes = tuple(exitcodes)

    def __reduce__(self):
        return _rebuild_worker_timeout, (self.reason, self.env_indices, self.workers, self.command, self.timeout_s,
                                         self.exitcodes)


def _rebuild_worker_timeout(message, env_indices, workers, command, timeout_s, exitcodes) -> WorkerTimeout:
    return WorkerTimeout(message, env_indices=env_indices, workers=workers, command=command, timeout_s=timeout_s,
                         exitcodes=exitcodes)
