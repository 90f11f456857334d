"""Diffusion policies: denoisers x diffusion processes x action schemes, behind one Policy API."""

from policies.config import DiffusionConfig, NetConfig, PolicySpec, SchemeConfig
from policies.errors import PolicyError
from policies.policy import Policy

__all__ = ["Policy", "PolicySpec", "NetConfig", "DiffusionConfig", "SchemeConfig", "PolicyError"]
