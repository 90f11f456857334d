"""The one rollout engine (evaluation, collection, DAgger) and its hooks; see `engine.py`."""

from training.rollout.engine import (
    EpisodeTask,
    Mixing,
    RolloutEngine,
    RolloutHook,
    RolloutStats,
    StepData,
    episode_seed,
    mix_draw,
)
from training.rollout.recorder import EpisodeRecorder

__all__ = [
    "EpisodeRecorder",
    "EpisodeTask",
    "Mixing",
    "RolloutEngine",
    "RolloutHook",
    "RolloutStats",
    "StepData",
    "episode_seed",
    "mix_draw",
]
