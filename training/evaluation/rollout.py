"""Rollout evaluation: the one rollout engine (`training.rollout`) run over each env id, and a report.

Episode `i` of an evaluation is always reset with `episode_seed(seed, i)`, whichever worker runs it and whatever
the policy does, so two runs and two policies see the same initial states; with a deterministic policy two runs
give identical outcomes. Ctrl-C writes the report of the finished episodes (`partial: true`) before the interrupt
propagates. Failures inside an env and lost workers are handled by the engine (see `training/rollout/engine.py`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.errors import TrainingError
from training.evaluation.guard import RolloutGuard
from training.evaluation.policy_loader import check_policy_matches_env, describe_policy
from training.evaluation.report import build_report, write_report
from training.evaluation.teacher import TeacherPolicy
from training.evaluation.video import write_video
from training.rollout.engine import EpisodeTask, RolloutEngine, RolloutStats, episode_seed, policy_threads

if TYPE_CHECKING:  # the interface is a type only: worker processes must not import torch through it
    from policies.interface import PolicyLike

log = logging.getLogger(__name__)

__all__ = ["episode_seed", "evaluate", "check_fits_vec"]


def _safe_name(env_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in env_id)


def check_fits_vec(env_id: str) -> Callable[[Any, Any], None]:
    """The engine's fit check for `env_id`: the policy's observation and action spec against the vector env."""
    def check(policy, vec) -> None:
        check_policy_matches_env(policy, vec.single_observation_space, vec.single_action_space, env_id)
    return check


def _write_video(engine: RolloutEngine, video_dir: Path, videos: list[str], fps: float | None = None) -> None:
    """The filmed episodes tiled into one mp4, at `fps` or else the env's control rate (real time)."""
    episodes = [engine.frames[k] for k in sorted(engine.frames)]
    if not episodes:
        log.warning("video: %s gave no frames (its render() failed or returned nothing; a Gymnasium env may need its "
                    "render extra, e.g. pygame); no video written", engine.env_id)
        return
    path = video_dir / f"{_safe_name(engine.env_id)}.mp4"
    fps = float(fps or engine.fps)
    try:
        if write_video(path, episodes, fps=fps) is not None:
            videos.append(str(path))
            speed = "real time" if fps == engine.fps else f"{fps / engine.fps:.2g}x real time"
            log.info("video %s: %d episode(s) at %g fps (%s)", path, len(episodes), fps, speed)
    except Exception as e:  # noqa: BLE001 - a missing encoder costs the video, never the report
        log.warning("could not write video %s: %s", path, e)


def video_plan(video: bool, video_episodes: int, episodes: int, num_envs: int) -> tuple[int, int]:
    """(episodes filmed per env id, envs that render): every asked episode up to the episodes run, whatever the
    number of envs (a rendering env films the episodes it runs one after the other)."""
    if not video:
        return 0, 0
    filmed = min(int(video_episodes), int(episodes))
    if filmed < int(video_episodes):
        log.info("video: filming %d episode(s) per env id, not video_episodes=%d: only %d are run", filmed,
                 int(video_episodes), int(episodes))
    return filmed, min(filmed, int(num_envs))


