"""Training objectives: each maps (model, x, y) to a loss for one batch.

An objective returns ``(loss, logits)`` where ``logits`` are the model's
predictions on the clean batch (used for the running accuracy). Robust
objectives (noise, adversarial, TRADES, MART, MPPD) register here too.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError

__all__ = ["Objective", "register_objective", "make_objective", "available_objectives", "natural"]


class Objective(Protocol):
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ...


_OBJECTIVES: dict[str, Callable[..., Objective]] = {}


def register_objective(name: str):
    """Decorator: register a factory ``fn(**params) -> Objective`` under ``name``."""

    def deco(fn):
        _OBJECTIVES[name] = fn
        return fn

    return deco


def available_objectives() -> list[str]:
    """Names of the registered objectives."""
    return sorted(_OBJECTIVES)


def make_objective(name: str, **params) -> Objective:
    """Build the objective ``name`` with its parameters (e.g. eps, beta, sigma)."""
    if name not in _OBJECTIVES:
        raise UsageError(f"unknown objective {name!r}; choose one of {', '.join(available_objectives())}")
    try:
        return _OBJECTIVES[name](**params)
    except TypeError as e:
        raise UsageError(f"objective {name!r}: {e}") from None


@register_objective("natural")
def natural() -> Objective:
    """Cross-entropy on clean images: CE(f(x), y)."""

    def objective(model, x, y):
        logits = model(x)
        return F.cross_entropy(logits, y), logits

    return objective
