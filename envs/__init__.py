"""Gymnasium environments of alloy: the cross-embodiment navigation suite and Meta-World v3.

Importing the package registers every alloy env with Gymnasium.
"""

from envs.errors import EnvError
from envs.registry import list_env_ids, make_env

__all__ = ["EnvError", "list_env_ids", "make_env"]
