"""Headless OpenGL for MuJoCo rendering: the one place that picks `MUJOCO_GL`, and how rendering workers start.

The rule (`headless_gl_backend`), used by `envs/__init__.py`, `envs.nav`, `envs.vector` and the tests (the
Makefile's shell test agrees with it):
1. an explicit, non-empty `MUJOCO_GL` wins, whatever it says;
2. with a display (`DISPLAY` set), or on macOS / Windows, nothing is chosen: MuJoCo's default (GLFW) is kept;
3. otherwise EGL where an NVIDIA driver is present (the kernel driver is loaded, `/proc/driver/nvidia/version`,
   and a GPU device node `/dev/nvidia<N>` is visible), else OSMesa (software rendering on the CPU).

MuJoCo reads `MUJOCO_GL` once, when it is first imported, so `configure_headless_gl` runs before that (at
`import envs`); worker processes inherit the variable.

Worker processes that render are never started by `fork` (`worker_start_method`): a process that has rendered with
OSMesa holds llvmpipe's rasterizer threads, a forked child inherits llvmpipe's state without those threads, and
its first GL call waits forever for them (the hang of `alloy eval ... video=true` on its second env id). EGL
drivers are not fork-safe either. Such workers start from the `forkserver` (a clean process that never touched
GL), or by `spawn` where there is no forkserver.
"""

from __future__ import annotations

import glob
import multiprocessing
import os
import sys

# What the forkserver imports once, so that each worker it forks starts with the env code already loaded.
_FORKSERVER_PRELOAD = ("__main__", "envs.vector", "envs.grouped_vector")


def nvidia_driver_present() -> bool:
    """The NVIDIA kernel driver is loaded and at least one of its GPUs is visible to this process."""
    return os.path.exists("/proc/driver/nvidia/version") and bool(glob.glob("/dev/nvidia[0-9]*"))


def headless_gl_backend() -> str | None:
    """The `MUJOCO_GL` value rendering should use here (see the module docstring); None keeps MuJoCo's default."""
    explicit = os.environ.get("MUJOCO_GL", "").strip()
    if explicit:
        return explicit.lower()
    if os.environ.get("DISPLAY") or sys.platform in ("darwin", "win32"):
        return None
    return "egl" if nvidia_driver_present() else "osmesa"


def configure_headless_gl() -> str | None:
    """Set `MUJOCO_GL` (and PyOpenGL's platform) to `headless_gl_backend()` where unset; returns the backend.

    Call it before mujoco is imported for this process to use it; setting it later still reaches the worker
    processes started afterwards.
    """
    backend = headless_gl_backend()
    if backend is None:
        return None
    if not os.environ.get("MUJOCO_GL", "").strip():
        os.environ["MUJOCO_GL"] = backend
    if backend in ("egl", "osmesa"):
        os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    return backend


def worker_start_method(context: str | None, renders: bool) -> str | None:
    """The multiprocessing start method for vector-env workers: `context` when given; for workers that render,
    `forkserver` (or `spawn`) instead of the platform default, which may be `fork` (see the module docstring)."""
    if context is not None or not renders:
        return context
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        _preload_forkserver()
        return "forkserver"
    return "spawn"


def _preload_forkserver() -> None:
    from multiprocessing import forkserver

    server = forkserver._forkserver
    if getattr(server, "_forkserver_pid", None) is None and list(getattr(server, "_preload_modules", ())) == ["__main__"]:
        multiprocessing.get_context("forkserver").set_forkserver_preload(list(_FORKSERVER_PRELOAD))
