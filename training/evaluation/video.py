"""Videos of evaluation episodes: several episodes side by side in one mp4, encoded with imageio-ffmpeg.

Episodes end at different steps; a finished tile holds its last frame so that every tile stays visible until the
longest episode ends.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _even(frame: np.ndarray) -> np.ndarray:
    """H.264 with yuv420p needs even width and height."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))


def tile_episodes(episodes: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Frames of a grid of episodes (row-major, about square), padded to the longest episode."""
    episodes = [[np.asarray(f, dtype=np.uint8)[..., :3] for f in ep] for ep in episodes if len(ep)]
    if not episodes:
        return []
    h = max(f.shape[0] for ep in episodes for f in ep)
    w = max(f.shape[1] for ep in episodes for f in ep)
    cols = math.ceil(math.sqrt(len(episodes)))
    rows = math.ceil(len(episodes) / cols)
    length = max(len(ep) for ep in episodes)
    out = []
    for t in range(length):
        canvas = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
        for k, ep in enumerate(episodes):
            f = ep[min(t, len(ep) - 1)]
            r, c = divmod(k, cols)
            canvas[r * h : r * h + f.shape[0], c * w : c * w + f.shape[1]] = f
        out.append(_even(canvas))
    return out


def write_video(path: str | Path, episodes: list[list[np.ndarray]], fps: float = 30.0) -> Path | None:
    """Write the episodes tiled into one mp4 at `path`; None when there is no frame to write."""
    import imageio.v2 as imageio

    frames = tile_episodes(episodes)
    if not frames:
        return None
    from policies.atomic import atomic_file

    path = Path(path)
    with atomic_file(path, suffix=path.suffix) as tmp:  # ffmpeg picks the container from the extension
        writer = imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1, pixelformat="yuv420p",
                                    format="FFMPEG")
        try:
            for frame in frames:
                writer.append_data(frame)
        finally:
            writer.close()
    return path
