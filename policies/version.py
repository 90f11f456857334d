"""alloy's installed version, read without importing the `alloy` package (nothing below `alloy/` imports it)."""

from __future__ import annotations


def alloy_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("alloy-robotics")
    except PackageNotFoundError:
        return "unknown"
