"""Test session defaults: headless rendering, no network, datasets in a throwaway directory."""

import os
import tempfile

from envs.rendering import configure_headless_gl  # noqa: E402  (`import envs` already applies the same rule)

configure_headless_gl()  # the one rule of envs.rendering: explicit MUJOCO_GL, else a display, else EGL/OSMesa
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tests never touch the user's dataset cache.
os.environ["ALLOY_DATA_DIR"] = os.environ.get("ALLOY_TEST_DATA_DIR") or tempfile.mkdtemp(prefix="alloy-test-data-")
