"""Errors a user can cause in training, data loading and evaluation."""


class TrainingError(ValueError):
    """A user-caused training/evaluation error; its message is one line that says what to do."""


class DatasetError(TrainingError):
    """A missing, corrupt or mismatching dataset."""
