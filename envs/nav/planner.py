"""The nav teacher's planner: a Dijkstra cost-to-go field on the known obstacle map (not A*: no heuristic, no
single start; one search from the goal covers every cell).

Because the field covers every cell, a path from wherever the robot drifted to is a walk down the
predecessor tree, so the teacher replans every control step for free. Cells closer to an obstacle
than the robot's footprint are blocked; cells inside the safety clearance are allowed but expensive,
so a robot pushed off its path can still get back. An optional smooth random cost field makes
equally good routes (left or right of an obstacle) win by chance, seeded per episode.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from envs.nav.layout import GRID_RESOLUTION, Layout, grid_points, world_to_cell

PROXIMITY_MARGIN = 0.4  # m beyond the clearance over which the cost rises toward obstacles
PROXIMITY_WEIGHT = 2.0
INFLATED_COST = 30.0  # extra cost per metre inside the clearance zone
NOISE_CELLS = 8  # the random field varies over arena / NOISE_CELLS
NOISE_AMPLITUDE = 1.5


def smooth_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """A smooth random field in [0, 1] on an n x n grid (bilinear upsampling of a coarse grid)."""
    coarse = rng.uniform(0.0, 1.0, size=(NOISE_CELLS + 1, NOISE_CELLS + 1))
    coords = np.linspace(0.0, NOISE_CELLS, n)
    ii, jj = np.meshgrid(coords, coords, indexing="ij")
    return ndimage.map_coordinates(coarse, [ii, jj], order=1)


class DijkstraCostToGo:
    """Cost-to-go to the goal on an 8-connected grid (one Dijkstra from the goal), and paths down its
    predecessor tree."""

    def __init__(
        self,
        layout: Layout,
        arena_half: float,
        clearance: float,
        footprint: float,
        rng: np.random.Generator | None = None,
        resolution: float = GRID_RESOLUTION,
        shaped: bool = True,
    ):
        self.layout, self.arena_half, self.resolution = layout, arena_half, resolution
        pts = grid_points(arena_half, resolution)
        n = pts.shape[0]
        self.n, self.points = n, pts.reshape(-1, 2)
        dist = layout.signed_distance(pts, arena_half)
        blocked = dist <= footprint
        if shaped:  # the teacher's field: staying clear of obstacles costs less than hugging them
            cost = 1.0 + PROXIMITY_WEIGHT * np.clip((clearance + PROXIMITY_MARGIN - dist) / PROXIMITY_MARGIN, 0, 1)
            cost = cost + INFLATED_COST * (dist <= clearance)
        else:  # plain path length (the geodesic distance a reward can use as its potential)
            cost = np.ones_like(dist)
        if rng is not None:
            cost = cost + NOISE_AMPLITUDE * smooth_noise(rng, n)
        index = np.arange(n * n).reshape(n, n)
        rows, cols, weights = [], [], []
        for di, dj in ((1, 0), (0, 1), (1, 1), (1, -1)):
            a = index[max(0, -di): n - max(0, di), max(0, -dj): n - max(0, dj)]
            b = index[max(0, di): n + min(0, di) or None, max(0, dj): n + min(0, dj) or None]
            a, b = a.ravel(), b.ravel()
            ok = ~blocked.ravel()[a] & ~blocked.ravel()[b]
            length = resolution * math.hypot(di, dj)
            rows.append(a[ok])
            cols.append(b[ok])
            weights.append(length * 0.5 * (cost.ravel()[a[ok]] + cost.ravel()[b[ok]]))
        graph = coo_matrix(
            (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n * n, n * n)
        ).tocsr()
        gi, gj = world_to_cell(layout.goal, arena_half, n, resolution)
        self.goal_index = int(index[gi, gj])
        self.cost, self.pred = dijkstra(graph, directed=False, indices=self.goal_index, return_predecessors=True)

    def cell(self, xy) -> int:
        i, j = world_to_cell(xy, self.arena_half, self.n, self.resolution)
        best = i * self.n + j
        if np.isfinite(self.cost[best]):
            return best
        # The robot's own cell is blocked or cut off: start from the best reachable neighbour.
        lo_i, hi_i = max(0, i - 3), min(self.n, i + 4)
        lo_j, hi_j = max(0, j - 3), min(self.n, j + 4)
        cand = (np.arange(lo_i, hi_i)[:, None] * self.n + np.arange(lo_j, hi_j)[None, :]).ravel()
        costs = self.cost[cand]
        if not np.any(np.isfinite(costs)):
            return -1
        return int(cand[np.argmin(costs)])

    def _cell_corner(self, xy) -> tuple[int, float, float]:
        """The flat index of the lower corner of a point's interpolation cell and the point's fractions in it."""
        u = (float(xy[0]) + self.arena_half) / self.resolution - 0.5
        v = (float(xy[1]) + self.arena_half) / self.resolution - 0.5
        i0, j0 = min(max(math.floor(u), 0), self.n - 2), min(max(math.floor(v), 0), self.n - 2)
        return i0 * self.n + j0, min(max(u - i0, 0.0), 1.0), min(max(v - j0, 0.0), 1.0)

    def gradient(self, xy) -> tuple[float, float] | None:
        """The gradient of `distance` at a point (the bilinear interpolant's, from one lookup of the cell's four
        corners); None next to or inside a blocked cell, where the interpolant is not that of four corners."""
        k, fu, fv = self._cell_corner(xy)
        c00, c10, c01, c11 = (float(self.cost[k]), float(self.cost[k + self.n]), float(self.cost[k + 1]),
                              float(self.cost[k + self.n + 1]))
        if not all(math.isfinite(c) for c in (c00, c10, c01, c11)):
            return None
        du = (1 - fv) * (c10 - c00) + fv * (c11 - c01)
        dv = (1 - fu) * (c01 - c00) + fu * (c11 - c10)
        return du / self.resolution, dv / self.resolution

    def distance(self, xy) -> float:
        """Cost to go at a point, interpolated bilinearly between cell centres (continuous in the robot's position,
        so that its differences make a smooth shaping reward); inf where the goal cannot be reached."""
        k, fu, fv = self._cell_corner(xy)
        c = self.cost[[k, k + self.n, k + 1, k + self.n + 1]]
        w = np.array([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv])
        ok = np.isfinite(c)
        if ok.all():  # (called every control step: the common case without masks)
            return float(w @ c)
        if w[ok].sum() > 1e-3:  # next to a blocked cell: the reachable corners only
            return float(np.dot(w[ok], c[ok]) / w[ok].sum())
        k = self.cell(xy)  # inside blocked cells: the best reachable neighbour plus the straight way to it
        if k < 0:
            return math.inf
        return float(self.cost[k] + math.hypot(*(np.asarray(xy[:2], dtype=np.float64) - self.points[k])))

    def path(self, xy, max_cells: int = 10_000) -> np.ndarray:
        """Cell centres from the robot's cell to the goal (exact goal last); empty if unreachable."""
        k = self.cell(xy)
        if k < 0:
            return np.zeros((0, 2))
        out = []
        while k >= 0 and len(out) < max_cells:
            out.append(k)
            if k == self.goal_index:
                break
            k = int(self.pred[k])
        pts = self.points[out].copy()
        if out[-1] == self.goal_index:
            pts[-1] = self.layout.goal
        return pts
