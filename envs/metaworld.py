"""Meta-World v3 tasks as alloy envs: Dict observation (state + one-hot task), scripted expert as the teacher.

Meta-World's own multitask wrappers draw each episode's object and goal positions from a fixed list of 50 goals
made with the global NumPy RNG. Here every task is one env whose positions are drawn from the env's own seeded RNG
at each reset, so `reset(seed=s)` always gives the same episode and unseeded resets continue that stream. The goal
is part of the state (Meta-World's "goal observable" setting, as in its MT benchmarks).
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.errors import EnvError

MAX_EPISODE_STEPS = 500
STATE_DIM = 39
ACTION_DIM = 4
ENV_ID_PREFIX = "metaworld/"


def _v3_tasks() -> list[str]:
    from metaworld.policies import ENV_POLICY_MAP

    return sorted(ENV_POLICY_MAP)


TASKS: list[str] = _v3_tasks()
"""The 50 Meta-World v3 task names in sorted order; a task's index here is its one-hot position."""

MT10: list[str] = [
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
]

INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the nut and place it onto the peg",
    "basketball-v3": "pick up the ball and dunk it into the basket",
    "bin-picking-v3": "pick up the cube and move it from one bin to the other",
    "box-close-v3": "pick up the lid and close the box",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button behind the wall from the top",
    "button-press-v3": "press the button from the front",
    "button-press-wall-v3": "press the button behind the wall from the front",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug out of the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "pick the nut up off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by turning the lock down",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door by turning the lock",
    "drawer-close-v3": "push the drawer closed",
    "drawer-open-v3": "open the drawer",
    "faucet-close-v3": "turn the faucet handle to close it",
    "faucet-open-v3": "turn the faucet handle to open it",
    "hammer-v3": "hammer the nail into the wall",
    "hand-insert-v3": "move the hand into the hole",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg from the side",
    "pick-out-of-hole-v3": "pick the peg out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "plate-slide-back-side-v3": "slide the plate back into the cabinet from the side",
    "plate-slide-back-v3": "slide the plate back into the cabinet",
    "plate-slide-side-v3": "slide the plate sideways into the cabinet",
    "plate-slide-v3": "slide the plate into the cabinet",
    "push-back-v3": "push the puck backwards to the goal",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck to the goal around the wall",
    "reach-v3": "reach the goal position",
    "reach-wall-v3": "reach the goal position over the wall",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
    "soccer-v3": "kick the ball into the goal",
    "stick-pull-v3": "grasp the stick and pull the box with it",
    "stick-push-v3": "grasp the stick and push the box with it",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-close-v3": "push the window closed",
    "window-open-v3": "push the window open",
}


def _check_task(task: str) -> None:
    if task not in INSTRUCTIONS:
        raise EnvError(f"unknown Meta-World task {task!r}; known tasks: {', '.join(TASKS)}")


