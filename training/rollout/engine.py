"""The one rollout engine: batched policies over a vector env, with explicitly seeded episodes and hooks.

Evaluation, collection and DAgger-style labelled rollouts are all this loop. Each episode comes with its own reset
seed, whichever env slot or worker runs it, so two runs (and two policies) see the same initial states. The vector
env never auto-resets: the loop resets exactly the envs whose episode ended, with the next episode's seed, and calls
`policy.reset(mask)` for those envs only.

What the loop can add to a plain rollout:
- a **labeller**: a second policy whose action for every visited state is recorded beside the executed one;
- **mixing**: per episode, each env executes policy A or, with probability `beta`, policy B (DAgger's beta); the
  choice is drawn from the episode's seed, so it does not depend on the slot or on other episodes;
- **action noise**: per episode, with a probability, Gaussian noise is added to the executed actions (not to the
  labels), so that recorded data covers recoveries from states the driver would not reach by itself;
- **one env id per slot**: a vector env whose slots hold different envs (one per robot) reports each episode
  under its slot's env id;
- **hooks** (`RolloutHook`) that see every reset, step and finished episode: the `EpisodeRecorder` keeps the episodes
  as arrays and writes them as Minari datasets.

Every distinct policy acts once per control step on the whole batch, so policies with per-env state (observation
history, chunk queues, streaming buffers) stay consistent whoever drives.

A failure inside one env (exception, non-finite state, MuJoCo divergence) ends that episode as a failure (the
env-side guard, `training.evaluation.guard`); a worker process that dies outright, or stops answering, fails its
episodes, the vector env is rebuilt and the episodes that were in flight elsewhere are replayed from their seeds.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from policies.interface import observation_for
from training.errors import TrainingError
from training.rollout.episode import EpisodeResult

if TYPE_CHECKING:  # the interface is a type only: worker processes must not import torch through it
    from policies.interface import PolicyLike

log = logging.getLogger(__name__)

WORKER_LOST: tuple[type[BaseException], ...] = (EOFError, BrokenPipeError, ConnectionResetError)
try:  # a worker that stops answering is killed by the vector env and handled like a dead one
    from envs.errors import WorkerTimeout

    WORKER_LOST = (*WORKER_LOST, WorkerTimeout)
except ImportError:  # pragma: no cover - older envs package
    pass


def episode_seed(seed: int, index: int) -> int:
    """The reset seed of episode `index` of a run with `seed` (independent of workers and policy)."""
    state = np.random.SeedSequence([int(seed) % 2**63, int(index)]).generate_state(1, dtype=np.uint32)
    return int(state[0])


def mix_draw(beta: float, seed: int, salt: int = 0x6D6978) -> bool:
    """True with probability `beta` for the episode reset with `seed`, from the seed alone (a `salt` per question:
    policy B drives (the default), noise is injected, ...)."""
    if beta <= 0.0:
        return False
    if beta >= 1.0:
        return True
    u = np.random.default_rng(np.random.SeedSequence([int(seed), salt])).random()
    return bool(u < beta)


NOISE_SALT = 0x6E6F6973


@dataclass
class ActionNoise:
    """Gaussian noise of standard deviation `std` (action units) on the executed actions of a share `episodes` of
    the episodes (drawn per episode from its seed), clipped to the action space; labels stay clean."""

    std: float
    episodes: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(float(self.std)) and float(self.std) >= 0.0):
            raise TrainingError(f"the action noise std must be >= 0, got {self.std}")
        if not 0.0 <= float(self.episodes) <= 1.0:
            raise TrainingError(f"the share of noisy episodes must be in [0, 1], got {self.episodes}")


@dataclass
class EpisodeTask:
    """One episode to run: its number in the run, its reset seed and, in a vector env whose slots hold different
    envs, the env id it must run in (None: the engine's only env id)."""

    index: int
    seed: int
    env_id: str | None = None


@dataclass
class Mixing:
    """Per-episode mixing: an env's episode is driven by `policy` (B) with probability `beta`, else by A."""

    policy: PolicyLike
    beta: float

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.beta) <= 1.0 or not math.isfinite(float(self.beta)):
            raise TrainingError(f"the mixing probability beta must be in [0, 1], got {self.beta}")


