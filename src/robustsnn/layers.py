"""Stateless layers that run the same in the ANN twin and the SNN twin.

Each class subclasses its torch counterpart, so parameter names and defaults
are torch's. Given the ANN shape (e.g. [B, C, H, W]) it behaves exactly like
torch's layer; given one extra leading time dimension ([T, B, C, H, W]) it runs
on the merged [T*B, ...] view and splits the result back. Batch norm is
therefore shared over time, as in the seeds.

Compute once, broadcast over time: with direct encoding the input is the same image
at every step, a [T, B, ...] view with time stride 0. A layer given such an input
runs once on [B, ...] and returns its output broadcast over T (again stride 0), so
the first convolution and batch norm (and the first neuron's input) cost one step
instead of T. Outputs are the same as running on the T copies: batch norm in
training normalises with the statistics of the B distinct samples (equal to those of
their T copies) and updates its running variance with the unbiased correction of all
T*B*H*W values, as torch would. :func:`time_broadcast` turns this off (for benchmarks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .timerepeat import is_time_broadcast, repeat_over_time, repeated_source, time_broadcast
from .batchnorm import batch_norm_forward

__all__ = [
    "Conv2d",
    "Linear",
    "BatchNorm2d",
    "BatchNorm1d",
    "AvgPool2d",
    "MaxPool2d",
    "AdaptiveAvgPool2d",
    "Flatten",
    "Normalize",
    "Dropout",
    "time_broadcast",
    "is_time_broadcast",
    "repeated_source",
]

def _broadcast(y: torch.Tensor, T: int) -> torch.Tensor:
    return repeat_over_time(y, T)


def _once(x: torch.Tensor) -> torch.Tensor:
    """The [B, ...] tensor a time-repeated ``x`` [T, B, ...] repeats: its recorded source, else ``x[0]``.

    Taking the source keeps ``x[0]``'s backward out of the graph (a zero [T, B, ...] tensor with
    the gradient copied into step 0, then summed over T by ``expand``'s backward).
    """
    src = repeated_source(x)
    return src if src is not None else x[0]


def _merged(layer_forward, x: torch.Tensor, ann_dims: int) -> torch.Tensor:
    """Apply ``layer_forward`` to ``x``, merging a leading time dim when ``x`` has one.

    A time-repeated ``x`` (stride 0 along T) is computed once and broadcast back.
    """
    if is_time_broadcast(x, ann_dims):
        return _broadcast(layer_forward(_once(x)), x.shape[0])
    if x.dim() == ann_dims + 1:
        return layer_forward(x.flatten(0, 1)).unflatten(0, x.shape[:2])
    return layer_forward(x)


def _batchnorm_repeated(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm of T identical copies of ``x[0]`` ([T, B, C, ...], stride 0 along T), computed once.

    Normalising with batch statistics gives the same values over B as over T*B identical
    samples; only the running variance's unbiased factor n/(n-1) differs, so when the running
    statistics are updated, n counts all T*B*H*W values, as torch's update on the copies does.
    """
    T, x0 = x.shape[0], _once(x)
    n0 = x0.numel() // x0.shape[1]
    if not (bn.training and bn.track_running_stats and bn.running_var is not None):
        return _broadcast(batch_norm_forward(bn, x0), T)
    if n0 < 2:  # torch's unbiased update over B*H*W = 1 value is undefined: run on the copies
        return batch_norm_forward(bn, x.flatten(0, 1)).unflatten(0, x.shape[:2])
    old_var = bn.running_var.clone()
    y0 = batch_norm_forward(bn, x0)  # updates with the factor n0/(n0-1)
    with torch.no_grad():
        factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        n = T * n0
        # running_var = (1-f) old + f * var_b * n0/(n0-1): rescale the new term to n/(n-1)
        kept = old_var * (1 - factor)  # (.data: batch_norm's autograd node holds running_var)
        bn.running_var.data.copy_(kept + (bn.running_var - kept) * ((n / (n - 1)) / (n0 / (n0 - 1))))
    return _broadcast(y0, T)


class Conv2d(nn.Conv2d):
    """nn.Conv2d on [B, C, H, W] or [T, B, C, H, W]."""

    def forward(self, x):
        return _merged(super().forward, x, 4)


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d on [B, C, H, W] or [T, B, C, H, W] (statistics over T*B*H*W)."""

    def forward(self, x):
        if is_time_broadcast(x, 4):
            return _batchnorm_repeated(self, x)
        return _merged(lambda v: batch_norm_forward(self, v), x, 4)


class BatchNorm1d(nn.BatchNorm1d):
    """nn.BatchNorm1d on [B, F] or [T, B, F] (statistics over T*B)."""

    def forward(self, x):
        if is_time_broadcast(x, 2):
            return _batchnorm_repeated(self, x)
        return _merged(lambda v: batch_norm_forward(self, v), x, 2)


class _AvgPool2(torch.autograd.Function):
    """2x2 / stride-2 average pooling in the compiled kernel (avg_pool2d's values bit for bit)."""

    @staticmethod
    def forward(ctx, x, mod):
        ctx.hw, ctx.mod = tuple(x.shape[-2:]), mod
        return mod.pool2_forward(x.contiguous())

    @staticmethod
    def backward(ctx, grad):
        return ctx.mod.pool2_backward(grad.contiguous(), *ctx.hw), None


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class AvgPool2d(nn.AvgPool2d):
    """nn.AvgPool2d on [B, C, H, W] or [T, B, C, H, W] (2x2 / stride 2 in the compiled kernel on the CPU)."""

    def _pool(self, x):
        plain = (_pair(self.kernel_size) == (2, 2) and _pair(self.stride) == (2, 2) and _pair(self.padding) == (0, 0)
                 and not self.ceil_mode and self.divisor_override is None)
        mod = kernels.get() if plain and kernels.supports(x) else None
        if mod is None:
            return super().forward(x)
        return _AvgPool2.apply(x, mod)

    def forward(self, x):
        return _merged(self._pool, x, 4)


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d on [B, C, H, W] or [T, B, C, H, W]."""

    def forward(self, x):
        return _merged(super().forward, x, 4)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """nn.AdaptiveAvgPool2d on [B, C, H, W] or [T, B, C, H, W]."""

    def forward(self, x):
        return _merged(super().forward, x, 4)


class Linear(nn.Linear):
    """nn.Linear; works on any leading dims ([B, F] or [T, B, F]) as torch's does."""

    def forward(self, x):
        if is_time_broadcast(x, 2):
            return _broadcast(super().forward(_once(x)), x.shape[0])
        return super().forward(x)


class Dropout(nn.Dropout):
    """nn.Dropout; with a time dim the mask is drawn per step."""


class Flatten(nn.Module):
    """Flatten the last three dims: [..., C, H, W] -> [..., C*H*W]."""

    def forward(self, x):
        return x.flatten(-3)


class Normalize(nn.Module):
    """(x - mean) / std per channel; the model's first layer, so inputs stay in [0, 1].

    Args:
        mean, std: per-channel statistics of the data set (sequences of length C).
    """

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std