class MetaWorldTaskEnv(gym.Env):
    """One Meta-World v3 task with its scripted expert; positions are drawn from this env's seeded RNG."""

    def __init__(
        self,
        task: str,
        seed: int | None = None,
        render_mode: str | None = None,
        max_episode_steps: int = MAX_EPISODE_STEPS,
        terminate_on_success: bool = False,
        camera_name: str | None = "corner",
        width: int = 480,
        height: int = 480,
    ) -> None:
        _check_task(task)
        if not 1 <= int(max_episode_steps) <= MAX_EPISODE_STEPS:
            raise EnvError(
                f"max_episode_steps={max_episode_steps} is out of range; Meta-World episodes last 1 to "
                f"{MAX_EPISODE_STEPS} steps"
            )
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
        from metaworld.policies import ENV_POLICY_MAP

        self.task_name = task
        self.task_index = TASKS.index(task)
        self.instruction = INSTRUCTIONS[task]
        self.max_episode_steps = int(max_episode_steps)
        self.terminate_on_success = bool(terminate_on_success)
        self.render_mode = render_mode
        self._camera_name = camera_name

        sim = ALL_V3_ENVIRONMENTS[task](render_mode=render_mode, camera_name=camera_name, width=width, height=height)
        # The goal is observable and each reset draws new positions from the env's own RNG (see module docstring).
        sim._partially_observable = False
        try:
            del sim.sawyer_observation_space  # a cached property that depends on the observability
        except AttributeError:
            pass
        sim._set_task_called = True
        sim._freeze_rand_vec = False
        sim.seeded_rand_vec = True
        self._sim = sim
        self._expert = ENV_POLICY_MAP[task]()
        self.metadata = {"render_modes": ["rgb_array", "depth_array"], "render_fps": sim.metadata["render_fps"]}

        bounds = sim.sawyer_observation_space
        one_hot = np.zeros(len(TASKS), dtype=np.float32)
        one_hot[self.task_index] = 1.0
        self._one_hot = one_hot
        self.observation_space = spaces.Dict(
            {
                "state": spaces.Box(
                    bounds.low.astype(np.float32), bounds.high.astype(np.float32), (STATE_DIM,), np.float32
                ),
                "task": spaces.Box(0.0, 1.0, (len(TASKS),), np.float32),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self._raw_obs: np.ndarray | None = None
        self._steps = 0
        self._done = True
        if seed is not None:
            self._seed(seed)

    def _seed(self, seed: int) -> None:
        self._sim.seed(int(seed))
        self.action_space.seed(int(seed))

    def _observation(self) -> dict[str, np.ndarray]:
        space = self.observation_space["state"]  # Meta-World clips step observations but not the reset one
        state = np.clip(self._raw_obs.astype(np.float32), space.low, space.high)
        return {"state": state, "task": self._one_hot.copy()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._seed(seed)
        obs, _ = self._sim.reset()
        self._raw_obs = np.asarray(obs, dtype=np.float64)
        self._steps = 0
        self._done = False
        return self._observation(), {"is_success": False}

    def step(self, action):
        if self._done:
            raise EnvError("step() was called after the episode ended (or before the first reset); call reset() first")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (ACTION_DIM,):
            raise EnvError(f"a Meta-World action has shape ({ACTION_DIM},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise EnvError(f"the action contains NaN or inf: {action.tolist()}")
        obs, reward, _, sim_truncated, sim_info = self._sim.step(np.clip(action, -1.0, 1.0))
        self._raw_obs = np.asarray(obs, dtype=np.float64)
        self._steps += 1
        success = bool(float(sim_info.get("success", 0.0)) > 0.5)
        terminated = self.terminate_on_success and success
        truncated = bool(sim_truncated) or self._steps >= self.max_episode_steps
        self._done = terminated or truncated
        info = {k: float(v) for k, v in sim_info.items() if np.isscalar(v)}
        info["is_success"] = success
        return self._observation(), float(reward), terminated, truncated and not terminated, info

    def teacher_action(self) -> np.ndarray:
        """Meta-World's scripted expert on the current observation (it is stateless: nothing to reset)."""
        if self._raw_obs is None:
            raise EnvError("teacher_action() needs an observation; call reset() first")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the experts warn when their gains exceed the action range
            action = self._expert.get_action(self._raw_obs)
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    def render(self):
        frame = self._sim.render()
        if frame is not None and self._camera_upside_down():
            frame = np.ascontiguousarray(frame[::-1, ::-1])  # a 180-degree roll of the camera, not a mirror
        return frame

    def _camera_upside_down(self) -> bool:
        """Meta-World's corner cameras have their up axis pointing down; their frames are turned upright."""
        if self._camera_name is None:
            return False
        import mujoco

        sim = self._sim
        cam = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_CAMERA, self._camera_name)
        return cam >= 0 and float(sim.data.cam_xmat[cam].reshape(3, 3)[2, 1]) < 0.0

    def close(self) -> None:
        self._sim.close()


def make_metaworld_env(task: str, seed: int | None = None, render_mode: str | None = None, **kwargs) -> gym.Env:
    """Make the Meta-World v3 task `task` (e.g. "drawer-open-v3"); see `MetaWorldTaskEnv` for the options."""
    _check_task(task)
    try:
        return MetaWorldTaskEnv(task, seed=seed, render_mode=render_mode, **kwargs)
    except TypeError as e:
        raise EnvError(f"bad keyword for a Meta-World env: {e}") from None


def env_id(task: str) -> str:
    """The alloy env id of a task, `metaworld/<task>`."""
    return ENV_ID_PREFIX + task


def register() -> None:
    """Register `metaworld/<task>` with Gymnasium so that `gym.make` and Minari's `recover_environment` work."""
    registered = gym.registry
    for task in TASKS:
        if env_id(task) not in registered:
            gym.register(id=env_id(task), entry_point="envs.metaworld:make_metaworld_env", kwargs={"task": task})


register()
