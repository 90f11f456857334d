"""Low-level controllers: turn the body-frame command (vx, vy, yaw rate) into actuator inputs.

Drive actuators are velocity servos whose set-point is MuJoCo's actuator activation, integrated at
the physics rate from `ctrl` (an acceleration). Each control period the controller sets `ctrl` so the
set-point ramps toward the target no faster than the robot's acceleration limit, which is therefore
enforced at every physics step. What a robot cannot do is dropped here, not faked: a wheeled base
ignores vy, an Ackermann base gets yaw only through speed and steering.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

GRAVITY = 9.81
SERVO_TIME_CONSTANT = 0.05  # s, velocity servo response at the nominal mass
YAW_ACCEL_PER_RATE = 4.0  # angular acceleration limit = 4 * max_yaw_rate (full rate in 0.25 s)


def _ids(model, kind, names):
    return [mujoco.mj_name2id(model, kind, n) for n in names]


class Controller:
    """Shared plumbing: mass scaling of the base and velocity-servo configuration."""

    drive_actuators: tuple[str, ...] = ()

    def __init__(self, model: mujoco.MjModel):
        self.robot = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "robot")
        self.base_mass0 = float(model.body_mass[self.robot])
        self.base_inertia0 = model.body_inertia[self.robot].copy()
        self.other_mass = float(model.body_subtreemass[self.robot]) - self.base_mass0
        self.drive = np.array(_ids(model, mujoco.mjtObj.mjOBJ_ACTUATOR, self.drive_actuators))
        self.drive_act = model.actuator_actadr[self.drive].copy()
        self.accel = np.zeros(len(self.drive))  # per-drive acceleration limit, set in configure

    def configure(self, model: mujoco.MjModel, params: dict[str, float]) -> None:
        base_mass = params["mass"] - self.other_mass
        model.body_mass[self.robot] = base_mass
        model.body_inertia[self.robot] = self.base_inertia0 * (base_mass / self.base_mass0)

    @staticmethod
    def _servo(model, actuator: int, kv: float, max_rate: float, max_force: float) -> None:
        model.actuator_gainprm[actuator, 0] = kv
        model.actuator_biasprm[actuator, :3] = (0.0, 0.0, -kv)
        model.actuator_actrange[actuator] = (-max_rate, max_rate)
        model.actuator_forcerange[actuator] = (-max_force, max_force)

    def _ramp(self, data, targets: np.ndarray, period: float) -> None:
        """Set the servo acceleration so each set-point reaches its target within one period if allowed."""
        current = data.act[self.drive_act]
        data.ctrl[self.drive] = np.clip((targets - current) / period, -self.accel, self.accel)

    def steering(self, data) -> float:
        return 0.0


class HolonomicController(Controller):
    """World-frame x/y slides and a yaw hinge; the command is rotated by the mid-period heading."""

    drive_actuators = ("drive_x", "drive_y", "drive_yaw")

    def __init__(self, model):
        super().__init__(model)
        self.yaw_qpos = model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "yaw")]

    def configure(self, model, params):
        super().configure(model, params)
        m = params["mass"]
        izz = float(model.body_inertia[self.robot][2])
        for act in self.drive[:2]:
            self._servo(model, act, m / SERVO_TIME_CONSTANT, params["max_speed"], 3.0 * m * params["max_accel"])
        yaw_accel = YAW_ACCEL_PER_RATE * params["max_yaw_rate"]
        self._servo(model, self.drive[2], izz / SERVO_TIME_CONSTANT, params["max_yaw_rate"], 3.0 * izz * yaw_accel)
        self.params = params

    def apply(self, model, data, cmd, period):
        p = self.params
        v = cmd[:2] * p["max_speed"]
        norm = math.hypot(v[0], v[1])
        if norm > p["max_speed"]:
            v *= p["max_speed"] / norm
        wz = cmd[2] * p["max_yaw_rate"]
        yaw = data.qpos[self.yaw_qpos] + 0.5 * wz * period
        c, s = math.cos(yaw), math.sin(yaw)
        target = np.array([c * v[0] - s * v[1], s * v[0] + c * v[1], wz])
        current = data.act[self.drive_act]
        acc = (target - current) / period
        lin = math.hypot(acc[0], acc[1])
        if lin > p["max_accel"]:
            acc[:2] *= p["max_accel"] / lin
        yaw_accel = YAW_ACCEL_PER_RATE * p["max_yaw_rate"]
        acc[2] = np.clip(acc[2], -yaw_accel, yaw_accel)
        data.ctrl[self.drive] = acc


class WheeledController(Controller):
    """Differential and skid steering: left/right wheel speeds from (vx, yaw rate); vy is dropped."""

    left: tuple[str, ...] = ()
    right: tuple[str, ...] = ()
    track_factor = 1.0  # effective / geometric track: > 1 compensates for wheels that slip when turning

    def __init__(self, model):
        self.drive_actuators = self.left + self.right
        super().__init__(model)
        self.sign = np.array([-1.0] * len(self.left) + [1.0] * len(self.right))  # yaw contribution
        self.side = -self.sign  # left wheels sit at +y
        wheel_bodies = _ids(model, mujoco.mjtObj.mjOBJ_BODY, self.drive_actuators)
        self.wheel_bodies = np.array(wheel_bodies)
        geom = [int(np.flatnonzero(model.geom_bodyid == b)[0]) for b in wheel_bodies]
        self.radius = float(model.geom_size[geom[0], 0])

    def configure(self, model, params):
        super().configure(model, params)
        n = len(self.drive)
        m, r = params["mass"], self.radius
        # Torque to slip a wheel twice over (skid steering turns only by breaking traction), and a
        # gain stiff enough to reach it at a quarter of the top wheel speed of tracking error.
        torque = 2.0 * m * GRAVITY * r / n
        top = params["max_speed"] / r
        kv = max(m * r * r / (n * SERVO_TIME_CONSTANT), torque / (0.25 * top))
        for act in self.drive:
            self._servo(model, act, kv, top, torque)
        model.body_pos[self.wheel_bodies, 1] = self.side * params["wheel_base"] / 2.0
        self.accel[:] = params["max_accel"] / r
        self.params = params

    def apply(self, model, data, cmd, period):
        p = self.params
        v = cmd[0] * p["max_speed"]
        wz = cmd[2] * p["max_yaw_rate"]
        speeds = v + self.sign * wz * self.track_factor * p["wheel_base"] / 2.0
        peak = np.max(np.abs(speeds))
        if peak > p["max_speed"]:
            speeds *= p["max_speed"] / peak
        self._ramp(data, speeds / self.radius, period)


class DiffDriveController(WheeledController):
    left = ("wheel_left",)
    right = ("wheel_right",)


class SkidSteerController(WheeledController):
    left = ("wheel_front_left", "wheel_rear_left")
    right = ("wheel_front_right", "wheel_rear_right")
    track_factor = 2.5  # measured: turning in place needs about this much extra wheel-speed difference


class AckermannController(Controller):
    """Steered front wheels (Ackermann geometry), driven rear wheels; yaw rate = v tan(steer) / L."""

    drive_actuators = ("wheel_rear_left", "wheel_rear_right")
    MIN_STEER_SPEED = 0.1  # m/s; below it the steering angle is set as if moving this fast

    def __init__(self, model):
        super().__init__(model)
        obj = mujoco.mjtObj
        self.steer = np.array(_ids(model, obj.mjOBJ_ACTUATOR, ("steer_left", "steer_right")))
        self.steer_qpos = model.jnt_qposadr[_ids(model, obj.mjOBJ_JOINT, ("steer_left", "steer_right"))]
        self.rear = np.array(_ids(model, obj.mjOBJ_BODY, ("wheel_rear_left", "wheel_rear_right")))
        self.front = np.array(_ids(model, obj.mjOBJ_BODY, ("steer_front_left", "steer_front_right")))
        self.track = float(model.body_pos[self.rear[0], 1] - model.body_pos[self.rear[1], 1])
        wheel_geom = int(np.flatnonzero(model.geom_bodyid == self.rear[0])[0])
        self.radius = float(model.geom_size[wheel_geom, 0])

    def configure(self, model, params):
        super().configure(model, params)
        m, r = params["mass"], self.radius
        for act in self.drive:
            self._servo(model, act, m * r * r / (2 * SERVO_TIME_CONSTANT), params["max_speed"] / r,
                        m * GRAVITY * r / 2)
        model.body_pos[self.rear, 0] = -params["wheel_base"] / 2.0
        model.body_pos[self.front, 0] = params["wheel_base"] / 2.0
        self.accel[:] = params["max_accel"] / r
        self.params = params

    def apply(self, model, data, cmd, period):
        p = self.params
        L, w = p["wheel_base"], self.track
        v = cmd[0] * p["max_speed"]
        wz = cmd[2] * p["max_yaw_rate"]
        v_eff = v if abs(v) >= self.MIN_STEER_SPEED else math.copysign(self.MIN_STEER_SPEED, v)
        delta = float(np.clip(math.atan(L * wz / v_eff), -p["steering_limit"], p["steering_limit"]))
        if abs(delta) > 1e-4:
            radius = L / math.tan(delta)
            left = math.atan(L / (radius - w / 2.0))
            right = math.atan(L / (radius + w / 2.0))
        else:
            left = right = 0.0
        data.ctrl[self.steer] = (left, right)
        yaw_rate = v * math.tan(delta) / L
        speeds = np.array([v - yaw_rate * w / 2.0, v + yaw_rate * w / 2.0])
        self._ramp(data, speeds / self.radius, period)

    def steering(self, data) -> float:
        return float(np.mean(data.qpos[self.steer_qpos]))


CONTROLLERS = {
    "holonomic": HolonomicController,
    "diffdrive": DiffDriveController,
    "ackermann": AckermannController,
    "skidsteer": SkidSteerController,
}
