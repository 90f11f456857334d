"""The one error class for mistakes a user can make with an environment (bad id, action, parameters)."""


class EnvError(ValueError):
    """A user-caused environment error; its message is one line that says what to do."""
