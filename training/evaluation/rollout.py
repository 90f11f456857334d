"""The evaluation loop: batched policy inference over a vector env, with explicitly seeded episodes.

Episode `i` of an evaluation is always reset with `episode_seed(seed, i)`, whichever worker runs it and whatever
the policy does, so two runs and two policies see the same initial states; with a deterministic policy two runs
give identical outcomes. The vector env never auto-resets: the loop resets exactly the envs whose episode ended,
with the next episode's seed, and calls `policy.reset(mask)` for those envs only.

A failure inside one env (exception, non-finite state, MuJoCo divergence) ends that episode as a failure (see
`guard.py`); a worker process that dies outright fails its episode, the vector env is rebuilt and the episodes
that were in flight elsewhere are replayed from their seeds. Ctrl-C writes the report of the finished episodes
(`partial: true`) before the interrupt propagates.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import TrainingError
from training.evaluation.guard import RolloutGuard
from training.evaluation.metrics import EpisodeResult
from training.evaluation.policy_loader import check_policy_matches_env, describe_policy
from training.evaluation.report import build_report, write_report
from training.evaluation.teacher import TeacherPolicy
from training.evaluation.video import write_video

log = logging.getLogger(__name__)

_WORKER_DIED = (EOFError, BrokenPipeError, ConnectionResetError)


def episode_seed(seed: int, index: int) -> int:
    """The reset seed of episode `index` of an evaluation with `seed` (independent of workers and policy)."""
    state = np.random.SeedSequence([int(seed) % 2**63, int(index)]).generate_state(1, dtype=np.uint32)
    return int(state[0])


def _safe_name(env_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in env_id)


@dataclass
class _Episode:
    index: int
    seed: int
    ret: float = 0.0
    length: int = 0
    steps_to_success: int | None = None
    time_to_success: float | None = None


@dataclass
class _Totals:
    """Everything measured so far, over all env ids (what a partial report is made of)."""

    results: list[EpisodeResult] = field(default_factory=list)
    call_ms: list[float] = field(default_factory=list)
    action_ms: list[float] = field(default_factory=list)
    first_call_ms: list[float] = field(default_factory=list)
    env_steps: int = 0
    rollout_s: float = 0.0
    videos: list[str] = field(default_factory=list)


def _info_at(infos: dict, key: str, i: int, default: Any = None) -> Any:
    values = infos.get(key)
    if values is None:
        return default
    mask = infos.get(f"_{key}")
    return values[i] if mask is None or mask[i] else default


def _force_close(vec) -> None:
    """Close a vector env now, without waiting for a call in flight (its worker may be dead or interrupted)."""
    try:
        from gymnasium.vector.async_vector_env import AsyncState

        if hasattr(vec, "_state"):
            vec._state = AsyncState.DEFAULT
    except ImportError:
        pass
    with contextlib.suppress(Exception):
        vec.close(terminate=True)


def _inference_context(policy) -> Callable[[], Any]:
    """No autograd bookkeeping around a torch policy's `act`; nothing for anything else (chosen once, up front)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(policy, torch.nn.Module):
        return torch.no_grad  # not inference_mode: its tensors could not be updated by `reset` outside it
    return contextlib.nullcontext


