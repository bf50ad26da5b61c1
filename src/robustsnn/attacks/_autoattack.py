"""Shared plumbing for attacks that come from AutoAttack (the ``pyautoattack`` package).

AutoAttack's classes call ``torch.random.manual_seed`` on the global generator and
emit ``warnings`` of their own; we run them inside a forked RNG (the caller's
random state is left untouched) and keep their messages on the attack object.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["isolated", "num_classes"]


@contextmanager
def isolated(messages: list[str]) -> Iterator[None]:
    """Fork the global RNG for the block and collect warnings into ``messages``."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        text = str(w.message)
        if text not in messages:
            messages.append(text)


def num_classes(model: nn.Module, x: torch.Tensor) -> int:
    """K, from ``model.config.num_classes`` or one forward pass."""
    k = getattr(getattr(model, "config", None), "num_classes", None)
    if isinstance(k, int):
        return k
    with torch.no_grad():
        return int(model(x[:1]).shape[1])
