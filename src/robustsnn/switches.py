"""Process-wide on/off switches of the fast paths, each settable for a block (benchmarks, tests)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["switched"]


@contextmanager
def switched(state: dict, key: str, value: Any) -> Iterator[None]:
    """Set ``state[key] = value`` inside the block and restore the previous value after it (also on error)."""
    saved = state[key]
    state[key] = value
    try:
        yield
    finally:
        state[key] = saved
