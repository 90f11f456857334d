"""The outcome of one episode: what the rollout engine returns and reports are made of."""

from __future__ import annotations

from dataclasses import asdict, dataclass

FAILURE_REASONS = ("collision", "timeout", "instability", "exception", "other")


@dataclass
class EpisodeResult:
    """One finished episode. `reason` is "" for a success, else one of FAILURE_REASONS."""

    env_id: str
    index: int
    seed: int
    success: bool
    reason: str
    ret: float
    length: int
    steps_to_success: int | None = None
    time_to_success: float | None = None
    error: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["return"] = d.pop("ret")
        return d
