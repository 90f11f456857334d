"""Pick a headless OpenGL backend for MuJoCo rendering before mujoco is first imported.

MuJoCo reads MUJOCO_GL once, at import. Without a display, EGL is used where an NVIDIA device is
present and OSMesa (software, CPU) otherwise. A value the user already set is left alone.
"""

from __future__ import annotations

import os
import sys


def configure_headless_gl() -> None:
    if "MUJOCO_GL" in os.environ or "mujoco" in sys.modules:
        return
    if os.environ.get("DISPLAY") or sys.platform in ("darwin", "win32"):
        return
    os.environ["MUJOCO_GL"] = "egl" if os.path.exists("/dev/nvidia0") else "osmesa"
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
