"""Episode layouts: obstacles, start and goal, sampled so that a path always exists.

A layout is plain data (no MuJoCo), with an exact signed distance to every obstacle and wall. The
same function serves the feasibility check, the planner's grid and the teacher's line-of-sight
tests, so they can never disagree about where free space is.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from envs.errors import EnvError

BOX, CYLINDER = "box", "cylinder"


@dataclass(frozen=True)
class Obstacle:
    """A box (half sizes sx, sy, rotated by yaw) or a cylinder (radius sx) standing on the floor."""

    kind: str
    x: float
    y: float
    sx: float
    sy: float = 0.0
    yaw: float = 0.0

    def __post_init__(self):
        if self.kind not in (BOX, CYLINDER):
            raise EnvError(f"obstacle kind must be 'box' or 'cylinder', got {self.kind!r}")
        if not (self.sx > 0 and (self.kind == CYLINDER or self.sy > 0)):
            raise EnvError(f"obstacle sizes must be positive, got sx={self.sx} sy={self.sy}")


@dataclass(frozen=True)
class Layout:
    start: tuple[float, float, float]  # x, y, yaw
    goal: tuple[float, float]
    obstacles: tuple[Obstacle, ...] = field(default_factory=tuple)

    @staticmethod
    def from_dict(d: dict) -> Layout:
        """Build from plain data: {'start': [x, y, yaw], 'goal': [x, y], 'obstacles': [{...}, ...]}."""
        try:
            start = tuple(float(v) for v in d["start"])
            goal = tuple(float(v) for v in d["goal"])
            obstacles = tuple(o if isinstance(o, Obstacle) else Obstacle(**o) for o in d.get("obstacles", ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise EnvError(f"invalid layout {d!r} ({exc}); give start [x, y, yaw], goal [x, y], obstacles") from None
        if len(start) == 2:
            start = (*start, 0.0)
        if len(start) != 3 or len(goal) != 2:
            raise EnvError("layout start must be [x, y, yaw] and goal [x, y]")
        return Layout(start=start, goal=goal, obstacles=obstacles)  # type: ignore[arg-type]

    @functools.cached_property
    def _obstacle_arrays(self) -> tuple[np.ndarray, ...]:
        """Obstacle parameters as arrays, so that the distance to all of them is a handful of array operations
        (the teacher asks for it at every control step)."""
        obs = self.obstacles
        x = np.array([o.x for o in obs], dtype=np.float64)
        y = np.array([o.y for o in obs], dtype=np.float64)
        sx = np.array([o.sx for o in obs], dtype=np.float64)
        sy = np.array([o.sy for o in obs], dtype=np.float64)
        c = np.array([math.cos(o.yaw) for o in obs], dtype=np.float64)
        s = np.array([math.sin(o.yaw) for o in obs], dtype=np.float64)
        cyl = np.array([o.kind == CYLINDER for o in obs], dtype=bool)
        return x, y, sx, sy, c, s, cyl

    def signed_distance(self, points: np.ndarray, arena_half: float) -> np.ndarray:
        """Distance from each point (..., 2) to the nearest obstacle or wall; negative inside."""
        p = np.asarray(points, dtype=np.float64)
        px, py = p[..., 0], p[..., 1]
        dist = arena_half - np.maximum(np.abs(px), np.abs(py))
        if not self.obstacles:
            return dist
        x, y, sx, sy, c, s, cyl = self._obstacle_arrays
        dx, dy = px[..., None] - x, py[..., None] - y  # (..., obstacles)
        qx = np.abs(c * dx + s * dy) - sx
        qy = np.abs(-s * dx + c * dy) - sy
        box = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0)) + np.minimum(np.maximum(qx, qy), 0.0)
        d = np.where(cyl, np.hypot(dx, dy) - sx, box)
        return np.minimum(dist, d.min(axis=-1))


@dataclass(frozen=True)
class LayoutConfig:
    """How episodes are drawn. Obstacle sizes are half extents (box) or radii (cylinder), in metres."""

    arena_half: float = 4.0
    num_obstacles: tuple[int, int] = (3, 8)
    obstacle_size: tuple[float, float] = (0.15, 0.5)
    obstacle_on_path: float = 0.5  # fraction placed near the start-goal segment (forces detours)
    min_goal_distance: float = 3.0
    clearance: float = 0.45  # radius of the disc that must fit along some start-goal path
    max_boxes: int = 8
    max_cylinders: int = 8

    def validate(self) -> LayoutConfig:
        lo, hi = self.num_obstacles
        if not (0 <= lo <= hi <= self.max_boxes + self.max_cylinders):
            raise EnvError(
                f"num_obstacles {self.num_obstacles} must satisfy 0 <= low <= high <= "
                f"{self.max_boxes + self.max_cylinders} (the arena's obstacle slots)"
            )
        slo, shi = self.obstacle_size
        if not (0.05 <= slo <= shi <= 1.0):
            raise EnvError(f"obstacle_size {self.obstacle_size} must satisfy 0.05 <= low <= high <= 1.0 m")
        if not 0.0 <= self.obstacle_on_path <= 1.0:
            raise EnvError(f"obstacle_on_path={self.obstacle_on_path} must be in [0, 1]")
        span = 2 * (self.arena_half - self.clearance)
        if not 0.0 <= self.min_goal_distance <= 0.9 * span * math.sqrt(2):
            raise EnvError(
                f"min_goal_distance={self.min_goal_distance} must be in [0, {0.9 * span * math.sqrt(2):.2f}] m "
                f"for this arena"
            )
        if not 0.1 <= self.clearance <= 1.0:
            raise EnvError(f"clearance={self.clearance} must be in [0.1, 1.0] m")
        return self


GRID_RESOLUTION = 0.1  # metres per cell for feasibility checks and planning


def grid_points(arena_half: float, resolution: float = GRID_RESOLUTION) -> np.ndarray:
    """Cell centres of the planning grid, shape (n, n, 2), indexed [ix, iy]."""
    n = int(round(2 * arena_half / resolution))
    c = -arena_half + resolution * (np.arange(n) + 0.5)
    return np.stack(np.meshgrid(c, c, indexing="ij"), axis=-1)


def world_to_cell(xy, arena_half: float, n: int, resolution: float = GRID_RESOLUTION) -> tuple[int, int]:
    ix = int(np.clip(math.floor((xy[0] + arena_half) / resolution), 0, n - 1))
    iy = int(np.clip(math.floor((xy[1] + arena_half) / resolution), 0, n - 1))
    return ix, iy


def is_feasible(layout: Layout, cfg: LayoutConfig) -> bool:
    """True when start and goal are clear and a disc of radius `clearance` can travel between them."""
    pts = np.array([layout.start[:2], layout.goal], dtype=np.float64)
    if np.any(layout.signed_distance(pts, cfg.arena_half) <= cfg.clearance):
        return False
    grid = grid_points(cfg.arena_half)
    free = layout.signed_distance(grid, cfg.arena_half) > cfg.clearance
    labels, _ = ndimage.label(free)  # 4-connectivity: conservative for a disc robot
    n = free.shape[0]
    a = labels[world_to_cell(layout.start, cfg.arena_half, n)]
    b = labels[world_to_cell(layout.goal, cfg.arena_half, n)]
    return bool(a) and a == b


def sample_layout(rng: np.random.Generator, cfg: LayoutConfig, max_tries: int = 200) -> Layout:
    """Random start, goal at least `min_goal_distance` apart, and obstacles; always feasible."""
    h = cfg.arena_half - cfg.clearance - 0.05
    for _ in range(max_tries):
        start = rng.uniform(-h, h, size=2)
        goal = rng.uniform(-h, h, size=2)
        if np.linalg.norm(goal - start) < cfg.min_goal_distance:
            continue
        n = int(rng.integers(cfg.num_obstacles[0], cfg.num_obstacles[1] + 1))
        obstacles: list[Obstacle] = []
        boxes = cylinders = 0
        attempts = 0
        while len(obstacles) < n and attempts < 20 * n:
            attempts += 1
            kind = BOX if rng.random() < 0.5 else CYLINDER
            if kind == BOX and boxes >= cfg.max_boxes:
                kind = CYLINDER
            if kind == CYLINDER and cylinders >= cfg.max_cylinders:
                kind = BOX
            size = rng.uniform(*cfg.obstacle_size, size=2)
            if rng.random() < cfg.obstacle_on_path:
                t = rng.uniform(0.2, 0.8)
                direction = goal - start
                normal = np.array([-direction[1], direction[0]]) / np.linalg.norm(direction)
                xy = start + t * direction + normal * rng.normal(0.0, 0.3)
            else:
                xy = rng.uniform(-cfg.arena_half, cfg.arena_half, size=2)
            ob = Obstacle(kind, float(xy[0]), float(xy[1]), float(size[0]),
                          float(size[1]) if kind == BOX else 0.0, float(rng.uniform(-math.pi, math.pi)))
            probe = Layout((float(start[0]), float(start[1]), 0.0), (float(goal[0]), float(goal[1])), (ob,))
            ends = np.array([start, goal])
            if np.any(probe.signed_distance(ends, 1e9) <= cfg.clearance + 0.1):
                continue  # keep start and goal clear
            obstacles.append(ob)
            boxes += kind == BOX
            cylinders += kind == CYLINDER
        layout = Layout(
            start=(float(start[0]), float(start[1]), float(rng.uniform(-math.pi, math.pi))),
            goal=(float(goal[0]), float(goal[1])),
            obstacles=tuple(obstacles),
        )
        if is_feasible(layout, cfg):
            return layout
    raise EnvError(
        f"could not draw a feasible layout in {max_tries} tries; lower num_obstacles, obstacle_size, "
        f"clearance or min_goal_distance"
    )
