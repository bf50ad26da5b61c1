"""Exceptions whose message is one line a user can act on (the CLI prints only that line)."""

__all__ = ["RobustSNNError", "UsageError", "CheckpointError"]


class RobustSNNError(Exception):
    """Base class: the message says what is wrong and what to do."""


class UsageError(RobustSNNError, ValueError):
    """A value out of range, an unknown name, an inconsistent option."""


class CheckpointError(RobustSNNError):
    """A checkpoint that is missing, unreadable, foreign or inconsistent."""


def refuse_unknown_fields(cls, d: dict, what: str) -> None:
    """Raise UsageError naming the keys of ``d`` that are not fields of dataclass ``cls``.

    Args:
        cls: a dataclass type.
        d: the settings to check (e.g. read from a config file or a checkpoint).
        what: how to call them in the message, e.g. ``"pipeline option"``.
    """
    from dataclasses import fields

    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise UsageError(f"unknown {what}(s): {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
