"""Optional bf16 autocast for training and evaluation (off by default: ``fp32``).

``with autocast("bf16", device):`` runs convolutions and matrix products in bfloat16 on the
CPU or a GPU (torch.autocast); spiking neurons still integrate their membrane potential in
float32 (a bf16 membrane would lose the small leak steps) and return exact 0/1 spikes.
Attack budgets, projections and losses stay in float32. ``benchmarks/speed.py`` measures
its speed and its agreement with fp32 (clean predictions, PGD verdicts).
"""

from __future__ import annotations

import contextlib

import torch

from .errors import UsageError

__all__ = ["PRECISIONS", "check_precision", "autocast"]

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    """Canonical precision name (``fp32`` or ``bf16``); a clear error otherwise."""
    p = str(precision).strip().lower().replace("float32", "fp32").replace("bfloat16", "bf16")
    if p not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return p


def autocast(precision: str = "fp32", device: "str | torch.device" = "cpu"):
    """Context manager: bf16 autocast on ``device``'s type for ``"bf16"``, nothing for ``"fp32"``."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
