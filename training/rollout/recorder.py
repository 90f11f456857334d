"""Keep the episodes a rollout sees as arrays (and write them as Minari datasets): collection and DAgger data.

An episode is kept with its T+1 observations, the T executed actions, rewards and end flags and, when the engine
has a labeller, the labeller's T actions for the same states (`Episode.infos["labels"]`, with their standard
deviations in `infos["label_std"]` when the labeller is Gaussian), which policy drove (`infos["driver"]`: "A" or
"B"), whether noise was injected (`infos["noisy"]`) and the env id of its slot (`infos["env_id"]`). Episodes
that ended in an exception or a simulator instability are not kept:
their last observations are not trustworthy data.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from training.datasets_io import Episode
from training.rollout.engine import EpisodeTask, RolloutHook, StepData
from training.rollout.episode import EpisodeResult

UNUSABLE = ("exception", "instability")


class _Buffer:
    def __init__(self, task: EpisodeTask, obs: dict[str, np.ndarray], driver: str, noisy: bool):
        self.task, self.driver, self.noisy = task, driver, noisy
        self.obs = {k: [np.array(v, dtype=np.float32, copy=True)] for k, v in obs.items()}
        self.actions: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.label_std: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.terms: list[bool] = []
        self.truncs: list[bool] = []


class EpisodeRecorder(RolloutHook):
    """Collects every finished episode as an `Episode`; `keep(result)` decides which are kept (default: usable).

    `on_kept(episode, result)` is called for each kept episode (e.g. to stop a collection early or to schedule
    more episodes); `episodes` holds them in the order they finished.
    """

    def __init__(self, keep: Callable[[EpisodeResult], bool] | None = None,
                 on_kept: Callable[[Episode, EpisodeResult], None] | None = None):
        self.keep = keep
        self.on_kept = on_kept
        self.buffers: dict[int, _Buffer] = {}
        self.episodes: list[Episode] = []

    def on_episode_start(self, slot, task, obs, driver, noisy=False) -> None:
        self.buffers[slot] = _Buffer(task, obs, driver, noisy)

    def on_step(self, step: StepData) -> None:
        for slot in np.flatnonzero(step.active):
            b = self.buffers.get(int(slot))
            if b is None:
                continue
            for k, v in step.next_obs.items():
                b.obs[k].append(np.array(v[slot], dtype=np.float32, copy=True))
            b.actions.append(np.array(step.actions[slot], dtype=np.float32, copy=True))
            if step.labels is not None:
                b.labels.append(np.array(step.labels[slot], dtype=np.float32, copy=True))
            if step.label_std is not None:
                b.label_std.append(np.array(step.label_std[slot], dtype=np.float32, copy=True))
            b.rewards.append(float(step.rewards[slot]))
            b.terms.append(bool(step.terminated[slot]))
            b.truncs.append(bool(step.truncated[slot]))

    def on_episode_abort(self, slot) -> None:
        self.buffers.pop(slot, None)

    def on_episode_end(self, slot, result: EpisodeResult) -> None:
        b = self.buffers.pop(slot, None)
        if b is None or not b.actions:
            return
        usable = result.reason not in UNUSABLE
        if not (self.keep(result) if self.keep is not None else usable) or not usable:
            return
        infos = {"driver": b.driver, "index": int(b.task.index), "noisy": b.noisy, "env_id": result.env_id}
        if b.labels:
            infos["labels"] = np.stack(b.labels)
        if b.label_std and len(b.label_std) == len(b.labels):
            infos["label_std"] = np.stack(b.label_std)
        terms = np.asarray(b.terms, dtype=bool)
        truncs = np.asarray(b.truncs, dtype=bool)
        if not (terms[-1] or truncs[-1]):  # ended by the loop (success or a step limit): close it as a truncation
            truncs[-1] = True
        episode = Episode(
            observations={k: np.stack(v) for k, v in b.obs.items()},
            actions=np.stack(b.actions),
            rewards=np.asarray(b.rewards, dtype=np.float32),
            terminations=terms,
            truncations=truncs,
            seed=int(b.task.seed),
            success=bool(result.success),
            infos=infos,
        )
        self.episodes.append(episode)
        if self.on_kept is not None:
            self.on_kept(episode, result)

    def sorted_episodes(self) -> list[Episode]:
        """The kept episodes in episode-number order (the order is then independent of the env layout)."""
        return sorted(self.episodes, key=lambda e: e.infos["index"])
