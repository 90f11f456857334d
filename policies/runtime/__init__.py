"""The deployment runtime of exported policies: NumPy and ONNX Runtime only (no torch, no gymnasium).

    from policies.runtime import Runtime
    policy = Runtime("artifact_dir", seed=0)
    policy.reset()
    actions = policy.act(obs)        # {key: (B, d)} -> (B, action_dim), like Policy.act
"""

from policies.runtime.artifact import read_artifact
from policies.runtime.runtime import Runtime, is_artifact

__all__ = ["Runtime", "is_artifact", "read_artifact"]
