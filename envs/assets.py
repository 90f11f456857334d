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


def _installed(*parts: str):
    """The file under the installed data package (a namespace package works too), or None."""
    try:
        node = importlib.resources.files(_DATA_PACKAGE)
    except ModuleNotFoundError:
        return None
    for part in parts:
        node = node.joinpath(part)
    return node


def asset_path(*parts: str) -> pathlib.Path:
    """Absolute path of a file under the assets folder, e.g. `asset_path("nav", "holonomic.xml")`."""
    path = _SOURCE_ROOT.joinpath(*parts)
    if path.is_file():
        return path
    node = _installed(*parts)
    if node is not None and node.is_file():
        return pathlib.Path(str(node))
    raise EnvError(
        f"simulation asset {'/'.join(parts)!r} not found in {_SOURCE_ROOT} nor in the package "
        f"{_DATA_PACKAGE}; reinstall alloy"
    )
