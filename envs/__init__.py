"""Gymnasium environments of alloy: the cross-embodiment navigation suite and Meta-World v3.

Importing the package registers every alloy env with Gymnasium. It first picks the headless OpenGL backend
(`MUJOCO_GL`, see `envs.rendering`), before anything imports mujoco.
"""

from envs.rendering import configure_headless_gl

configure_headless_gl()

from envs import metaworld as _metaworld  # noqa: E402,F401  registers metaworld/<task> with Gymnasium
from envs.errors import EnvError, WorkerTimeout  # noqa: E402
from envs.registry import has_teacher, is_gymnasium_id, list_env_ids, make_env  # noqa: E402

__all__ = ["EnvError", "WorkerTimeout", "has_teacher", "is_gymnasium_id", "list_env_ids", "make_env"]