def evaluate(
    policy: PolicyLike | str,
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
    video_fps: float | None = None,
    max_episode_steps: int | None = None,
    stop_on_success: bool = True,
    env_fn: Callable[..., Any] | None = None,
    policy_name: str | None = None,
    config: dict | None = None,
    workers: int | None = None,
) -> dict:
    """Roll `policy` out for `episodes` episodes on each env id and return the report (see `report.py`).

    `policy` is any `policies.PolicyLike` (`reset(mask)`, batched `act(obs) -> (num_envs, action_dim)`,
    `obs_spec`, `action_dim`), or the string "teacher".
    With `run_dir`, report.json, report.md, plots and (with `video`) one tiled mp4 per env id of its first
    `video_episodes` episodes are written there. An episode ends at the env's termination or truncation, at
    `max_episode_steps` when given, and at its first success when `stop_on_success`. Videos play at `video_fps`, by
    default the env's control rate (`metadata["render_fps"]`: real time). `env_fn` makes the envs
    instead of `envs.make_env` (for envs alloy does not register); `config` is merged into the report's config.
    With `asynchronous` the envs step in parallel, laid out by `workers` (see `envs.vector.make_vec_env`: None
    is one group per core with this process stepping the first; N is N worker processes; N = num_envs isolates
    every env in its own process); a single env always runs in this process.
    """
    from gymnasium.vector import AutoresetMode
    from tqdm import tqdm

    from envs.vector import make_vec_env, vector_layout

    env_ids = [env_ids] if isinstance(env_ids, str) else list(env_ids)
    if not env_ids:
        raise TrainingError("no env to evaluate on; pass env=<env id or suite name>")
    if int(episodes) <= 0:
        raise TrainingError(f"episodes must be a positive integer, got {episodes}; use episodes=1 or more")
    if int(num_envs) <= 0:
        raise TrainingError(f"num_envs must be a positive integer, got {num_envs}; use num_envs=1 or more")
    if max_episode_steps is not None and int(max_episode_steps) <= 0:
        raise TrainingError(f"max_episode_steps must be positive, got {max_episode_steps}; "
                            "leave it unset for the env's own limit")
    if video_episodes < 0:
        raise TrainingError(f"video_episodes must be 0 or more, got {video_episodes}")
    if video_fps is not None and video_fps <= 0:
        raise TrainingError(f"video_fps must be positive, got {video_fps}; leave it unset for real time")
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
    n_video, render_envs = video_plan(video, video_episodes, episodes, k)
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
        "video_episodes_requested": int(video_episodes),
        "video_fps": {},  # per env id: the mp4's frame rate (the env's control rate unless video_fps was given)
        **(config or {}),
    }
    cfg["policy_threads"] = None
    totals = RolloutStats()
    videos: list[str] = []
    guard = functools.partial(RolloutGuard, max_episode_steps=max_episode_steps, keep_info=False)

    def report(partial: bool) -> dict:
        files = {"videos": [str(Path(v).relative_to(run_path)) for v in videos]} if run_path else {}
        r = build_report(totals.results, env_ids, totals.call_ms, totals.action_ms, totals.first_call_ms,
                         totals.env_steps, totals.rollout_s, cfg, partial=partial, files=files)
        return write_report(r, run_path, totals.call_ms) if run_path is not None else r

    log.info("evaluating %s on %d env id(s), %d episodes each, %d envs%s", cfg["policy"], len(env_ids), episodes, k,
             " (in-process)" if not asynchronous else "")
    bar = tqdm(total=episodes * len(env_ids), desc="eval", unit="ep", disable=not progress, leave=False)
    try:
        with policy_threads(cfg["vector_env"]["worker_processes"]) as threads:
            cfg["policy_threads"] = threads
            for env_id in env_ids:
                make = functools.partial(
                    make_vec_env, env_id, k, int(seed), asynchronous, render_envs=render_envs, wrappers=(guard,),
                    autoreset_mode=AutoresetMode.DISABLED, env_fn=env_fn, workers=workers, **env_kwargs,
                )
                engine = RolloutEngine(policy, env_id, make, k, stop_on_success=stop_on_success, stats=totals,
                                       bar=bar, n_video=n_video, check_fit=check_fits_vec(env_id))
                interrupted = False
                try:
                    with engine:
                        engine.run(EpisodeTask(i, episode_seed(int(seed), i)) for i in range(episodes))
                except KeyboardInterrupt:
                    interrupted = True  # the partial report comes first; no video encoding on the way out
                    raise
                finally:
                    if n_video and run_path is not None and not interrupted:
                        _write_video(engine, run_path / "videos", videos, video_fps)
                        cfg["video_fps"][env_id] = float(video_fps or engine.fps)
    except KeyboardInterrupt:
        bar.close()
        if run_path is not None:
            report(partial=True)
            log.warning("interrupted: wrote the partial report of %d finished episodes to %s", len(totals.results), run_path)
        raise
    bar.close()
    return report(partial=False)
