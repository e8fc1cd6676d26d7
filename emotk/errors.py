"""Errors a user can cause. The CLI prints them without a traceback and exits 2."""


class EmotkError(Exception):
    """Base class: the message says what was wrong, where, and what to do."""


class DatasetError(EmotkError):
    """The raw dataset is missing, malformed or not in the expected layout."""


class WorkspaceError(EmotkError):
    """The workspace is missing a stage's output or was written by another emotk."""


class FeatureStoreError(EmotkError):
    """A feature cache is inconsistent with the request (other extractor, options, samples)."""


class SplitError(EmotkError):
    """A split file is missing or leaks a subject across folds."""


class ModelError(EmotkError):
    """Unknown model, size or configuration."""


class RunError(EmotkError):
    """A run directory or checkpoint does not fit the request."""


class DiskFullError(EmotkError):
    """No space left while writing an output; the message says what, how much, and what to free."""
