"""Roll out a teacher over many episodes in parallel worker processes and write one Minari dataset per env.

The teacher is either the env's own privileged teacher (`teacher_action()`: the nav planner or Meta-World's
scripted expert) or a saved policy directory. Each episode's seed comes from the base seed, the env id and the
episode number only, so a task's data does not change when other tasks are collected in the same run, and any
episode can be replayed from the seed stored in the dataset. Rollouts never write anything: datasets are written
once every rollout is done, so an interrupted run leaves no partial dataset.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.datasets_io import Episode, alloy_version, data_root, dataset_dir, write_dataset
from training.errors import TrainingError

log = logging.getLogger(__name__)

ENV_TEACHER = "teacher"
MAX_STEPS = 100_000  # no alloy env is that long; a longer episode means an env that never ends


# ----------------------------------------------------------------------------------------------------------------
# What to collect
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One env to collect in and the dataset it becomes."""

    env_id: str
    dataset_id: str
    env_kwargs: dict[str, Any]
    suite: str


def teacher_kind(teacher: str) -> str:
    return "env" if teacher == ENV_TEACHER else "policy"


def _env_teacher_name(env_id: str) -> tuple[str, str]:
    """(dataset name, description) of the env's own teacher."""
    if env_id.startswith("metaworld/"):
        return "expert", "Meta-World v3 scripted expert (metaworld.policies)"
    return "planner", "alloy navigation planner (privileged, envs.nav.teacher)"


def dataset_id_for(env_id: str, name: str) -> str:
    """`metaworld/<task>/<name>-v0` or `nav/<embodiment>/<name>-v0` (ARCHITECTURE.md)."""
    if env_id.startswith("metaworld/"):
        return f"{env_id}/{name}-v0"
    from envs import nav

    if env_id in nav.ENV_IDS:
        return f"nav/{nav.EMBODIMENTS[list(nav.ENV_IDS).index(env_id)]}/{name}-v0"
    raise TrainingError(f"no dataset naming rule for env {env_id!r}; collect in a Meta-World or nav env")


def select_targets(
    suite: str,
    tasks: Sequence[str] = (),
    embodiment: str = "",
    teacher: str = ENV_TEACHER,
    name: str = "",
    env_kwargs: dict[str, Any] | None = None,
    stop_on_success: bool = True,
) -> list[Target]:
    """The envs to collect in: the suite's, narrowed to Meta-World `tasks` or one nav `embodiment`."""
    from envs.errors import EnvError
    from envs.suites import suite_env_ids

    env_ids = suite_env_ids(suite)
    if tasks:
        if not suite.startswith("metaworld"):
            raise TrainingError(f"tasks= selects Meta-World tasks but suite={suite}; use suite=metaworld_mt50 tasks=[...]")
        from envs import metaworld

        unknown = [t for t in tasks if t not in metaworld.TASKS]
        if unknown:
            raise TrainingError(f"unknown Meta-World task(s) {', '.join(unknown)}; known tasks: {', '.join(metaworld.TASKS)}")
        env_ids = [metaworld.env_id(t) for t in tasks]
    if embodiment:
        if suite != "nav":
            raise TrainingError(f"embodiment= selects a nav robot but suite={suite}; use suite=nav embodiment={embodiment}")
        from envs import nav

        if embodiment not in nav.EMBODIMENTS:
            raise TrainingError(f"unknown embodiment {embodiment!r}; known: {', '.join(nav.EMBODIMENTS)}")
        env_ids = [nav.ENV_IDS[list(nav.EMBODIMENTS).index(embodiment)]]
    targets = []
    for env_id in env_ids:
        kwargs = dict(env_kwargs or {})
        if env_id.startswith("metaworld/"):
            # Demonstrations end at success (as Meta-World's own terminate-on-success option): no idle tail.
            kwargs.setdefault("terminate_on_success", bool(stop_on_success))
        dname = name or (_env_teacher_name(env_id)[0] if teacher == ENV_TEACHER else "policy")
        try:
            targets.append(Target(env_id, dataset_id_for(env_id, dname), kwargs, suite))
        except EnvError as e:
            raise TrainingError(str(e)) from None
    return targets


def episode_seed(base_seed: int, env_id: str, episode: int) -> int:
    """A 31-bit seed that depends only on the base seed, the env id and the episode number."""
    state = np.random.SeedSequence([int(base_seed) & 0xFFFFFFFF, zlib.crc32(env_id.encode()), int(episode)])
    return int(state.generate_state(1)[0] & 0x7FFFFFFF)


# ----------------------------------------------------------------------------------------------------------------
# Rollouts (run in worker processes)
# ----------------------------------------------------------------------------------------------------------------

_ENVS: dict[tuple, Any] = {}
_POLICIES: dict[str, Any] = {}


def _worker_init() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def _env(env_id: str, env_kwargs: dict[str, Any]):
    key = (env_id, tuple(sorted((k, repr(v)) for k, v in env_kwargs.items())))
    if key not in _ENVS:
        from envs import make_env

        _ENVS[key] = make_env(env_id, **env_kwargs)
    return _ENVS[key]


