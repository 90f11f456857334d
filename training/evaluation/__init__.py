"""Rollout evaluation in simulation: success with confidence intervals, failure reasons, latency, videos.

`evaluate(policy, env_ids, episodes, num_envs, seed, ...)` is the one entry point used by `alloy eval`, periodic
evaluation during training, residual RL, distillation and the pipeline. The report schema is documented in
`training.evaluation.report` and docs/report_schema.md. `load_policy` turns a spec into a policy through one registry
that any package extends (`register_checkpoint_kind`, `register_loader`).
"""

from training.evaluation.metrics import EpisodeResult, summarize, wilson_interval
from training.evaluation.policy_loader import (
    check_policy_matches_env,
    load_policy,
    register_checkpoint_kind,
    register_loader,
)
from training.evaluation.rollout import episode_seed, evaluate
from training.evaluation.teacher import TeacherPolicy

__all__ = [
    "EpisodeResult",
    "TeacherPolicy",
    "check_policy_matches_env",
    "episode_seed",
    "evaluate",
    "load_policy",
    "register_checkpoint_kind",
    "register_loader",
    "summarize",
    "wilson_interval",
]
