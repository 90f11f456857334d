"""Find MJCF files whether alloy runs from its source tree or from an installed copy.

In the source tree the assets live in `sim_assets/` next to the packages; an installed distribution
ships them as the data package `envs._sim_assets`.
"""

from __future__ import annotations

import importlib.resources
import pathlib

from envs.errors import EnvError

_SOURCE_ROOT = pathlib.Path(__file__).resolve().parents[1] / "sim_assets"
_DATA_PACKAGE = "envs._sim_assets"


def assets_root() -> pathlib.Path:
    """The folder holding the MJCF files (source tree first, then the installed data package)."""
    if _SOURCE_ROOT.is_dir():
        return _SOURCE_ROOT
    try:
        root = importlib.resources.files(_DATA_PACKAGE)
    except ModuleNotFoundError:
        raise EnvError(
            f"simulation assets not found: neither {_SOURCE_ROOT} nor the package {_DATA_PACKAGE} "
            f"exists; reinstall alloy"
        ) from None
    return pathlib.Path(str(root))


def asset_path(*parts: str) -> pathlib.Path:
    """Absolute path of a file under the assets folder, e.g. `asset_path("nav", "holonomic.xml")`."""
    path = assets_root().joinpath(*parts)
    if not path.is_file():
        raise EnvError(f"simulation asset {'/'.join(parts)!r} not found under {assets_root()}; reinstall alloy")
    return path