@dataclass
class StepData:
    """What one control step of the whole batch was (given to hooks)."""

    obs: dict[str, np.ndarray]  # the observations the actions were chosen from
    actions: np.ndarray  # executed, (K, da)
    labels: np.ndarray | None  # the labeller's actions for `obs`, (K, da), when there is a labeller
    label_std: np.ndarray | None  # the labeller's action std (`last_std` of a Gaussian labeller), (K, da)
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    next_obs: dict[str, np.ndarray]  # the observations after the step (terminal ones for ended episodes)
    active: np.ndarray  # bool (K,): the slots whose episode this step belongs to


class RolloutHook:
    """Sees what the engine does; every method is optional. Slots are env indices of the vector env."""

    def on_episode_start(self, slot: int, task: EpisodeTask, obs: dict[str, np.ndarray], driver: str,
                         noisy: bool = False) -> None:
        """Episode `task` starts in `slot` with first observation `obs` (one env's, unbatched); `driver` is "A" or
        "B" (mixing) and `noisy` says whether its executed actions carry injected noise."""

    def on_step(self, step: StepData) -> None:
        """One control step of every slot."""

    def on_episode_end(self, slot: int, result: EpisodeResult) -> None:
        """The episode in `slot` ended (its outcome is final)."""

    def on_episode_abort(self, slot: int) -> None:
        """The episode in `slot` will be replayed from its seed (its worker died elsewhere): forget what it did."""


@dataclass
class _Running:
    task: EpisodeTask
    driver: str = "A"
    noise: np.random.Generator | None = None  # the episode's noise stream, when it is a noisy one
    ret: float = 0.0
    length: int = 0
    steps_to_success: int | None = None
    time_to_success: float | None = None


@dataclass
class RolloutStats:
    """Timings and counts over every episode run so far (what reports are made of)."""

    results: list[EpisodeResult] = field(default_factory=list)
    call_ms: list[float] = field(default_factory=list)
    action_ms: list[float] = field(default_factory=list)
    first_call_ms: list[float] = field(default_factory=list)
    env_steps: int = 0
    rollout_s: float = 0.0


def _info_at(infos: dict, key: str, i: int, default: Any = None) -> Any:
    values = infos.get(key)
    if values is None:
        return default
    mask = infos.get(f"_{key}")
    return values[i] if mask is None or mask[i] else default


def force_close(vec) -> None:
    """Close a vector env now, without waiting for a call in flight (its worker may be dead or interrupted)."""
    try:
        from gymnasium.vector.async_vector_env import AsyncState

        if hasattr(vec, "_state"):
            vec._state = AsyncState.DEFAULT
    except ImportError:  # pragma: no cover
        pass
    with contextlib.suppress(Exception):
        vec.close(terminate=True)


def inference_context(policy) -> Callable[[], Any]:
    """No autograd bookkeeping around a torch policy's `act`; nothing for anything else (chosen once, up front)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(policy, torch.nn.Module):
        return torch.no_grad  # not inference_mode: its tensors could not be updated by `reset` outside it
    return contextlib.nullcontext


@contextlib.contextmanager
def policy_threads(worker_processes: int):
    """Caps torch's intra-op threads at the cores the env workers leave free while envs run; yields the count
    (None without torch). OpenMP threads spin while they wait for work, so a policy thread on the core a worker
    steps on slows both."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield None
        return
    from envs.vector import available_cores

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, available_cores() - int(worker_processes))))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


