"""The privileged teacher: follows a Dijkstra cost-to-go field of the known obstacle map with holonomic commands.

It sees the true layout and pose (privileged), so it is a demonstrator, not a policy. Its command is
always the holonomic one (vx, vy, yaw rate) and it never adapts to the robot's limits: that gap is what
residual RL closes. Translation and heading are separate objectives, as on a real omnidirectional base:
the robot translates along the path in whatever body-frame direction it points, and the heading mode
decides where the robot faces meanwhile (see `HEADINGS`). The default, "goal", turns toward the goal
at a limited rate, so much of the motion is sideways or backwards, which a robot that cannot strafe
cannot copy. "path" is the old behaviour (face the direction of travel), which a differential drive
can follow almost exactly. With `randomize`, each episode's plan uses a seeded random cost field, so
demonstrations go both ways around obstacles.
"""

from __future__ import annotations

import math

import numpy as np

from envs.errors import EnvError
from envs.nav.layout import Layout
from envs.nav.planner import DijkstraCostToGo

LOOKAHEAD = 0.8  # m of path ahead within which the carrot point is chosen
CRUISE = 0.8  # fraction of the robot's max speed
MIN_SPEED = 0.35  # fraction of cruise kept in the sharpest turn
YAW_GAIN = 2.5  # rad/s of yaw rate per rad of heading error
PATH_CELLS = 24  # how much of the path ahead is examined each step
GOAL_TURN_RATE = 0.25  # "goal" heading: yaw rate cap as a fraction of the robot's max yaw rate
GOAL_TURN_STOP = 0.6  # m; within this of the goal the "goal" heading stops turning (its bearing swings)

# Heading modes: where the robot faces while it translates along the path.
HEADINGS: dict[str, str] = {
    "goal": "turn toward the goal at a limited rate, translating in any body direction (default)",
    "hold": "keep the start heading, translating in any body direction (a policy cannot observe that heading)",
    "path": "face the direction of travel (a differential drive can follow this almost exactly)",
}


def wrap_angle(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


class PlannerTeacher:
    """Carrot following down a Dijkstra cost-to-go field of the inflated grid, with line-of-sight shortcuts.

    No A*: one Dijkstra search from the goal gives the cost to go from every cell, so the path from wherever
    the robot is now is a walk down the predecessor tree (see `envs.nav.planner`).

    `heading` (one of `HEADINGS`) only sets the yaw-rate command; the route and the world-frame
    velocity along it are the same in every mode.
    """

    def __init__(
        self,
        layout: Layout,
        arena_half: float,
        clearance: float,
        footprint: float,
        seed: int | None,
        randomize: bool = True,
        heading: str = "goal",
    ):
        if heading not in HEADINGS:
            raise EnvError(f"teacher heading {heading!r} is unknown; choose one of: {', '.join(HEADINGS)}")
        self.layout, self.arena_half = layout, arena_half
        self.clearance, self.footprint = clearance, footprint
        self.heading = heading
        self.hold_yaw = float(layout.start[2])
        self.rng = np.random.default_rng(seed) if randomize else None
        self._field: DijkstraCostToGo | None = None

    @property
    def field(self) -> DijkstraCostToGo:
        if self._field is None:  # planned lazily: envs used without a teacher never pay for it
            self._field = DijkstraCostToGo(self.layout, self.arena_half, self.clearance, self.footprint, self.rng)
        return self._field

    def plan(self, xy) -> np.ndarray:
        """The full planned path from `xy` to the goal (cell centres), for inspection and plots."""
        return np.vstack([np.asarray(xy, dtype=np.float64)[None], self.field.path(xy)])

    def _clear(self, a: np.ndarray, targets: np.ndarray, threshold: float) -> np.ndarray:
        """For each target, whether the segment from a keeps at least `threshold` from obstacles."""
        t = np.linspace(0.0, 1.0, 12)[None, :, None]
        samples = a[None, None, :] + t * (targets[:, None, :] - a[None, None, :])
        return np.all(self.layout.signed_distance(samples, self.arena_half) > threshold, axis=1)

    def carrot(self, pos: np.ndarray) -> tuple[np.ndarray, float]:
        """Point to steer at, and how sharply the path bends beyond it (cosine of the bend)."""
        goal = np.asarray(self.layout.goal)
        here = float(self.layout.signed_distance(pos, self.arena_half))
        threshold = min(self.footprint + 0.12, 0.9 * here)
        if np.linalg.norm(goal - pos) <= LOOKAHEAD and self._clear(pos, goal[None], threshold)[0]:
            return goal, 1.0
        path = self.field.path(pos, max_cells=PATH_CELLS)
        if len(path) == 0:
            return pos, 1.0
        arc = np.cumsum(np.linalg.norm(np.diff(np.vstack([pos, path]), axis=0), axis=1))
        within = np.flatnonzero(arc <= LOOKAHEAD)
        candidates = path[within] if len(within) else path[:1]
        ok = np.flatnonzero(self._clear(pos, candidates, threshold))
        k = int(ok[-1]) if len(ok) else 0
        target = candidates[k]
        # Bend: direction to the carrot vs direction of the path after it.
        after = path[min(len(path) - 1, (within[k] if len(within) else 0) + 8)]
        d1, d2 = target - pos, after - target
        n1, n2 = np.linalg.norm(d1), np.linalg.norm(d2)
        bend = float(d1 @ d2 / (n1 * n2)) if n1 > 1e-6 and n2 > 1e-6 else 1.0
        return target, bend

    def action(self, x: float, y: float, yaw: float, max_speed: float, max_yaw_rate: float) -> np.ndarray:
        """Normalised holonomic command (vx, vy, yaw rate) in the robot frame, each in [-1, 1]."""
        pos = np.array([x, y], dtype=np.float64)
        target, bend = self.carrot(pos)
        d = target - pos
        dist = float(np.linalg.norm(d))
        if dist < 1e-6:
            return np.zeros(3, dtype=np.float32)
        speed_scale = MIN_SPEED + (1.0 - MIN_SPEED) * 0.5 * (1.0 + bend)
        v_world = d / dist * CRUISE * speed_scale * max_speed
        c, s = math.cos(yaw), math.sin(yaw)
        vx = c * v_world[0] + s * v_world[1]
        vy = -s * v_world[0] + c * v_world[1]
        cmd = np.array([vx / max_speed, vy / max_speed, self._yaw_command(pos, yaw, d, max_yaw_rate)])
        return np.clip(cmd, -1.0, 1.0).astype(np.float32)

    def _yaw_command(self, pos: np.ndarray, yaw: float, to_carrot: np.ndarray, max_yaw_rate: float) -> float:
        """Normalised yaw rate for the heading mode; translation does not depend on it."""
        if self.heading == "path":
            error = wrap_angle(math.atan2(to_carrot[1], to_carrot[0]) - yaw)
            return YAW_GAIN * error / max_yaw_rate
        if self.heading == "hold":
            return YAW_GAIN * wrap_angle(self.hold_yaw - yaw) / max_yaw_rate
        to_goal = np.asarray(self.layout.goal) - pos
        if float(np.linalg.norm(to_goal)) < GOAL_TURN_STOP:
            return 0.0
        error = wrap_angle(math.atan2(to_goal[1], to_goal[0]) - yaw)
        return float(np.clip(YAW_GAIN * error / max_yaw_rate, -GOAL_TURN_RATE, GOAL_TURN_RATE))
