"""Observation wrappers shared by the alloy envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from envs.errors import EnvError

# Keys first in this order when present, then any other key in sorted order: a flat vector means the
# same thing for every env of a suite, whatever order a Dict space happens to list its keys in.
PREFERRED_ORDER = ("state", "goal", "lidar", "embodiment", "task")


def flat_key_order(space: gym.spaces.Dict, keys=None) -> tuple[str, ...]:
    if keys is not None:
        missing = [k for k in keys if k not in space.spaces]
        if missing:
            raise EnvError(f"observation has no keys {missing}; it has {list(space.spaces)}")
        return tuple(keys)
    first = [k for k in PREFERRED_ORDER if k in space.spaces]
    return tuple(first + sorted(k for k in space.spaces if k not in first))


class FlatObservation(gym.ObservationWrapper):
    """Concatenate a Dict of 1-D float Boxes into one float32 vector in a fixed key order.

    `slices[key]` says where each key lives in the flat vector, so it can be split again.
    """

    def __init__(self, env: gym.Env, keys=None):
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict):
            raise EnvError(f"FlatObservation needs a Dict observation space, got {type(space).__name__}")
        self.keys = flat_key_order(space, keys)
        lows, highs, self.slices, start = [], [], {}, 0
        for k in self.keys:
            box = space.spaces[k]
            if not isinstance(box, gym.spaces.Box) or len(box.shape) != 1:
                raise EnvError(f"observation key {k!r} must be a 1-D Box to flatten, got {box}")
            lows.append(box.low)
            highs.append(box.high)
            self.slices[k] = slice(start, start + box.shape[0])
            start += box.shape[0]
        self.observation_space = gym.spaces.Box(
            np.concatenate(lows).astype(np.float32), np.concatenate(highs).astype(np.float32), dtype=np.float32
        )

    def observation(self, observation):
        return np.concatenate([np.asarray(observation[k], dtype=np.float32) for k in self.keys])


FLAT_KEY = "obs"  # the key under which a flat Box observation reaches policies and datasets


class DictObservation(gym.ObservationWrapper):
    """A Box observation as the Dict `{"obs": Box}`: alloy's policies, datasets and rollouts read named arrays, so a
    Gymnasium env with a flat observation looks like the others."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        if not isinstance(env.observation_space, gym.spaces.Box):
            raise EnvError(f"DictObservation needs a Box observation space, got {type(env.observation_space).__name__}")
        self.observation_space = gym.spaces.Dict({FLAT_KEY: env.observation_space})

    def observation(self, observation):
        return {FLAT_KEY: observation}
