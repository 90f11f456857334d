"""Test session defaults: headless rendering, no network, datasets in a throwaway directory."""

import os
import tempfile

from envs.rendering import configure_headless_gl

configure_headless_gl()  # the one rule of envs.rendering: explicit MUJOCO_GL, else a display, else EGL/OSMesa
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Tests never touch the user's dataset cache.
os.environ["ALLOY_DATA_DIR"] = os.environ.get("ALLOY_TEST_DATA_DIR") or tempfile.mkdtemp(prefix="alloy-test-data-")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def nav_base(tmp_path_factory):
    """A tiny streaming DiT trained for a few steps on 3 planner episodes of the holonomic robot (goal + lidar):
    an imitation base for residual RL, distillation and export tests. Returns its checkpoint directory."""
    from alloy import cli

    root = tmp_path_factory.mktemp("nav_base")
    assert cli.main(["collect", "suite=nav", "embodiment=holonomic", "episodes=3", "name=tinybase", "num_envs=1",
                     "overwrite=true", "progress=false", f"hydra.run.dir={root / 'collect'}"]) == 0
    assert cli.main(["train", "dataset=nav/holonomic/tinybase-v0", "policy=dit", "diffusion=edm", "scheme=streaming",
                     "policy.obs_keys=[goal,lidar]", "policy.d_model=32", "policy.n_layers=1", "policy.n_heads=2",
                     "policy.pred_horizon=8", "scheme.action_horizon=2", "trainer.max_steps=4",
                     "trainer.batch_size=8", "trainer.warmup_steps=1", "trainer.ckpt_every=4", "trainer.progress=false",
                     "device=cpu", f"hydra.run.dir={root / 'train'}"]) == 0
    return root / "train" / "checkpoints" / "last"
