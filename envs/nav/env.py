"""The navigation env: one MuJoCo scene per robot, random feasible layouts, one command interface.

Physics runs at the model timestep (5 ms); the agent acts at `control_hz`. Collisions are robot hull
contacts with a wall or obstacle, checked several times per control period. Lidar comes from MuJoCo
rangefinder sensors, evaluated once per control step (they are switched off during the sub-steps,
where nothing reads them).

Reward: `reward_progress` x the decrease of the distance to the goal (straight-line, or with
`progress_metric="geodesic"` the shortest obstacle-free path, a potential that has no local minimum in front
of an obstacle), `reward_success` on reaching the goal, `reward_collision` on a collision, `reward_time` per step,
`reward_heading` x the change of the cosine between the robot's heading and the direction in which that distance
falls fastest (a potential, so it shapes without changing which policies are best: it pays a robot that cannot
strafe for turning onto the path before the progress term can), and `reward_clearance` (<= 0) x how far the nearest
lidar return has come inside `clearance_margin` of the robot's footprint, per step (a dense warning before a
collision, for a heavy robot that must brake long before it touches anything).
"""

from __future__ import annotations

import math

import gymnasium as gym
import mujoco
import numpy as np

from envs.assets import asset_path
from envs.errors import EnvError
from envs.nav.controllers import CONTROLLERS
from envs.nav.embodiments import (
    EMBODIMENTS,
    PARAM_HIGH,
    PARAM_NAMES,
    get_spec,
    resolve_params,
    resolve_randomization,
)
from envs.nav.layout import BOX, CYLINDER, Layout, LayoutConfig, sample_layout
from envs.nav.planner import DijkstraCostToGo
from envs.nav.teacher import HEADINGS, PlannerTeacher

OBSTACLE_HALF_HEIGHT = 0.25
PARKED_Z = -5.0  # unused obstacle slots wait below the floor, out of every lidar ray
COLLISION_CHECKS = 4  # per control period
PROGRESS_METRICS = ("euclidean", "geodesic")  # what the progress reward measures the distance to the goal with
STATE_KEYS = ("vx", "vy", "yaw_rate", "cos_heading_to_goal", "sin_heading_to_goal", "goal_distance",
              "steering", "last_vx", "last_vy", "last_yaw_rate")
OBS_KEYS = ("state", "goal", "lidar", "embodiment")
CAMERAS = ("overhead", "follow")
GOAL_RGBA = (0.1, 0.8, 0.2, 0.8)
BODY_RGBA = (0.1, 0.3, 0.85, 1.0)
ARROW_RGBA = (0.95, 0.1, 0.5, 1.0)
LIDAR_RGBA = (1.0, 0.85, 0.1, 0.35)  # the rangefinder rays, faint so that they do not hide the robot
ROBOT_MARK_HEIGHT = 0.35  # m: above the lidar rays (0.2 m), below the overhead camera
ARROW_LENGTH, ARROW_HEAD, ARROW_HEAD_ANGLE, ARROW_WIDTH = 0.6, 0.22, 0.6, 0.045  # m, m, rad, m: the heading arrow


def _add_segment(scene, start: np.ndarray, end: np.ndarray, rgba) -> None:
    """A thick line (capsule) from `start` to `end` in a rendered scene."""
    if scene.ngeom >= scene.maxgeom:
        return
    geom = scene.geoms[scene.ngeom]
    _add_geom(scene, mujoco.mjtGeom.mjGEOM_CAPSULE, [0.0, 0.0, 0.0], start, np.eye(3), rgba)
    mujoco.mjv_connector(geom, mujoco.mjtGeom.mjGEOM_CAPSULE, ARROW_WIDTH, start, end)


def _add_geom(scene, kind, size, pos, mat, rgba) -> None:
    """Append one decoration geom to a rendered scene (skipped when the scene is full)."""
    if scene.ngeom >= scene.maxgeom:
        return
    mujoco.mjv_initGeom(scene.geoms[scene.ngeom], kind, np.asarray(size, dtype=np.float64),
                        np.asarray(pos, dtype=np.float64), np.asarray(mat, dtype=np.float64).ravel(),
                        np.asarray(rgba, dtype=np.float32))
    scene.ngeom += 1


