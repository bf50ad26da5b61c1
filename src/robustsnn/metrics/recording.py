"""One hooked forward pass over a data set, leaving the model exactly as it was.

:func:`record` feeds images to a model in eval mode under ``torch.no_grad()``
with forward hooks that collect statistics (the recorders of
:mod:`robustsnn.metrics.spikes` and :mod:`robustsnn.metrics.ops`), then removes
every hook and restores the train/eval flag of every module. Parameters and
buffers are never written: batch-norm running statistics are not updated in
eval mode, and the membrane state lives only inside the forward call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import torch
from torch import nn

from ..errors import UsageError

__all__ = ["Recorder", "iter_images", "record"]


class Recorder(Protocol):
    """What :func:`record` drives: hooks on, a call per batch, hooks off."""

    def attach(self, model: nn.Module) -> list:  # pragma: no cover - protocol
        """Register hooks on ``model``; return their handles."""

    def start_batch(self, batch_size: int) -> None:  # pragma: no cover - protocol
        """Called before the forward pass of each batch."""


def _is_array_dataset(data) -> bool:
    return hasattr(data, "images") and hasattr(data, "labels") and isinstance(getattr(data, "images"), torch.Tensor)


def iter_images(data, n: int | None = None, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """Float images [B, C, H, W] in [0, 1] from any of the accepted data forms, at most ``n`` in all.

    Args:
        data: an :class:`~robustsnn.data.ArrayDataset` (uint8 pixels), a tensor
            [N, C, H, W] of pixels in [0, 1], or an iterable of batches ``(x, y)``
            or plain ``x`` tensors [B, C, H, W].
        n: stop after this many images (``None``: all of them).
        batch_size: batch size for a data set or a tensor (iterables keep their own batches).
    """
    if n is not None and n < 1:
        raise UsageError(f"n must be >= 1 images, got {n}")
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    if _is_array_dataset(data):
        images = data.images if n is None else data.images[:n]
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size]
            yield x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32)
        return
    if isinstance(data, torch.Tensor):
        if data.dim() != 4:
            raise UsageError(f"images must be a tensor [N, C, H, W], got shape {tuple(data.shape)}")
        images = data if n is None else data[:n]
        for i in range(0, images.shape[0], batch_size):
            yield images[i : i + batch_size]
        return
    if not isinstance(data, Iterable):
        raise UsageError(
            f"cannot read images from a {type(data).__name__}: give an ArrayDataset, a tensor [N, C, H, W] "
            "or an iterable of (x, y) batches"
        )
    left = n
    for batch in data:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise UsageError("each batch must be x or (x, y) with x a tensor [B, C, H, W]")
        if left is not None:
            x = x[:left]
            left -= x.shape[0]
        if x.shape[0]:
            yield x
        if left is not None and left <= 0:
            return


def record(
    model: nn.Module,
    data,
    recorders: Sequence[Recorder],
    *,
    n: int | None = None,
    batch_size: int = 256,
) -> int:
    """Run ``model`` once over ``data`` with the recorders' hooks attached; return the image count.

    The model runs in eval mode without gradients; afterwards every hook is removed and
    every module's ``training`` flag is what it was, so the model is bit-identical.
    """
    try:
        device = next(iter(model.parameters())).device
    except StopIteration:
        device = torch.device("cpu")
    flags = [(m, m.training) for m in model.modules()]
    handles: list = []
    images = 0
    try:
        for r in recorders:
            handles += r.attach(model)
        model.eval()
        with torch.no_grad():
            for x in iter_images(data, n, batch_size):
                for r in recorders:
                    r.start_batch(x.shape[0])
                model(x.to(device))
                images += x.shape[0]
    finally:
        for h in handles:
            h.remove()
        for m, training in flags:
            m.training = training
    if images == 0:
        raise UsageError("no images to record: the data set or the batch iterable is empty")
    return images
