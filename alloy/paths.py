"""Where alloy's packaged Hydra configs live, from the source tree or from an installed copy."""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def config_dir() -> Path:
    """The `configs/` directory: the source tree's when running from a checkout, else the installed data package."""
    source = Path(__file__).resolve().parents[1] / "configs"
    if (source / "_base.yaml").is_file():
        return source
    installed = Path(str(importlib.resources.files("alloy._configs")))
    if (installed / "_base.yaml").is_file():
        return installed
    raise FileNotFoundError(f"alloy's configs are missing (looked in {source} and {installed}); reinstall alloy")
