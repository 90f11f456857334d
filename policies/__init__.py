"""Diffusion policies: denoiser (nets/) x diffusion process (diffusion/) x action scheme (schemes/).

The names below load on first use, so that importing a light submodule (`policies.atomic`, `policies.errors`,
`policies.interface`) does not import torch: env worker processes import those.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Policy": "policies.policy",
    "PolicyLike": "policies.interface",
    "PolicySpec": "policies.config",
    "NetConfig": "policies.config",
    "DiffusionConfig": "policies.config",
    "SchemeConfig": "policies.config",
    "PolicyError": "policies.errors",
}

__all__ = ["DiffusionConfig", "NetConfig", "Policy", "PolicyError", "PolicyLike", "PolicySpec", "SchemeConfig"]

if TYPE_CHECKING:
    from policies.config import DiffusionConfig, NetConfig, PolicySpec, SchemeConfig
    from policies.errors import PolicyError
    from policies.interface import PolicyLike
    from policies.policy import Policy


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'policies' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
