"""Rendering works headless, and assets are found from the source tree and from an installed copy."""

import numpy as np
import pytest

import envs
from envs import assets
from envs.errors import EnvError
from envs.nav import EMBODIMENTS


@pytest.mark.parametrize("name", EMBODIMENTS)
def test_rgb_array_render(name):
    env = envs.make_env(f"alloy/Nav-{name.capitalize()}-v0", render_mode="rgb_array",
                        render_width=64, render_height=48)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8 and frame.std() > 5
    env.close()


def test_follow_camera_moves_with_the_robot():
    env = envs.make_env("alloy/Nav-Holonomic-v0", render_mode="rgb_array", render_camera="follow",
                        render_width=64, render_height=64)
    env.reset(seed=0, options={"layout": {"start": [0, 0, 0], "goal": [3.5, 3.5], "obstacles": []}})
    a = env.render().astype(float)
    for _ in range(5):
        env.step(np.array([0.0, 1.0, 0.0]))
    b = env.render().astype(float)
    assert a.shape == b.shape == (64, 64, 3)
    env.close()


def test_asset_path_from_source_tree():
    p = assets.asset_path("nav", "holonomic.xml")
    assert p.is_file() and p.parent.parent.name == "sim_assets"
    with pytest.raises(EnvError):
        assets.asset_path("nav", "no_such_robot.xml")


def test_asset_path_from_installed_data_package(tmp_path, monkeypatch):
    pkg = tmp_path / "_sim_assets" / "nav"
    pkg.mkdir(parents=True)
    (pkg / "robot.xml").write_text("<mujoco/>")
    monkeypatch.setattr(assets, "_SOURCE_ROOT", tmp_path / "missing")
    monkeypatch.setattr(envs, "__path__", list(envs.__path__) + [str(tmp_path)])
    assert assets.asset_path("nav", "robot.xml") == pkg / "robot.xml"
