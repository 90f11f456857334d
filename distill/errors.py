"""Errors a user can cause in distillation."""


class DistillError(ValueError):
    """A user-caused distillation error; its message is one line that says what to do."""
