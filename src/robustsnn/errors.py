"""Exceptions whose message is one line a user can act on (the CLI prints only that line)."""

__all__ = ["RobustSNNError", "UsageError", "CheckpointError"]


class RobustSNNError(Exception):
    """Base class: the message says what is wrong and what to do."""


class UsageError(RobustSNNError, ValueError):
    """A value out of range, an unknown name, an inconsistent option."""


class CheckpointError(RobustSNNError):
    """A checkpoint that is missing, unreadable, foreign or inconsistent."""
