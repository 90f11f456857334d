"""Gymnasium environments of alloy: the cross-embodiment navigation suite and Meta-World v3.

Importing the package registers every alloy env with Gymnasium.
"""

import os


def _default_gl_backend() -> str:
    """Headless MuJoCo rendering: EGL where an NVIDIA driver is loaded, OSMesa (software) elsewhere."""
    return "egl" if os.path.exists("/proc/driver/nvidia/version") else "osmesa"


if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = _default_gl_backend()

from envs.errors import EnvError  # noqa: E402
from envs.registry import list_env_ids, make_env  # noqa: E402
from envs import metaworld as _metaworld  # noqa: E402,F401  registers metaworld/<task> with Gymnasium

__all__ = ["EnvError", "list_env_ids", "make_env"]