class _EnvRollout:
    """Runs the episodes of one env id on one vector env (rebuilt if a worker process dies)."""

    def __init__(self, policy, env_id: str, make_vec: Callable[[], Any], episodes: int, num_envs: int, seed: int,
                 n_video: int, stop_on_success: bool, totals: _Totals, bar):
        self.policy, self.env_id, self.make_vec = policy, env_id, make_vec
        self.episodes, self.num_envs, self.seed = episodes, num_envs, seed
        self.n_video, self.stop_on_success = n_video, stop_on_success
        self.totals, self.bar = totals, bar
        self.queue = deque(range(episodes))
        self.frames: dict[int, list[np.ndarray]] = {}
        self.vec = None
        self.fps = 30.0
        self.no_grad = _inference_context(policy)

    # ------------------------------------------------------------------------------------------------------
    def run(self) -> None:
        interrupted = False
        try:
            while self.queue:
                self.vec = self.make_vec()
                self.fps = float(self.vec.metadata.get("render_fps") or 30.0)
                check_policy_matches_env(
                    self.policy, self.vec.single_observation_space, self.vec.single_action_space, self.env_id
                )
                if isinstance(self.policy, TeacherPolicy):
                    self.policy.bind(self.vec)
                try:
                    self._run_vec()
                except _WORKER_DIED:
                    self._handle_dead_worker()
                    continue
                self.vec.close()
                self.vec = None
        except KeyboardInterrupt:
            interrupted = True  # the partial report comes first; no video encoding on the way out
            raise
        finally:
            if self.vec is not None:
                _force_close(self.vec)
                self.vec = None
            if self.n_video and self.frames and not interrupted:
                self._write_video()

    def _write_video(self) -> None:
        episodes = [self.frames[k] for k in sorted(self.frames)]
        path = Path(self.video_dir) / f"{_safe_name(self.env_id)}.mp4"
        try:
            if write_video(path, episodes, fps=self.fps) is not None:
                self.totals.videos.append(str(path))
        except Exception as e:  # a missing encoder costs the video, never the report
            log.warning("could not write video %s: %s", path, e)

    # ------------------------------------------------------------------------------------------------------
    def _run_vec(self) -> None:
        K = self.num_envs
        self.slots: list[_Episode | None] = [None] * K
        self.recording = [False] * K  # slots whose current episode is filmed
        self.guard_record = [False] * K  # the flags last sent to the envs
        self.slot_frames: list[list[np.ndarray]] = [[] for _ in range(K)]
        self.idle = [False] * K
        self.policy.reset(None)
        obs = self._start(list(range(K)), initial=True)
        first = True
        t0 = time.perf_counter()
        try:
            while any(s is not None for s in self.slots):
                t = time.perf_counter()
                with self.no_grad():
                    actions = self.policy.act(obs)
                ms = (time.perf_counter() - t) * 1e3
                actions = np.asarray(actions, dtype=np.float32)
                da = self.vec.single_action_space.shape
                if actions.shape != (K, *da):
                    raise TrainingError(
                        f"policy.act returned actions of shape {actions.shape} but {self.env_id!r} needs ({K}, {', '.join(map(str, da))}); "
                        "the policy must return one action per env"
                    )
                if first:
                    self.totals.first_call_ms.append(ms)
                    first = False
                else:
                    self.totals.call_ms.append(ms)
                    self.totals.action_ms.append(ms / K)
                obs, rewards, terminated, truncated, infos = self.vec.step(actions)
                ended = []
                for i, ep in enumerate(self.slots):
                    if ep is None:
                        continue
                    self.totals.env_steps += 1
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
            self.totals.rollout_s += time.perf_counter() - t0

    def _finish(self, i: int, reason: str, error: str = "") -> None:
        ep = self.slots[i]
        if self.recording[i]:  # fetched first: if the worker dies here, the episode is replayed, not half-counted
            self._pull_frames()
            self.recording[i] = False
            frames = self.slot_frames[i]
            self.slot_frames[i] = []
            if frames:
                self.frames[ep.index] = frames
        success = ep.steps_to_success is not None
        self.totals.results.append(EpisodeResult(
            env_id=self.env_id, index=ep.index, seed=ep.seed, success=success, reason="" if success else reason,
            ret=ep.ret, length=ep.length, steps_to_success=ep.steps_to_success,
            time_to_success=ep.time_to_success, error=error,
        ))
        self.slots[i] = None
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
                if self.queue:
                    index = self.queue.popleft()
                    self.slots[i] = _Episode(index=index, seed=episode_seed(self.seed, index))
                    mask[i] = True
                    seeds[i] = self.slots[i].seed
                    record[i] = index < self.n_video
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
            pending = []
            for i in np.flatnonzero(mask):
                failure = str(_info_at(infos, "alloy_failure", i, "") or "")
                if failure:  # the episode could not even start: it counts, as a failure, and the slot moves on
                    self._finish(i, failure, str(_info_at(infos, "alloy_error", i, "") or ""))
                    pending.append(i)
                else:
                    started[i] = True
        if started.any() and obs is not None:
            self.policy.reset(started)
        return obs

    def _handle_dead_worker(self) -> None:
        """A worker process died: fail the episodes it held, replay the others' from their seeds on a new vec env."""
        processes = getattr(self.vec, "processes", [])
        # env i lives in worker env_workers[i] (AsyncVectorEnv: one worker per env)
        env_workers = getattr(self.vec, "env_workers", list(range(len(processes))))
        deadline = time.monotonic() + 5.0
        while processes and all(p.is_alive() for p in processes) and time.monotonic() < deadline:
            time.sleep(0.01)
        dead = {w for w, p in enumerate(processes) if not p.is_alive()}
        if not dead:
            raise RuntimeError(f"the vector env of {self.env_id!r} lost contact with a worker that is still alive")
        replay = []
        for i, ep in enumerate(self.slots):
            if ep is None:
                continue
            if env_workers[i] in dead:
                self.recording[i] = False
                self._fail_dead(i, processes[env_workers[i]].exitcode)
            else:
                replay.append(ep.index)
                self.slots[i] = None
        self.queue.extendleft(sorted(replay, reverse=True))
        _force_close(self.vec)
        self.vec = None
        log.warning("a worker of %s died; replaying %d in-flight episodes on a new vector env", self.env_id, len(replay))

    def _fail_dead(self, i: int, exitcode) -> None:
        ep = self.slots[i]
        self.totals.results.append(EpisodeResult(
            env_id=self.env_id, index=ep.index, seed=ep.seed, success=False, reason="exception",
            ret=ep.ret, length=ep.length, error=f"worker process died (exit code {exitcode})",
        ))
        self.slots[i] = None
        self.bar.update(1)