def load_teacher_policy(path: str, device: str = "cpu"):
    """A saved policy (`Policy.from_pretrained`) as a teacher; TrainingError if it cannot be loaded."""
    if path not in _POLICIES:
        directory = Path(path).expanduser()
        if not directory.is_dir():
            raise TrainingError(f"teacher {path!r} is neither `teacher` nor a saved policy directory")
        try:
            from policies import Policy
        except ImportError as e:
            raise TrainingError(f"cannot load the saved-policy teacher {path!r}: policies are not available ({e})") from None
        try:
            policy = Policy.from_pretrained(directory, device=device)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise TrainingError(
                f"cannot load the saved-policy teacher {path!r} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                "pass a directory written by save_pretrained"
            ) from None
        if hasattr(policy, "eval"):
            policy.eval()
        _POLICIES[path] = policy
    return _POLICIES[path]


def _stack(items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(o[k], dtype=np.float32) for o in items]) for k in items[0]}


def rollout(job: tuple) -> tuple[int, int, Episode]:
    """Run one episode; `job` = (target index, episode number, env id, env kwargs, seed, teacher, device)."""
    target_index, episode, env_id, env_kwargs, seed, teacher, device = job
    env = _env(env_id, env_kwargs)
    policy = None
    if teacher != ENV_TEACHER:
        policy = load_teacher_policy(teacher, device)
        policy.reset()
    obs, info = env.reset(seed=int(seed))
    observations, actions, rewards, terms, truncs = [obs], [], [], [], []
    success = bool(info.get("is_success", False))
    for _ in range(MAX_STEPS):
        if policy is None:
            action = np.asarray(env.unwrapped.teacher_action(), dtype=np.float32)
        else:
            batch = {k: np.asarray(v, dtype=np.float32)[None] for k, v in obs.items()}
            action = np.asarray(policy.act(batch), dtype=np.float32)[0]
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(float(reward))
        terms.append(bool(terminated))
        truncs.append(bool(truncated))
        success = success or bool(info.get("is_success", False))
        if terminated or truncated:
            break
    else:
        raise TrainingError(f"an episode of {env_id} did not end within {MAX_STEPS} steps; give the env a time limit")
    return target_index, episode, Episode(
        observations=_stack(observations) if isinstance(obs, dict) else {"obs": np.stack(observations).astype(np.float32)},
        actions=np.stack(actions).astype(np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminations=np.asarray(terms),
        truncations=np.asarray(truncs),
        seed=int(seed),
        success=success,
    )


# ----------------------------------------------------------------------------------------------------------------
# The collection run
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class TargetResult:
    env_id: str
    dataset_id: str
    attempts: int = 0
    successes: int = 0
    kept: int = 0
    steps: int = 0
    episodes: list[Episode] = field(default_factory=list, repr=False)

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "env_id": self.env_id,
            "dataset_id": self.dataset_id,
            "attempts": self.attempts,
            "successes": self.successes,
            "success_rate": self.success_rate,
            "episodes_kept": self.kept,
            "steps_kept": self.steps,
        }


def _run_jobs(jobs: list[tuple], workers: int, bar) -> list[tuple[int, int, Episode]]:
    if workers <= 1 or len(jobs) <= 1:
        _worker_init()
        out = []
        for job in jobs:
            out.append(rollout(job))
            bar.update(1)
        return out
    ctx = multiprocessing.get_context("spawn")  # safe with CUDA and threads in the parent
    out = []
    with ctx.Pool(processes=min(workers, len(jobs)), initializer=_worker_init) as pool:
        for result in pool.imap_unordered(rollout, jobs, chunksize=1):
            out.append(result)
            bar.update(1)
    return out


