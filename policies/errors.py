"""The one error class for mistakes a user can make with a policy (shapes, NaN, foreign checkpoints)."""


class PolicyError(ValueError):
    """A user-caused policy error; its message is one line that says what to do."""