@contextlib.contextmanager
def _policy_threads(layout: dict):
    """Caps a torch policy's intra-op threads at the cores the env workers leave free while the envs run, and
    yields the count (None without torch). OpenMP threads spin while they wait for work, so a policy thread on the
    core a worker steps on slows both."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield None
        return
    from envs.vector import available_cores

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, available_cores() - layout["worker_processes"])))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def evaluate(
    policy: Any,
    env_ids: str | Sequence[str],
    episodes: int,
    num_envs: int,
    seed: int,
    env_kwargs: dict | None = None,
    video: bool = False,
    run_dir: str | Path | None = None,
    asynchronous: bool = True,
    progress: bool = True,
    *,
    video_episodes: int = 4,
    max_episode_steps: int | None = None,
    stop_on_success: bool = True,
    env_fn: Callable[..., Any] | None = None,
    policy_name: str | None = None,
    config: dict | None = None,
    workers: int | None = None,
) -> dict:
    """Roll `policy` out for `episodes` episodes on each env id and return the report (see `report.py`).

    `policy` has `reset(mask)` and batched `act(obs) -> (num_envs, action_dim)`, or is the string "teacher".
    With `run_dir`, report.json, report.md, plots and (with `video`) one tiled mp4 per env id of its first
    `video_episodes` episodes are written there. An episode ends at the env's termination or truncation, at
    `max_episode_steps` when given, and at its first success when `stop_on_success`. `env_fn` makes the envs
    instead of `envs.make_env` (for envs alloy does not register); `config` is merged into the report's config.
    With `asynchronous` the envs step in parallel, laid out by `workers` (see `envs.vector.make_vec_env`: None
    is one group per core with this process stepping the first; N is N worker processes; N = num_envs isolates
    every env in its own process); a single env always runs in this process.
    """
    from envs.vector import make_vec_env, vector_layout
    from gymnasium.vector import AutoresetMode
    from tqdm import tqdm

    env_ids = [env_ids] if isinstance(env_ids, str) else list(env_ids)
    if not env_ids:
        raise TrainingError("no env to evaluate on; pass env=<env id or suite name>")
    if int(episodes) <= 0:
        raise TrainingError(f"episodes must be a positive integer, got {episodes}; use episodes=1 or more")
    if int(num_envs) <= 0:
        raise TrainingError(f"num_envs must be a positive integer, got {num_envs}; use num_envs=1 or more")
    if max_episode_steps is not None and int(max_episode_steps) <= 0:
        raise TrainingError(f"max_episode_steps must be positive, got {max_episode_steps}; leave it unset for the env's own limit")
    if video_episodes < 0:
        raise TrainingError(f"video_episodes must be 0 or more, got {video_episodes}")
    spec_name = policy_name or ("teacher" if isinstance(policy, str) else None)
    if isinstance(policy, str):
        if policy != "teacher":
            raise TrainingError(f"policy {policy!r} is not an object; load it with training.evaluation.load_policy first")
        policy = TeacherPolicy()
    if hasattr(policy, "eval") and callable(policy.eval):
        policy.eval()
    episodes, env_kwargs = int(episodes), dict(env_kwargs or {})
    k = min(int(num_envs), episodes)
    asynchronous = bool(asynchronous) and k > 1  # one env gains nothing from a worker process, only a round trip
    n_video = min(int(video_episodes), k) if video else 0
    run_path = Path(run_dir) if run_dir is not None else None
    if n_video and run_path is None:
        raise TrainingError("video=true needs a run directory to write the videos to")

    cfg = {
        "policy": describe_policy(policy, spec_name),
        "env_ids": env_ids,
        "episodes": episodes,
        "num_envs": k,
        "num_envs_requested": int(num_envs),
        "seed": int(seed),
        "env_kwargs": env_kwargs,
        "asynchronous": bool(asynchronous),
        "workers": workers,
        "vector_env": vector_layout(k, asynchronous, workers),
        "max_episode_steps": max_episode_steps,
        "stop_on_success": bool(stop_on_success),
        "video": bool(video),
        "video_episodes": n_video,
        **(config or {}),
    }
    cfg["policy_threads"] = None
    totals = _Totals()
    guard = functools.partial(RolloutGuard, max_episode_steps=max_episode_steps, keep_info=False)

    def report(partial: bool) -> dict:
        files = {"videos": [str(Path(v).relative_to(run_path)) for v in totals.videos]} if run_path else {}
        r = build_report(totals.results, env_ids, totals.call_ms, totals.action_ms, totals.first_call_ms,
                         totals.env_steps, totals.rollout_s, cfg, partial=partial, files=files)
        return write_report(r, run_path, totals.call_ms) if run_path is not None else r

    log.info("evaluating %s on %d env id(s), %d episodes each, %d envs%s", cfg["policy"], len(env_ids), episodes, k,
             " (in-process)" if not asynchronous else "")
    bar = tqdm(total=episodes * len(env_ids), desc="eval", unit="ep", disable=not progress, leave=False)
    try:
        with _policy_threads(cfg["vector_env"]) as threads:
            cfg["policy_threads"] = threads
            for env_id in env_ids:
                make = functools.partial(
                    make_vec_env, env_id, k, int(seed), asynchronous, render_envs=n_video, wrappers=(guard,),
                    autoreset_mode=AutoresetMode.DISABLED, env_fn=env_fn, workers=workers, **env_kwargs,
                )
                rollout = _EnvRollout(policy, env_id, make, episodes, k, int(seed), n_video, stop_on_success, totals,
                                      bar)
                rollout.video_dir = run_path / "videos" if run_path else None
                rollout.run()
    except KeyboardInterrupt:
        bar.close()
        if run_path is not None:
            report(partial=True)
            log.warning("interrupted: wrote the partial report of %d finished episodes to %s", len(totals.results), run_path)
        raise
    bar.close()
    return report(partial=False)