def collect(
    targets: Sequence[Target],
    episodes: int,
    seed: int = 0,
    workers: int = 0,
    only_success: bool = False,
    teacher: str = ENV_TEACHER,
    max_attempts_factor: int = 3,
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = True,
    embed_instructions: bool = True,
) -> list[TargetResult]:
    """Collect `episodes` episodes per target and write each target's dataset; returns per-target results.

    With `only_success`, failed episodes are dropped and replaced by fresh seeds until `episodes` successes are kept
    or `max_attempts_factor * episodes` rollouts were tried; the success rate counts every rollout.
    """
    from tqdm import tqdm

    if episodes < 1:
        raise TrainingError(f"episodes must be >= 1, got {episodes}")
    if max_attempts_factor < 1:
        raise TrainingError(f"max_attempts_factor must be >= 1, got {max_attempts_factor}")
    if not targets:
        raise TrainingError("nothing to collect: the selection has no envs")
    workers = int(workers) if workers and workers > 0 else (os.cpu_count() or 1)
    if not overwrite:
        existing = [t.dataset_id for t in targets if (dataset_dir(t.dataset_id) / "data").exists()]
        if existing:
            raise TrainingError(
                f"dataset(s) already exist: {', '.join(existing[:5])}{' ...' if len(existing) > 5 else ''}; "
                "pass overwrite=true to replace them"
            )
    if teacher != ENV_TEACHER:
        _check_policy_teacher(teacher, targets, device)

    results = [TargetResult(t.env_id, t.dataset_id) for t in targets]
    next_episode = [0] * len(targets)
    max_attempts = max_attempts_factor * episodes

    def jobs_for(index: int, count: int) -> list[tuple]:
        t = targets[index]
        start = next_episode[index]
        next_episode[index] += count
        return [
            (index, e, t.env_id, t.env_kwargs, episode_seed(seed, t.env_id, e), teacher, device)
            for e in range(start, start + count)
        ]

    jobs = [job for i in range(len(targets)) for job in jobs_for(i, episodes)]
    with tqdm(total=len(jobs), desc="collect", unit="ep", disable=not progress, dynamic_ncols=True) as bar:
        while jobs:
            done = _run_jobs(jobs, workers, bar)
            for index, _, ep in sorted(done, key=lambda r: (r[0], r[1])):
                r = results[index]
                r.attempts += 1
                r.successes += int(ep.success)
                if ep.success or not only_success:
                    if r.kept < episodes:
                        r.episodes.append(ep)
                        r.kept += 1
                        r.steps += len(ep)
            jobs = []
            if only_success:
                for i, r in enumerate(results):
                    missing = min(episodes - r.kept, max_attempts - r.attempts)
                    if missing > 0:
                        jobs += jobs_for(i, missing)
                bar.total += len(jobs)
                bar.refresh()

    for r in results:
        if r.kept < episodes:
            log.warning("%s: kept %d of %d episodes (%d/%d rollouts succeeded); raise max_attempts_factor for more",
                        r.env_id, r.kept, episodes, r.successes, r.attempts)
    _write_all(targets, results, seed, teacher, only_success, embed_instructions, overwrite)
    return results


def _check_policy_teacher(teacher: str, targets: Sequence[Target], device: str) -> None:
    """Load the saved policy once in this process and check it fits every env before any worker starts."""
    from training.data import check_spaces
    from training.errors import DatasetError

    policy = load_teacher_policy(teacher, device)
    for t in targets:
        env = _env(t.env_id, t.env_kwargs)
        spaces = getattr(env.observation_space, "spaces", {"obs": env.observation_space})
        env_shapes = {k: tuple(s.shape) for k, s in spaces.items()}
        obs_spec = getattr(policy, "obs_spec", None)
        action_dim = getattr(policy, "action_dim", None)
        try:
            check_spaces(env_shapes, int(np.prod(env.action_space.shape)), obs_spec, action_dim,
                         what=f"teacher {teacher!r}", name=f"env {t.env_id!r}")
        except DatasetError as e:
            raise TrainingError(str(e)) from None


def _env_details(target: Target) -> dict[str, Any]:
    env = _env(target.env_id, target.env_kwargs).unwrapped
    out: dict[str, Any] = {}
    for attr in ("task_name", "task_index", "instruction", "embodiment", "max_episode_steps"):
        if hasattr(env, attr):
            out[attr] = getattr(env, attr)
    params = getattr(env, "params", None)
    if isinstance(params, dict):
        out["embodiment_params"] = {k: float(v) for k, v in params.items()}
    return out


def _env_spec(target: Target):
    import gymnasium as gym

    try:
        spec = gym.spec(target.env_id)
    except gym.error.Error:
        return None
    return dataclasses.replace(spec, kwargs={**spec.kwargs, **target.env_kwargs})


def _write_all(targets, results, seed, teacher, only_success, embed_instructions, overwrite) -> None:
    for target, result in zip(targets, results):
        details = _env_details(target)
        env = _env(target.env_id, target.env_kwargs)
        teacher_name = _env_teacher_name(target.env_id)[1] if teacher == ENV_TEACHER else f"saved policy {teacher}"
        metadata = {
            "suite": target.suite,
            "env_id": target.env_id,
            "env_kwargs": target.env_kwargs,
            "teacher": teacher_name,
            "teacher_kind": teacher_kind(teacher),
            "teacher_path": None if teacher == ENV_TEACHER else str(Path(teacher).expanduser().resolve()),
            "seed": int(seed),
            "seeds": [int(ep.seed) for ep in result.episodes],
            "only_success": bool(only_success),
            "attempts": result.attempts,
            "successes": result.successes,
            "success_rate": result.success_rate,
            "alloy_version": alloy_version(),
            **details,
        }
        if embed_instructions and details.get("instruction"):
            from envs.language import embed

            embed(details["instruction"])  # cached now, so that loaders never load the encoder
        if not result.episodes:
            log.warning("%s: no episode to keep (%d/%d succeeded); dataset not written",
                        target.env_id, result.successes, result.attempts)
            continue
        write_dataset(
            target.dataset_id,
            result.episodes,
            metadata,
            env_spec=_env_spec(target),
            observation_space=env.observation_space,
            action_space=env.action_space,
            algorithm_name=teacher_name,
            description=f"{len(result.episodes)} {teacher_name} episodes in {target.env_id}",
            overwrite=overwrite,
        )
        result.episodes = []  # written: free the memory
    log.info("datasets written under %s", data_root())


def close_envs() -> None:
    """Close the envs cached in this process."""
    for env in _ENVS.values():
        env.close()
    _ENVS.clear()
