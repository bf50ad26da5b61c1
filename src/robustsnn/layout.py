"""Memory layout of feature maps: channels-last (NHWC) convolutions on the CPU.

oneDNN, which runs torch's CPU convolutions, computes in a channels-last (NHWC) layout; fed
torch's default NCHW tensors it reorders input, output and gradients on every call. For the
default SNN's second convolution ([T*B, 32, 14, 14] -> 64 channels, forward and backward) the
NCHW call takes about 1.15x the time of the same call on channels-last tensors
(``benchmarks/layers_speed.py``; ``benchmarks/speed.py`` prints whole steps). With channels-last on, :class:`robustsnn.layers.Conv2d` gives its
convolution channels-last input and weight, so its output is channels-last, and the layers
after it keep that layout: batch norm (:mod:`robustsnn.batchnorm`), the spiking neuron and
2x2 pooling (both in the compiled kernel) run on it without copies; ``Flatten`` returns the
usual [C, H, W] order. Shapes, indexing and values are unchanged (a tensor's layout is only
its strides); convolution sums may round differently (float32: relative ~1e-6).

Modes (:func:`set_channels_last`, :func:`channels_last`, or ``ROBUSTSNN_CHANNELS_LAST``):
``auto`` (default) turns it on for CPU tensors only (GPU libraries pick their own layouts),
``on`` everywhere, ``off`` nowhere.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager

import torch

from .switches import switched

__all__ = ["channels_last", "set_channels_last", "channels_last_mode", "wants_channels_last", "is_channels_last",
           "memory_order"]

_MODES = ("auto", "on", "off")


def _from_env() -> str:
    mode = os.environ.get("ROBUSTSNN_CHANNELS_LAST", "auto").strip().lower() or "auto"
    mode = {"1": "on", "true": "on", "0": "off", "false": "off"}.get(mode, mode)
    if mode not in _MODES:
        raise ValueError(f"ROBUSTSNN_CHANNELS_LAST={mode!r} is not one of {', '.join(_MODES)} (or 1/0)")
    return mode


_STATE = {"mode": None}


def channels_last_mode() -> str:
    """The current mode: ``auto``, ``on`` or ``off``."""
    if _STATE["mode"] is None:
        _STATE["mode"] = _from_env()
    return _STATE["mode"]


def _checked(mode: str | bool) -> str:
    if isinstance(mode, bool):
        mode = "on" if mode else "off"
    if mode not in _MODES:
        raise ValueError(f"channels-last mode must be one of {', '.join(_MODES)}, got {mode!r}")
    return mode


def set_channels_last(mode: str | bool) -> None:
    """Set the mode for the process: ``auto`` / ``on`` / ``off`` (or True / False)."""
    _STATE["mode"] = _checked(mode)


def channels_last(mode: str | bool = True) -> AbstractContextManager[None]:
    """Use the given channels-last mode inside the block (``channels_last(False)`` turns it off)."""
    channels_last_mode()  # read the environment first, so that the block restores its mode
    return switched(_STATE, "mode", _checked(mode))


def wants_channels_last(x: torch.Tensor) -> bool:
    """Whether a convolution on the 4-d ``x`` [N, C, H, W] should run channels-last now."""
    mode = channels_last_mode()
    if mode == "off" or x.dim() != 4:
        return False
    return mode == "on" or x.device.type == "cpu"


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is a 4-d channels-last tensor that is not also contiguous (NCHW)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def memory_order(x: torch.Tensor) -> tuple[int, ...] | None:
    """A permutation ``p`` with ``x.permute(p)`` contiguous and ``p[0] == 0``, or None.

    For an elementwise op along the leading (time) dimension that reads and writes raw memory:
    a channels-last [T, B, C, H, W] tensor gives (0, 1, 3, 4, 2). Contiguous tensors give the
    identity; tensors with gaps or overlaps (other than a size-1 dim) give None.
    """
    if x.is_contiguous():
        return tuple(range(x.dim()))
    if x.dim() < 2 or (x.stride(0) == 0 and x.shape[0] > 1):
        return None
    # channels-last first: a size-1 dim's stride is arbitrary, so sorting alone could miss it
    known = {4: (0, 2, 3, 1), 5: (0, 1, 3, 4, 2)}.get(x.dim())
    rest = (0, *sorted(range(1, x.dim()), key=lambda d: (-x.stride(d), d)))
    for order in (known, rest):
        if order is not None and x.permute(order).is_contiguous():
            return order
    return None
