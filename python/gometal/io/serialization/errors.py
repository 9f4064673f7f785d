"""The one exception gometal's loaders raise for a file they cannot use."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A file is not a valid gometal model or checkpoint, or does not fit the model."""