def _as_pair(value, name, cast):
    if isinstance(value, (int, float)):
        return cast(value), cast(value)
    try:
        lo, hi = (cast(v) for v in value)
    except (TypeError, ValueError):
        raise EnvError(f"{name} must be a number or a pair [low, high], got {value!r}") from None
    return lo, hi


class NavEnv(gym.Env):
    """Reach a goal among random obstacles with one of several robots (see `envs.nav.embodiments`)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        embodiment: str = "holonomic",
        render_mode: str | None = None,
        *,
        mass: float | None = None,
        wheel_base: float | None = None,
        max_speed: float | None = None,
        max_accel: float | None = None,
        steering_limit: float | None = None,
        max_yaw_rate: float | None = None,
        randomize: dict | None = None,
        control_hz: float = 10.0,
        time_limit: float = 30.0,
        num_obstacles=(3, 8),
        obstacle_size=(0.15, 0.5),
        obstacle_on_path: float = 0.5,
        min_goal_distance: float = 3.0,
        goal_radius: float = 0.3,
        clearance: float = 0.45,
        lidar_range: float = 4.0,
        reward_progress: float = 1.0,
        reward_success: float = 10.0,
        reward_collision: float = -10.0,
        reward_time: float = 0.0,
        reward_heading: float = 0.0,
        reward_clearance: float = 0.0,
        clearance_margin: float = 0.5,
        privileged_info: bool = False,
        progress_metric: str = "euclidean",
        teacher_randomize: bool = True,
        teacher_heading: str = "goal",
        render_width: int = 480,
        render_height: int = 480,
        render_camera: str = "overhead",
    ):
        self.spec_ = get_spec(embodiment)
        self.embodiment = embodiment
        self.params = resolve_params(self.spec_, dict(
            mass=mass, wheel_base=wheel_base, max_speed=max_speed, max_accel=max_accel,
            steering_limit=steering_limit, max_yaw_rate=max_yaw_rate))
        self.randomize = resolve_randomization(self.spec_, randomize)
        if render_mode not in (None, "rgb_array"):
            raise EnvError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if render_camera not in CAMERAS:
            raise EnvError(f"render_camera must be one of {CAMERAS}, got {render_camera!r}")
        self.render_mode, self.render_camera = render_mode, render_camera

        self.model = mujoco.MjModel.from_xml_path(str(asset_path(self.spec_.scene)))
        self.data = mujoco.MjData(self.model)
        m = self.model
        if not (2.0 <= control_hz <= 50.0):
            raise EnvError(f"control_hz={control_hz} must be in [2, 50]")
        substeps = max(1, round(1.0 / (control_hz * m.opt.timestep)))
        self.period = substeps * m.opt.timestep
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.period))}
        self._chunks = [len(c) for c in np.array_split(np.arange(substeps), min(COLLISION_CHECKS, substeps))]
        if time_limit <= 0:
            raise EnvError(f"time_limit={time_limit} must be positive (seconds)")
        self.time_limit = float(time_limit)
        self.max_episode_steps = int(math.ceil(self.time_limit / self.period - 1e-9))
        for name, v, lo, hi in (("goal_radius", goal_radius, 0.05, 2.0), ("lidar_range", lidar_range, 0.5, 20.0)):
            if not lo <= v <= hi:
                raise EnvError(f"{name}={v} must be in [{lo}, {hi}] m")
        self.goal_radius, self.lidar_range = float(goal_radius), float(lidar_range)
        self.reward_weights = dict(progress=float(reward_progress), success=float(reward_success),
                                   collision=float(reward_collision), time=float(reward_time),
                                   heading=float(reward_heading), clearance=float(reward_clearance))
        if not self.reward_weights["clearance"] <= 0:  # NaN too
            raise EnvError(f"reward_clearance={reward_clearance} must be <= 0 (a penalty near obstacles)")
        if not 0.05 <= clearance_margin <= 5.0:
            raise EnvError(f"clearance_margin={clearance_margin} must be in [0.05, 5] m")
        self.clearance_margin = float(clearance_margin)
        if progress_metric not in PROGRESS_METRICS:
            raise EnvError(f"progress_metric={progress_metric!r} is unknown; choose one of: "
                           f"{', '.join(PROGRESS_METRICS)}")
        self.progress_metric = progress_metric
        # info["privileged"] (an asymmetric critic's input; the heading reward's potential): computed only when asked
        self.privileged_info = bool(privileged_info) or self.reward_weights["heading"] != 0.0
        self.teacher_randomize = bool(teacher_randomize)
        if teacher_heading not in HEADINGS:
            raise EnvError(f"teacher_heading={teacher_heading!r} is unknown; choose one of: {', '.join(HEADINGS)}")
        self.teacher_heading = teacher_heading
        if not (16 <= render_width <= 1920 and 16 <= render_height <= 1920):
            raise EnvError(f"render size {render_width}x{render_height} must be within 16..1920 pixels")
        m.vis.rgba.rangefinder = LIDAR_RGBA
        m.vis.global_.offwidth = max(m.vis.global_.offwidth, int(render_width))
        m.vis.global_.offheight = max(m.vis.global_.offheight, int(render_height))
        self.render_size = (int(render_height), int(render_width))

        self._bind_model()
        self.layout_cfg = LayoutConfig(
            arena_half=self.arena_half,
            num_obstacles=_as_pair(num_obstacles, "num_obstacles", int),
            obstacle_size=_as_pair(obstacle_size, "obstacle_size", float),
            obstacle_on_path=float(obstacle_on_path),
            min_goal_distance=float(min_goal_distance),
            clearance=float(clearance),
            max_boxes=len(self.slots[BOX]),
            max_cylinders=len(self.slots[CYLINDER]),
        ).validate()
        if self.footprint >= clearance:
            raise EnvError(
                f"clearance={clearance} m must exceed the {embodiment} footprint radius "
                f"{self.footprint:.3f} m so that layouts are feasible for it"
            )
        self.controller = CONTROLLERS[embodiment](m)

        self._build_spaces()
        self._renderer = None
        self._layout: Layout | None = None
        self._teacher: PlannerTeacher | None = None

    # ----------------------------------------------------------------- model plumbing
    def _bind_model(self) -> None:
        m = self.model
        obj = mujoco.mjtObj
        name = lambda kind, i: mujoco.mj_id2name(m, kind, i) or ""  # noqa: E731
        walls = [g for g in range(m.ngeom) if name(obj.mjOBJ_GEOM, g).startswith("wall_")]
        # Inner face of the nearest wall: centre offset minus half thickness.
        self.arena_half = float(min(np.abs(m.geom_pos[g, :2]).max() - m.geom_size[g, :2].min() for g in walls))
        self.slots: dict[str, list[int]] = {BOX: [], CYLINDER: []}
        obstacle_geoms = []
        for g in range(m.ngeom):
            if name(obj.mjOBJ_GEOM, g).startswith("obstacle_"):
                kind = BOX if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX else CYLINDER
                self.slots[kind].append(g)
                obstacle_geoms.append(g)
        self.robot = mujoco.mj_name2id(m, obj.mjOBJ_BODY, "robot")
        hull = mujoco.mj_name2id(m, obj.mjOBJ_GEOM, "hull")
        size = m.geom_size[hull]
        if m.geom_type[hull] == mujoco.mjtGeom.mjGEOM_BOX:
            self.footprint = float(math.hypot(size[0] + abs(m.geom_pos[hull, 0]), size[1]))
        else:
            self.footprint = float(size[0])
        self._hull_mask = np.zeros(m.ngeom, dtype=bool)
        self._hull_mask[hull] = True
        self._solid_mask = np.zeros(m.ngeom, dtype=bool)
        self._solid_mask[walls + obstacle_geoms] = True
        lidar = [i for i in range(m.nsensor) if m.sensor_type[i] == mujoco.mjtSensor.mjSENS_RANGEFINDER]
        self._lidar_adr = m.sensor_adr[lidar]
        self.n_beams = len(lidar)
        self.planar = m.jnt_type[m.body_jntadr[self.robot]] != mujoco.mjtJoint.mjJNT_FREE
        j = m.body_jntadr[self.robot]
        self._qpos = m.jnt_qposadr[j]
        self._qvel = m.jnt_dofadr[j]
        self._z0 = float(m.body_pos[self.robot, 2])
        m.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_SENSOR)

    def _build_spaces(self) -> None:
        big = 2 * self.arena_half * math.sqrt(2)
        vel = np.array([5.0, 5.0, 10.0])
        state_high = np.concatenate([vel, [1.0, 1.0, big, 1.0, 1.0, 1.0, 1.0]]).astype(np.float32)
        state_low = np.concatenate([-vel, [-1.0, -1.0, 0.0, -1.0, -1.0, -1.0, -1.0]]).astype(np.float32)
        emb_high = np.array([1.0] * len(EMBODIMENTS) + [PARAM_HIGH[p] for p in PARAM_NAMES] + [1.0], np.float32)
        self.observation_space = gym.spaces.Dict({
            "state": gym.spaces.Box(state_low, state_high, dtype=np.float32),
            "goal": gym.spaces.Box(-big, big, shape=(2,), dtype=np.float32),
            "lidar": gym.spaces.Box(0.0, self.lidar_range, shape=(self.n_beams,), dtype=np.float32),
            "embodiment": gym.spaces.Box(np.zeros_like(emb_high), emb_high, dtype=np.float32),
        })
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)

    def _place_obstacles(self, layout: Layout) -> None:
        m, d = self.model, self.data
        free = {BOX: list(self.slots[BOX]), CYLINDER: list(self.slots[CYLINDER])}
        for g in self.slots[BOX] + self.slots[CYLINDER]:
            d.mocap_pos[m.body_mocapid[m.geom_bodyid[g]]] = (0.0, 0.0, PARKED_Z)
        h = OBSTACLE_HALF_HEIGHT
        for ob in layout.obstacles:
            if not free[ob.kind]:
                raise EnvError(
                    f"layout has more {ob.kind} obstacles than the arena's {len(self.slots[ob.kind])} slots"
                )
            g = free[ob.kind].pop(0)
            mocap = m.body_mocapid[m.geom_bodyid[g]]
            if ob.kind == BOX:
                half = np.array([ob.sx, ob.sy, h])
            else:
                half = np.array([ob.sx, ob.sx, h])
                m.geom_size[g, :2] = (ob.sx, h)
            if ob.kind == BOX:
                m.geom_size[g] = half
            m.geom_rbound[g] = float(np.linalg.norm(half if ob.kind == BOX else (ob.sx, h)))
            m.geom_aabb[g] = (0.0, 0.0, 0.0, *half)
            d.mocap_pos[mocap] = (ob.x, ob.y, h)
            d.mocap_quat[mocap] = (math.cos(ob.yaw / 2), 0.0, 0.0, math.sin(ob.yaw / 2))

    def _set_pose(self, x: float, y: float, yaw: float) -> None:
        q = self.data.qpos
        i = self._qpos
        if self.planar:
            q[i: i + 3] = (x, y, yaw)
        else:
            q[i: i + 7] = (x, y, self._z0, math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))

    def pose(self) -> tuple[float, float, float]:
        """Robot (x, y, yaw) in the world frame."""
        q, i = self.data.qpos, self._qpos
        if self.planar:
            return float(q[i]), float(q[i + 1]), float(q[i + 2])
        w, qx, qy, qz = q[i + 3: i + 7]
        yaw = math.atan2(2 * (w * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz))
        return float(q[i]), float(q[i + 1]), yaw

    def body_velocity(self) -> np.ndarray:
        """(vx, vy, yaw rate) in the robot frame."""
        v, i = self.data.qvel, self._qvel
        _, _, yaw = self.pose()
        c, s = math.cos(yaw), math.sin(yaw)
        vx, vy = v[i], v[i + 1]
        wz = v[i + 2] if self.planar else v[i + 5]
        return np.array([c * vx + s * vy, -s * vx + c * vy, wz])

    def _in_collision(self) -> bool:
        n = self.data.ncon
        if n == 0:
            return False
        g1 = self.data.contact.geom1[:n]
        g2 = self.data.contact.geom2[:n]
        hit = (self._hull_mask[g1] & self._solid_mask[g2]) | (self._hull_mask[g2] & self._solid_mask[g1])
        return bool(hit.any())

    def _read_lidar(self) -> np.ndarray:
        m, d = self.model, self.data
        mujoco.mj_kinematics(m, d)
        m.opt.disableflags &= ~int(mujoco.mjtDisableBit.mjDSBL_SENSOR)
        mujoco.mj_sensorPos(m, d)
        m.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_SENSOR)
        r = d.sensordata[self._lidar_adr]
        return np.where(r < 0, self.lidar_range, np.minimum(r, self.lidar_range))

    # ----------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        layout_seed, param_seed, teacher_seed = (int(s) for s in self.np_random.integers(0, 2**63 - 1, size=3))
        layout = options.get("layout")
        if layout is None:
            layout = sample_layout(np.random.default_rng(layout_seed), self.layout_cfg)
        elif isinstance(layout, dict):
            layout = Layout.from_dict(layout)
        elif not isinstance(layout, Layout):
            raise EnvError(f"options['layout'] must be a Layout or a dict, got {type(layout).__name__}")
        params = dict(self.params)
        prng = np.random.default_rng(param_seed)
        for key, (lo, hi) in self.randomize.items():
            params[key] = float(prng.uniform(lo, hi))
        self.episode_params = params

        m, d = self.model, self.data
        self.controller.configure(m, params)
        mujoco.mj_setConst(m, d)  # derived masses after the parameters changed; resets qpos to qpos0
        mujoco.mj_resetData(m, d)
        self._place_obstacles(layout)
        self._set_pose(*layout.start)
        mujoco.mj_forward(m, d)
        self._layout = layout
        self._teacher = PlannerTeacher(layout, self.arena_half, self.layout_cfg.clearance, self.footprint,
                                       seed=teacher_seed, randomize=self.teacher_randomize,
                                       heading=self.teacher_heading)
        self._geodesic, self._potential = None, None
        if self.progress_metric == "geodesic":
            self._geodesic = DijkstraCostToGo(layout, self.arena_half, self.layout_cfg.clearance, self.footprint,
                                              shaped=False)
        self._steps = 0
        self._last_cmd = np.zeros(3)
        self._distance = self._goal_distance()
        self._potential = self._progress_potential(self._distance)
        self._privileged_now = self._privileged() if self.privileged_info else None
        obs = self._observation()
        return obs, self._info(False, False)

    def _check_action(self, action) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise EnvError(f"action must be 3 numbers (vx, vy, yaw_rate) in [-1, 1], got {action!r}") from None
        if a.shape != (3,):
            raise EnvError(f"action must have shape (3,) (vx, vy, yaw_rate), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise EnvError(f"action contains NaN or inf: {a.tolist()}; send finite values in [-1, 1]")
        return np.clip(a, -1.0, 1.0)

    def step(self, action):
        if self._layout is None:
            raise EnvError("call reset() before step()")
        cmd = self._check_action(action)
        m, d = self.model, self.data
        self.controller.apply(m, d, cmd, self.period)
        collided = False
        for n in self._chunks:
            mujoco.mj_step(m, d, nstep=n)
            collided = collided or self._in_collision()
        self._steps += 1
        self._last_cmd = cmd
        distance = self._goal_distance()
        success = distance <= self.goal_radius and not collided
        w = self.reward_weights
        potential = self._progress_potential(distance)
        reward = w["progress"] * (self._potential - potential) + w["time"]
        reward += w["success"] * success + w["collision"] * collided
        lidar = self._read_lidar()
        if w["clearance"]:
            gap = float(lidar.min()) - self.footprint
            reward += w["clearance"] * min(1.0, max(0.0, 1.0 - gap / self.clearance_margin))
        self._distance, self._potential = distance, potential
        if self.privileged_info:
            heading_before, self._privileged_now = self._privileged_now[1], self._privileged()
            reward += w["heading"] * float(self._privileged_now[1] - heading_before)
        terminated = bool(success or collided)
        truncated = bool(not terminated and self._steps >= self.max_episode_steps)
        return self._observation(lidar), float(reward), terminated, truncated, self._info(success, collided)

    def _goal_distance(self) -> float:
        x, y, _ = self.pose()
        gx, gy = self._layout.goal
        return math.hypot(gx - x, gy - y)

    def _progress_potential(self, euclidean: float) -> float:
        """Distance to the goal whose decrease the progress reward pays: straight-line, or the shortest obstacle-free
        path (`progress_metric="geodesic"`: no reward for driving into the dead end in front of an obstacle)."""
        if self._geodesic is None:
            return euclidean
        d = self._geodesic.distance(self.pose()[:2])
        if not math.isfinite(d):  # inside an obstacle's footprint (a collision ends the episode): no progress
            return euclidean if self._potential is None else self._potential
        return max(d, euclidean)  # never shorter than the straight line (the grid's last cell to the goal)

    def _observation(self, lidar: np.ndarray | None = None) -> dict[str, np.ndarray]:
        x, y, yaw = self.pose()
        gx, gy = self._layout.goal
        dx, dy = gx - x, gy - y
        c, s = math.cos(yaw), math.sin(yaw)
        gb = np.array([c * dx + s * dy, -s * dx + c * dy])
        dist = float(np.hypot(*gb))
        heading = math.atan2(gb[1], gb[0])
        steer_limit = self.episode_params["steering_limit"]
        steer = self.controller.steering(self.data) / steer_limit if steer_limit > 0 else 0.0
        state = np.concatenate([self.body_velocity(), [math.cos(heading), math.sin(heading), dist, steer],
                                self._last_cmd])
        onehot = np.zeros(len(EMBODIMENTS))
        onehot[EMBODIMENTS.index(self.embodiment)] = 1.0
        emb = np.concatenate([onehot, [self.episode_params[p] for p in PARAM_NAMES], [float(self.spec_.can_strafe)]])
        obs = {"state": state, "goal": gb, "lidar": self._read_lidar() if lidar is None else lidar,
               "embodiment": emb}
        return {
            k: np.clip(v, self.observation_space[k].low, self.observation_space[k].high).astype(np.float32)
            for k, v in obs.items()
        }

    def _info(self, success: bool, collided: bool) -> dict:
        info = {"is_success": bool(success), "collision": bool(collided), "time": self._steps * self.period,
                "distance": self._distance}
        if self.privileged_info:
            info["privileged"] = self._privileged_now.copy()
        return info

    def _privileged(self) -> np.ndarray:
        """What only the simulator knows, for an asymmetric critic in RL (never a policy's input): the shortest
        obstacle-free distance to the goal (the geodesic progress potential; straight-line without a geodesic field)
        over the arena's diagonal, the body-frame direction (cos, sin) in which it falls fastest, and the elapsed
        fraction of the time limit. Reads the step's `_distance` and `_potential`."""
        x, y, yaw = self.pose()
        gx, gy = self._layout.goal
        distance, direction = self._distance, (gx - x, gy - y)
        if self._geodesic is not None:
            distance = self._potential  # max(geodesic, straight line)
            grad = self._geodesic.gradient((x, y))
            if grad is None:  # next to an obstacle's cells: central differences of the distance
                h = self._geodesic.resolution
                grad = (self._geodesic.distance((x + h, y)) - self._geodesic.distance((x - h, y)),
                        self._geodesic.distance((x, y + h)) - self._geodesic.distance((x, y - h)))
            if all(math.isfinite(g) for g in grad) and math.hypot(*grad) > 1e-9:
                direction = (-grad[0], -grad[1])
        c, s = math.cos(yaw), math.sin(yaw)
        bx, by = c * direction[0] + s * direction[1], -s * direction[0] + c * direction[1]
        norm = math.hypot(bx, by) or 1.0
        diagonal = 2 * self.arena_half * math.sqrt(2)
        return np.array([distance / diagonal, bx / norm, by / norm, self._steps / self.max_episode_steps],
                        dtype=np.float32)

    # ----------------------------------------------------------------- teacher, layout, rendering
    @property
    def layout(self) -> Layout | None:
        return self._layout

    @property
    def teacher(self) -> PlannerTeacher:
        if self._teacher is None:
            raise EnvError("call reset() before asking for the teacher")
        return self._teacher

    def teacher_action(self) -> np.ndarray:
        """The privileged planner's holonomic command (vx, vy, yaw rate) for the current state."""
        x, y, yaw = self.pose()
        p = self.episode_params
        return self.teacher.action(x, y, yaw, p["max_speed"], p["max_yaw_rate"])

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; make the env with render_mode='rgb_array'")
            return None
        if self._layout is None:
            raise EnvError("call reset() before render()")
        if self._renderer is None:
            h, w = self.render_size
            self._renderer = mujoco.Renderer(self.model, height=h, width=w)
        mujoco.mj_forward(self.model, self.data)
        self._renderer.update_scene(self.data, camera=self.render_camera)
        scene = self._renderer.scene
        gx, gy = self._layout.goal  # goal marker: a flat green disc of the goal radius
        _add_geom(scene, mujoco.mjtGeom.mjGEOM_CYLINDER, [self.goal_radius, 0.005, 0.0], [gx, gy, 0.005], np.eye(3),
                  GOAL_RGBA)
        self._draw_robot(scene)
        return self._renderer.render()

    def _draw_robot(self, scene) -> None:
        """The robot's footprint and an arrow along its heading, drawn above the lidar fan so that both stay visible
        from the overhead camera (the hull alone is a few pixels under the rays); the follow camera gets the arrow."""
        x, y, yaw = self.pose()
        c, s = math.cos(yaw), math.sin(yaw)
        top = ROBOT_MARK_HEIGHT
        if self.render_camera == "overhead":  # the follow camera sees the hull itself, large
            _add_geom(scene, mujoco.mjtGeom.mjGEOM_CYLINDER, [self.footprint + 0.03, 0.01, 0.0], [x, y, top],
                      np.eye(3), BODY_RGBA)
        z = top + 0.02
        tip = np.array([x + ARROW_LENGTH * c, y + ARROW_LENGTH * s, z])
        _add_segment(scene, np.array([x, y, z]), tip, ARROW_RGBA)  # shaft, then the two barbs of the head
        for side in (1.0, -1.0):
            back = yaw + math.pi - side * ARROW_HEAD_ANGLE
            _add_segment(scene, tip, tip + ARROW_HEAD * np.array([math.cos(back), math.sin(back), 0.0]), ARROW_RGBA)

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def evaluate_teacher(embodiment: str, episodes: int, seed: int = 0, **env_kwargs) -> dict:
    """Run the privileged teacher's commands (`teacher_action`) unchanged on a robot for `episodes` seeded episodes.

    Returns success, collision and timeout rates, the mean time of successful episodes, and
    `lateral_share`: over all episodes, the distance the robot moved sideways in its own frame divided
    by the distance it moved (sum of |vy| dt over sum of |v| dt; 0 for a robot that only drives
    forward or back). Episode i uses seed `seed + i`, so every robot sees the same layouts.
    """
    env = NavEnv(embodiment=embodiment, **env_kwargs)
    counts = {"success": 0, "collision": 0, "timeout": 0}
    times = []
    lateral = travelled = 0.0
    try:
        for i in range(episodes):
            env.reset(seed=seed + i)
            while True:
                _, _, terminated, truncated, info = env.step(env.teacher_action())
                v = env.body_velocity()
                lateral += abs(float(v[1]))
                travelled += math.hypot(float(v[0]), float(v[1]))
                if terminated or truncated:
                    break
            if info["is_success"]:
                counts["success"] += 1
                times.append(info["time"])
            elif info["collision"]:
                counts["collision"] += 1
            else:
                counts["timeout"] += 1
    finally:
        env.close()
    return {
        "embodiment": embodiment,
        "episodes": episodes,
        "seed": seed,
        "success_rate": counts["success"] / max(episodes, 1),
        "collision_rate": counts["collision"] / max(episodes, 1),
        "timeout_rate": counts["timeout"] / max(episodes, 1),
        "mean_success_time": float(np.mean(times)) if times else float("nan"),
        "lateral_share": lateral / travelled if travelled > 0 else 0.0,
    }
