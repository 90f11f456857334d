"""Roll out a teacher over many episodes in parallel worker processes and write one Minari dataset per env.

The teacher is either the env's own privileged teacher (`teacher_action()`: the nav planner or Meta-World's
scripted expert) or a saved policy directory. Each episode's seed comes from the base seed, the env id and the
episode number only, so a task's data does not change when other tasks are collected in the same run, and any
episode can be replayed from the seed stored in the dataset. Rollouts never write anything: datasets are written
once every rollout is done, so an interrupted run leaves no partial dataset.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.datasets_io import Episode, alloy_version, data_root, dataset_dir, write_dataset
from training.errors import TrainingError
from training.rollout.engine import RolloutHook

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
    from envs import is_gymnasium_id

    if is_gymnasium_id(env_id):
        return f"{GYM_NAMESPACE}/{env_id}/{name}-v0"
    raise TrainingError(f"no dataset naming rule for env {env_id!r}; collect in a Meta-World, nav or registered "
                        f"Gymnasium env")


GYM_NAMESPACE = "gym"  # datasets of registered Gymnasium envs: gym/<env id>/<name>-v0


def _single_env(env: str, tasks: Sequence[str], embodiment: str, teacher: str) -> tuple[list[str], str]:
    """`env=<id>`: one alloy or registered Gymnasium env id instead of a suite; (env ids, suite label)."""
    from envs import has_teacher, is_gymnasium_id
    from envs.suites import suite_of
    from training.evaluation.envs_spec import resolve_env_ids

    if tasks or embodiment:
        raise TrainingError(f"env={env} selects one env: drop tasks=/embodiment= (they narrow a suite=)")
    ids = resolve_env_ids(env)
    if len(ids) != 1:
        raise TrainingError(f"env={env} is a suite: pass suite={env} (env= takes one env id)")
    if teacher == ENV_TEACHER and not has_teacher(ids[0]):
        raise TrainingError(f"{ids[0]} has no teacher of its own (only alloy's nav and Meta-World envs do): pass "
                            f"teacher=<saved policy dir>")
    return ids, ("gymnasium" if is_gymnasium_id(ids[0]) else suite_of(ids[0]))


def reports_success(env_id: str, env_kwargs: dict[str, Any]) -> bool:
    """Whether the env says when an episode succeeded (`is_success` in its step info), probed with one step."""
    env = _env(env_id, env_kwargs)
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    return "is_success" in info


def select_targets(
    suite: str,
    tasks: Sequence[str] = (),
    embodiment: str = "",
    teacher: str = ENV_TEACHER,
    name: str = "",
    env_kwargs: dict[str, Any] | None = None,
    stop_on_success: bool = True,
    env: str = "",
) -> list[Target]:
    """The envs to collect in: the suite's, narrowed to Meta-World `tasks` or one nav `embodiment`; or the one
    `env` (an alloy or registered Gymnasium env id), which replaces the suite."""
    from envs.errors import EnvError
    from envs.suites import suite_env_ids

    if env:
        env_ids, suite = _single_env(env, tasks, embodiment, teacher)
        tasks, embodiment = (), ""
    else:
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


def nav_teacher_heading(env_id: str, env_kwargs: dict[str, Any]) -> tuple[str, str] | None:
    """(robot, heading mode) when `env_id` is a nav robot whose planner heading cannot be followed (it cannot strafe
    and the heading is not `path`); None otherwise."""
    from envs import nav
    from envs.nav.embodiments import get_spec

    if env_id not in nav.ENV_IDS:
        return None
    robot = nav.EMBODIMENTS[list(nav.ENV_IDS).index(env_id)]
    heading = str(env_kwargs.get("teacher_heading", "goal"))
    return None if get_spec(robot).can_strafe or heading == "path" else (robot, heading)


def low_yield_advice(env_id: str, env_kwargs: dict[str, Any], teacher: str = ENV_TEACHER) -> str:
    """What to do when a teacher keeps few episodes: the cause is a teacher that does not fit the env, which more
    attempts (max_attempts_factor) do not fix."""
    if teacher != ENV_TEACHER:
        return (f"the saved policy {teacher!r} fails often in this env: collect with a teacher that succeeds here, or "
                f"pass only_success=false to keep failed episodes too")
    misfit = nav_teacher_heading(env_id, env_kwargs)
    if misfit is not None:
        robot, heading = misfit
        return (f"the nav planner commands a holonomic robot and teacher_heading={heading} moves it sideways, which "
                f"{robot} cannot do: add +env_kwargs.teacher_heading=path (face the direction of travel: about 100% on "
                f"diffdrive and skidsteer, 50% on ackermann), or use a residual specialist (alloy rl) as teacher=<dir>")
    from envs import nav

    if env_id in nav.ENV_IDS and str(env_kwargs.get("teacher_heading", "goal")) == "path":
        return ("the planner (holonomic commands, even with teacher_heading=path) does not fit this robot well: raise "
                "max_attempts_factor to keep enough of its successes, or use a residual specialist (alloy rl) as "
                "teacher=<dir>")
    return "the teacher does not fit this env (or its kwargs) well; max_attempts_factor only helps when failures are rare"


def episode_seed(base_seed: int, env_id: str, episode: int) -> int:
    """A 31-bit seed that depends only on the base seed, the env id and the episode number."""
    state = np.random.SeedSequence([int(base_seed) & 0xFFFFFFFF, zlib.crc32(env_id.encode()), int(episode)])
    return int(state.generate_state(1)[0] & 0x7FFFFFFF)


_ENVS: dict[tuple, Any] = {}  # one env per target in this process, for checks and dataset metadata only


def _env(env_id: str, env_kwargs: dict[str, Any]):
    key = (env_id, tuple(sorted((k, repr(v)) for k, v in env_kwargs.items())))
    if key not in _ENVS:
        from envs import make_env

        _ENVS[key] = make_env(env_id, **env_kwargs)
    return _ENVS[key]


def load_teacher_policy(path: str, device: str = "cpu"):
    """A saved policy as a teacher (any kind `training.evaluation.load_policy` knows); TrainingError if unloadable."""
    from training.evaluation.policy_loader import load_policy

    if not Path(path).expanduser().is_dir():
        raise TrainingError(f"teacher {path!r} is neither `teacher` nor a saved policy directory")
    policy = load_policy(path, device=device)
    if hasattr(policy, "eval"):
        policy.eval()
    return policy


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
    num_envs: int = 8,
) -> list[TargetResult]:
    """Collect `episodes` episodes per target and write each target's dataset; returns per-target results.

    The rollouts run on the one rollout engine (`training.rollout`), `num_envs` envs of a target at a time, laid
    out as evaluation lays them out (`workers=0`: one group of envs per core; N: N worker processes). With
    `only_success`, each failed episode is replaced by the next fresh seed until `episodes` successes are kept or
    `max_attempts_factor * episodes` rollouts were tried; the success rate counts every rollout. Episode `e` of a
    target always has the seed `episode_seed(seed, env_id, e)`, so the kept episodes do not depend on the layout.
    """
    from gymnasium.vector import AutoresetMode
    from tqdm import tqdm

    from envs.vector import make_vec_env, vector_layout
    from training.evaluation.guard import RolloutGuard
    from training.evaluation.rollout import check_fits_vec
    from training.evaluation.teacher import TeacherPolicy
    from training.rollout import EpisodeRecorder, EpisodeTask, RolloutEngine
    from training.rollout.engine import policy_threads

    if episodes < 1:
        raise TrainingError(f"episodes must be >= 1, got {episodes}")
    if max_attempts_factor < 1:
        raise TrainingError(f"max_attempts_factor must be >= 1, got {max_attempts_factor}")
    if num_envs < 1:
        raise TrainingError(f"num_envs must be >= 1, got {num_envs}")
    if workers < 0:
        raise TrainingError(f"workers must be >= 0 (0: one group of envs per core), got {workers}")
    if not targets:
        raise TrainingError("nothing to collect: the selection has no envs")
    if not overwrite:
        existing = [t.dataset_id for t in targets if (dataset_dir(t.dataset_id) / "data").exists()]
        if existing:
            raise TrainingError(
                f"dataset(s) already exist: {', '.join(existing[:5])}{' ...' if len(existing) > 5 else ''}; "
                "pass overwrite=true to replace them"
            )
    policy = TeacherPolicy() if teacher == ENV_TEACHER else _check_policy_teacher(teacher, targets, device)
    max_attempts = max_attempts_factor * episodes
    k = min(int(num_envs), episodes)
    layout_workers = int(workers) if workers else None
    layout = vector_layout(k, k > 1, layout_workers)
    guard = functools.partial(RolloutGuard, keep_info=False)
    results = [TargetResult(t.env_id, t.dataset_id) for t in targets]

    with tqdm(total=episodes * len(targets), desc="collect", unit="ep", disable=not progress,
              dynamic_ncols=True) as bar, policy_threads(layout["worker_processes"]):
        for target, result in zip(targets, results):
            scheduled = episodes

            def tasks(start: int, count: int, env_id: str = target.env_id) -> list[EpisodeTask]:
                return [EpisodeTask(e, episode_seed(seed, env_id, e)) for e in range(start, start + count)]

            def on_end(slot, res, result=result) -> None:
                nonlocal scheduled
                result.attempts += 1
                result.successes += int(res.success)
                if only_success and not res.success and scheduled < max_attempts:
                    engine.add(tasks(scheduled, 1))  # noqa: B023 - this target's engine, called while it runs
                    scheduled += 1
                    bar.total += 1
                    bar.refresh()

            recorder = EpisodeRecorder(keep=lambda res: res.success or not only_success)
            counter = _OnEnd(on_end)
            make = functools.partial(make_vec_env, target.env_id, k, int(seed), k > 1, wrappers=(guard,),
                                     autoreset_mode=AutoresetMode.DISABLED, workers=layout_workers,
                                     **target.env_kwargs)
            engine = RolloutEngine(policy, target.env_id, make, k, stop_on_success=False, hooks=(counter, recorder),
                                   bar=bar, check_fit=check_fits_vec(target.env_id))
            with engine:
                engine.run(tasks(0, episodes))
            result.episodes = recorder.sorted_episodes()[:episodes]
            result.kept = len(result.episodes)
            result.steps = sum(len(ep) for ep in result.episodes)
            for ep in result.episodes:
                ep.infos = {}  # the engine's bookkeeping is not dataset content

    for target, r in zip(targets, results):
        if r.kept < episodes:
            log.warning("%s: kept %d of %d episodes: the teacher succeeded in only %d of %d rollouts; %s",
                        r.env_id, r.kept, episodes, r.successes, r.attempts,
                        low_yield_advice(target.env_id, target.env_kwargs, teacher))
    _write_all(targets, results, seed, teacher, only_success, embed_instructions, overwrite)
    return results


class _OnEnd(RolloutHook):
    """A hook that only counts finished episodes (runs before the recorder, so it sees every attempt)."""

    def __init__(self, fn):
        self.fn = fn

    def on_episode_end(self, slot, result) -> None:
        self.fn(slot, result)


def _check_policy_teacher(teacher: str, targets: Sequence[Target], device: str):
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
    return policy


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
    from envs import is_gymnasium_id

    kwargs = {**spec.kwargs, **target.env_kwargs}
    steps = spec.max_episode_steps
    if is_gymnasium_id(target.env_id) and "max_episode_steps" in kwargs:  # gym.make's argument, not the env's
        steps = kwargs.pop("max_episode_steps")
    return dataclasses.replace(spec, kwargs=kwargs, max_episode_steps=steps)


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