class RolloutEngine:
    """Runs episodes of one env id on one vector env (rebuilt when a worker dies), with the options above.

    `make_vec()` builds the vector env (no auto-reset, `RolloutGuard` inside). `run(tasks)` runs the episodes and
    returns their results in the order they finished; `add(tasks)` (from a hook) queues more while it runs.
    The vector env stays open between `run` calls until `close()`.
    """

    def __init__(self, policy: PolicyLike, env_id: str, make_vec: Callable[[], Any], num_envs: int, *,
                 stop_on_success: bool = False, labeller: PolicyLike | None = None, mixing: Mixing | None = None,
                 hooks: Sequence[RolloutHook] = (), stats: RolloutStats | None = None, bar=None,
                 n_video: int = 0, check_fit: Callable[[Any, Any], None] | None = None,
                 noise: ActionNoise | None = None, slot_env_ids: Sequence[str] | None = None):
        self.policy, self.env_id, self.make_vec = policy, env_id, make_vec
        self.num_envs = int(num_envs)
        self.noise = noise
        self.slot_env_ids = list(slot_env_ids) if slot_env_ids is not None else [env_id] * self.num_envs
        if len(self.slot_env_ids) != self.num_envs:
            raise TrainingError(f"slot_env_ids has {len(self.slot_env_ids)} entries for {self.num_envs} envs")
        self.stop_on_success = bool(stop_on_success)
        self.labeller, self.mixing = labeller, mixing
        self.hooks = list(hooks)
        self.stats = stats if stats is not None else RolloutStats()
        self.bar = bar
        self.n_video = int(n_video)
        self.check_fit = check_fit
        # every distinct policy acts once per step; the labeller may be one of the drivers
        self.actors: list[PolicyLike] = [policy]
        for p in (mixing.policy if mixing else None, labeller):
            if p is not None and not any(p is q for q in self.actors):
                self.actors.append(p)
        self.contexts = [inference_context(p) for p in self.actors]
        self.queues: dict[str, deque[EpisodeTask]] = {e: deque() for e in dict.fromkeys(self.slot_env_ids)}
        self.frames: dict[int, list[np.ndarray]] = {}  # filmed episodes' frames by episode index
        self.fps = 30.0
        self.vec = None
        self._finished: list[EpisodeResult] = []

    # ------------------------------------------------------------------------------------------------ public
    def add(self, tasks: Iterable[EpisodeTask]) -> None:
        for task in tasks:
            key = task.env_id
            if key is None:
                if len(self.queues) > 1:
                    raise TrainingError(f"the slots of this rollout hold {len(self.queues)} env ids; give each episode "
                                        f"task its env_id")
                key = next(iter(self.queues))
            if key not in self.queues:
                raise TrainingError(f"no slot of this rollout runs {key!r}; its slots run {', '.join(self.queues)}")
            self.queues[key].append(task)

    @property
    def pending(self) -> int:
        """Episodes queued and not started yet."""
        return sum(len(q) for q in self.queues.values())

    def run(self, tasks: Iterable[EpisodeTask] = ()) -> list[EpisodeResult]:
        self.add(tasks)
        self._finished = []
        while self.pending:
            if self.vec is None:
                self._open()
            try:
                self._run_vec()
            except WORKER_LOST as e:
                self._handle_lost_worker(e)
        return self._finished

    def close(self) -> None:
        if self.vec is not None:
            vec, self.vec = self.vec, None
            try:
                vec.close()
            except Exception:  # noqa: BLE001 - a broken worker must not hide the results
                force_close(vec)

    def abandon(self) -> None:
        """Close without waiting (after an interrupt or an error)."""
        if self.vec is not None:
            force_close(self.vec)
            self.vec = None

    def __enter__(self) -> RolloutEngine:
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()

    # ------------------------------------------------------------------------------------------------ loop
    def _open(self) -> None:
        self.vec = self.make_vec()
        self.fps = float(self.vec.metadata.get("render_fps") or 30.0)
        if self.check_fit is not None:
            for p in self.actors:
                self.check_fit(p, self.vec)
        for p in self.actors:
            if hasattr(p, "bind"):  # the env's own teacher reads the simulators of this vector env
                p.bind(self.vec)
        self.infos_readers = [p for p in self.actors if hasattr(p, "see_infos")]
        self.idle = None  # unknown: sent with the first start

    def _act(self, obs) -> tuple[np.ndarray, list[np.ndarray], float]:
        K = self.num_envs
        da = self.vec.single_action_space.shape
        outs, ms = [], 0.0
        for j, (p, ctx) in enumerate(zip(self.actors, self.contexts)):
            t = time.perf_counter()
            with ctx():
                a = p.act(observation_for(p, obs))
            if j == 0:
                ms = (time.perf_counter() - t) * 1e3
            a = np.asarray(a, dtype=np.float32)
            if a.shape != (K, *da):
                raise TrainingError(
                    f"policy.act returned actions of shape {a.shape} but {self.env_id!r} needs "
                    f"({K}, {', '.join(map(str, da))}); the policy must return one action per env"
                )
            outs.append(a)
        return outs[0], outs, ms

    def _see_infos(self, infos: dict) -> None:
        """Actors that read the envs' infos (the env's own teacher) see every reset's and step's."""
        for p in self.infos_readers:
            p.see_infos(infos)

    def _index_of(self, policy) -> int:
        return next(j for j, p in enumerate(self.actors) if p is policy)

    def _run_vec(self) -> None:
        K = self.num_envs
        self.slots: list[_Running | None] = [None] * K
        self.recording = [False] * K  # slots whose current episode is filmed
        self.guard_record = [False] * K  # the flags last sent to the envs
        self.slot_frames: list[list[np.ndarray]] = [[] for _ in range(K)]
        for p in self.actors:
            p.reset(None)
        obs = self._start(list(range(K)), initial=True)
        b_index = self._index_of(self.mixing.policy) if self.mixing else None
        l_index = self._index_of(self.labeller) if self.labeller is not None else None
        first = True
        t0 = time.perf_counter()
        try:
            while any(s is not None for s in self.slots):
                actions, outs, ms = self._act(obs)
                if b_index is not None:
                    driven_by_b = np.array([s is not None and s.driver == "B" for s in self.slots])
                    if driven_by_b.any():
                        actions = np.where(driven_by_b[:, None], outs[b_index], actions)
                if self.noise is not None:
                    actions = self._add_noise(actions)
                if first:
                    self.stats.first_call_ms.append(ms)
                    first = False
                else:
                    self.stats.call_ms.append(ms)
                    self.stats.action_ms.append(ms / K)
                active = np.array([s is not None for s in self.slots])
                next_obs, rewards, terminated, truncated, infos = self.vec.step(actions)
                self._see_infos(infos)
                if self.hooks:
                    label_std = getattr(self.labeller, "last_std", None) if l_index is not None else None
                    step = StepData(obs, actions, outs[l_index] if l_index is not None else None,
                                    None if label_std is None else np.asarray(label_std, dtype=np.float32), rewards,
                                    terminated, truncated, next_obs, active)
                    for h in self.hooks:
                        h.on_step(step)
                obs = next_obs
                ended = []
                for i, ep in enumerate(self.slots):
                    if ep is None:
                        continue
                    self.stats.env_steps += 1
                    ep.ret += float(rewards[i])
                    ep.length += 1
                    if bool(_info_at(infos, "alloy_success", i, False)) and ep.steps_to_success is None:
                        ep.steps_to_success = ep.length
                        sim_t = float(_info_at(infos, "alloy_time", i, math.nan))
                        ep.time_to_success = sim_t if math.isfinite(sim_t) else None
                    failure = str(_info_at(infos, "alloy_failure", i, "") or "")
                    stop = self.stop_on_success and ep.steps_to_success is not None
                    if terminated[i] or truncated[i] or failure or stop:
                        if failure:
                            reason = failure
                        elif bool(_info_at(infos, "alloy_collision", i, False)):
                            reason = "collision"
                        elif truncated[i]:
                            reason = "timeout"
                        else:
                            reason = "other"
                        self._finish(i, reason, str(_info_at(infos, "alloy_error", i, "") or ""))
                        ended.append(i)
                if ended:
                    obs = self._start(ended, obs=obs)
        finally:
            self.stats.rollout_s += time.perf_counter() - t0

    def _add_noise(self, actions: np.ndarray) -> np.ndarray:
        noisy = [i for i, s in enumerate(self.slots) if s is not None and s.noise is not None]
        if not noisy:
            return actions
        space = self.vec.single_action_space
        out = np.array(actions, dtype=np.float32, copy=True)
        for i in noisy:
            out[i] += self.slots[i].noise.normal(0.0, float(self.noise.std), size=out[i].shape).astype(np.float32)
        return np.clip(out, space.low, space.high).astype(np.float32)

    def _finish(self, i: int, reason: str, error: str = "") -> None:
        ep = self.slots[i]
        if self.recording[i]:  # fetched first: if the worker dies here, the episode is replayed, not half-counted
            self._pull_frames()
            self.recording[i] = False
            frames = self.slot_frames[i]
            self.slot_frames[i] = []
            if frames:
                self.frames[ep.task.index] = frames
        success = ep.steps_to_success is not None
        result = EpisodeResult(
            env_id=self.slot_env_ids[i], index=ep.task.index, seed=ep.task.seed, success=success,
            reason="" if success else reason, ret=ep.ret, length=ep.length, steps_to_success=ep.steps_to_success,
            time_to_success=ep.time_to_success, error=error,
        )
        self._record(i, result)

    def _record(self, i: int, result: EpisodeResult) -> None:
        self.stats.results.append(result)
        self._finished.append(result)
        self.slots[i] = None
        for h in self.hooks:
            h.on_episode_end(i, result)
        if self.bar is not None:
            self.bar.update(1)

    def _pull_frames(self) -> None:
        """Fetch the frames every recording env holds (one call reaches all envs, and fetching clears them)."""
        for i, frames in enumerate(self.vec.call("alloy_pop_frames")):
            if self.recording[i] and frames:
                self.slot_frames[i].extend(frames)

    def _start(self, slots: Sequence[int], obs=None, initial: bool = False):
        """Give the next episodes to `slots` and reset them with their seeds; park slots with nothing left."""
        K = self.num_envs
        started = np.zeros(K, dtype=bool)
        pending = list(slots)
        while pending:
            mask = np.zeros(K, dtype=bool)
            park = np.zeros(K, dtype=bool)
            seeds: list[int | None] = [None] * K
            record = list(self.recording)
            for i in pending:
                queue = self.queues[self.slot_env_ids[i]]
                if queue:
                    task = queue.popleft()
                    driver = "B" if self.mixing is not None and mix_draw(self.mixing.beta, task.seed) else "A"
                    noise = None
                    if self.noise is not None and mix_draw(self.noise.episodes, task.seed, NOISE_SALT):
                        noise = np.random.default_rng(np.random.SeedSequence([int(task.seed), NOISE_SALT]))
                    self.slots[i] = _Running(task=task, driver=driver, noise=noise)
                    mask[i] = True
                    seeds[i] = task.seed
                    record[i] = task.index < self.n_video
                else:
                    park[i] = True  # reset while idle: the guard only clears the ended flag, simulating nothing
            idle = [self.slots[i] is None for i in range(K)]
            if idle != self.idle or initial:
                self.vec.set_attr("alloy_idle", idle)
                self.idle = idle
            if record != self.guard_record:  # also stops the recording of episodes the loop ended early
                self.vec.set_attr("alloy_record", record)
                self.guard_record = list(record)
            self.recording = record
            initial = False
            if not (mask | park).any():
                break
            obs, infos = self.vec.reset(seed=seeds, options={"reset_mask": mask | park})
            self._see_infos(infos)
            pending = []
            for i in np.flatnonzero(mask):
                failure = str(_info_at(infos, "alloy_failure", i, "") or "")
                if failure:  # the episode could not even start: it counts, as a failure, and the slot moves on
                    ep = self.slots[i]
                    self._record(i, EpisodeResult(
                        env_id=self.slot_env_ids[i], index=ep.task.index, seed=ep.task.seed, success=False,
                        reason=failure,
                        ret=0.0, length=0, error=str(_info_at(infos, "alloy_error", i, "") or "")))
                    pending.append(i)
                else:
                    started[i] = True
        if started.any() and obs is not None:
            for p in self.actors:
                p.reset(started)
            for i in np.flatnonzero(started):
                ep = self.slots[i]
                first = {k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else {"obs": obs[i]}
                for h in self.hooks:
                    h.on_episode_start(int(i), ep.task, first, ep.driver, ep.noise is not None)
        return obs

    def _handle_lost_worker(self, error: BaseException) -> None:
        """A worker process died or hung: fail the episodes it held, replay the others' on a new vector env."""
        processes = getattr(self.vec, "processes", [])
        # env i lives in worker env_workers[i] (AsyncVectorEnv: one worker per env)
        env_workers = getattr(self.vec, "env_workers", list(range(len(processes))))
        deadline = time.monotonic() + 5.0
        while processes and all(p.is_alive() for p in processes) and time.monotonic() < deadline:
            time.sleep(0.01)
        dead = {w for w, p in enumerate(processes) if not p.is_alive()}
        if not dead:
            raise RuntimeError(f"the vector env of {self.env_id!r} lost contact with a worker that is still alive")
        why = str(error).strip().splitlines()[0] if str(error).strip() else ""
        replay = []
        for i, ep in enumerate(self.slots):
            if ep is None:
                continue
            if env_workers[i] in dead:
                self.recording[i] = False
                code = processes[env_workers[i]].exitcode
                reason = why if why and not isinstance(error, (EOFError, BrokenPipeError, ConnectionResetError)) \
                    else f"worker process died (exit code {code})"
                self._record(i, EpisodeResult(
                    env_id=self.slot_env_ids[i], index=ep.task.index, seed=ep.task.seed, success=False,
                    reason="exception",
                    ret=ep.ret, length=ep.length, error=reason))
            else:
                replay.append(ep.task)
                self.slots[i] = None
                for h in self.hooks:
                    h.on_episode_abort(i)
        for task in sorted(replay, key=lambda t: t.index, reverse=True):
            self.queues[task.env_id or next(iter(self.queues))].appendleft(task)
        force_close(self.vec)
        self.vec = None
        log.warning("a worker of %s was lost (%s); replaying %d in-flight episodes on a new vector env",
                    self.env_id, why or type(error).__name__, len(replay))
