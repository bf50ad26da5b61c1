"""Tensors repeated over time steps: the compute-once path's marker.

With direct encoding an SNN's first layers see the same [B, ...] tensor at every one of T
steps. :func:`repeat_over_time` returns it as a [T, B, ...] view (time stride 0, no copy) that
remembers its source; layers then run once on the source (``robustsnn.layers``), and a spiking
neuron fed such a current sums its gradient over the steps in one pass (``robustsnn.neurons``)
instead of autograd writing T gradients and adding them up. :func:`time_broadcast` ``(False)``
turns the path off (layers then run on the T copies).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from .switches import switched

__all__ = ["time_broadcast", "is_time_broadcast", "repeat_over_time", "repeated_source"]

_SHARE = {"on": True}


def time_broadcast(enabled: bool = True) -> AbstractContextManager[None]:
    """Turn the compute-once path for time-repeated inputs on or off inside the block."""
    return switched(_SHARE, "on", bool(enabled))


def is_time_broadcast(x: torch.Tensor, ann_dims: int) -> bool:
    """Whether ``x`` is [T, B, ...] (T > 1) repeating one [B, ...] tensor (time stride 0) and sharing is on."""
    return _SHARE["on"] and x.dim() == ann_dims + 1 and x.shape[0] > 1 and x.stride(0) == 0


def repeat_over_time(y: torch.Tensor, T: int) -> torch.Tensor:
    """``y`` [B, ...] as [T, B, ...] (a stride-0 view, no copy) that records ``y`` as its source."""
    out = y.unsqueeze(0).expand(T, *y.shape)
    out._rsnn_repeats = y
    return out


def repeated_source(x: torch.Tensor) -> torch.Tensor | None:
    """The [B, ...] tensor that ``x`` [T, B, ...] repeats at every step (:func:`repeat_over_time`),
    or None (another tensor, or the compute-once path is off)."""
    src = getattr(x, "_rsnn_repeats", None)
    if src is None or not _SHARE["on"] or x.dim() < 2 or x.stride(0) != 0 or tuple(x.shape[1:]) != tuple(src.shape):
        return None
    return src
