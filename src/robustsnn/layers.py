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

from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _torch_module

from . import kernels
from .timerepeat import is_time_broadcast, repeat_over_time, repeated_source, time_broadcast
from .batchnorm import batch_norm_forward
from .layout import is_channels_last, wants_channels_last
from .neurons import SpikingNeuron
from .switches import switched

__all__ = [
    "Sequential",
    "fused_pooling",
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
    """nn.Conv2d on [B, C, H, W] or [T, B, C, H, W]; channels-last where :mod:`robustsnn.layout` says so."""

    def _conv(self, x):
        if not wants_channels_last(x):
            return super().forward(x)
        w = self.weight
        if w.shape[1] == 1:  # one input channel: NCHW strides pass for NHWC, so give w's C a stride of 1
            w = w.reshape(w.shape[0], *w.shape[2:], 1).permute(0, 3, 1, 2)
        else:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._conv_forward(x, w, self.bias)

    def forward(self, x):
        return _merged(self._conv, x, 4)


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
        ctx.last = is_channels_last(x)
        if ctx.last:  # channels-last [N, C, H, W]: pool the [N, H, W, C] memory, return channels-last
            return mod.pool2_forward_nhwc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return mod.pool2_forward(x.contiguous())

    @staticmethod
    def backward(ctx, grad):
        if ctx.last:
            g = grad.permute(0, 2, 3, 1).contiguous()
            return ctx.mod.pool2_backward_nhwc(g, *ctx.hw).permute(0, 3, 1, 2), None
        return ctx.mod.pool2_backward(grad.contiguous(), *ctx.hw), None


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class AvgPool2d(nn.AvgPool2d):
    """nn.AvgPool2d on [B, C, H, W] or [T, B, C, H, W] (2x2 / stride 2 in the compiled kernel on the CPU)."""

    def is_pool2(self) -> bool:
        """Whether this is plain 2x2 / stride-2 average pooling (no padding, floor, divisor 4)."""
        return (_pair(self.kernel_size) == (2, 2) and _pair(self.stride) == (2, 2) and _pair(self.padding) == (0, 0)
                and not self.ceil_mode and self.divisor_override is None)

    def _pool(self, x):
        mod = kernels.get() if self.is_pool2() and kernels.supports(x) else None
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

    def flattened(self, x: torch.Tensor) -> torch.Tensor | None:
        """``self(x.flatten(-3))`` for a channels-last ``x`` ([..., C, H, W] stored as [..., H, W, C]),
        without the copy the flatten would make: x is read as the [..., H*W*C] view of its memory
        and the weight's columns are permuted from (C, H, W) to (H, W, C) order instead (a copy of
        the weight, out x C*H*W, instead of the map). Same values and gradients up to summation
        order. None where x is not stored that way (use the two modules then)."""
        if x.dim() < 4 or x.is_contiguous():
            return None
        hwc = x.movedim(-3, -1)
        if not hwc.is_contiguous():
            return None
        c, h, w = x.shape[-3:]
        weight = self.weight
        if weight.shape[1] != c * h * w:
            return None  # let the plain modules raise their shape error
        weight = weight.view(-1, c, h, w).permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
        return F.linear(hwc.flatten(-3), weight, self.bias)


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


_FUSE = {"on": True}


def fused_pooling(enabled: bool = True) -> AbstractContextManager[None]:
    """Run a spiking neuron and the 2x2 pooling after it as one kernel call (:class:`Sequential`),
    or as two modules (False), inside the block."""
    return switched(_FUSE, "on", bool(enabled))


def _hooked(module: nn.Module) -> bool:
    """Whether ``module`` (or every module, globally) has forward or backward hooks."""
    M = _torch_module
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks or M._global_forward_hooks or M._global_forward_pre_hooks
                or M._global_backward_hooks or M._global_backward_pre_hooks)


class Sequential(nn.Sequential):
    """nn.Sequential that runs a spiking neuron followed by ``AvgPool2d(2)`` as one kernel call
    (and ``Flatten`` then ``Linear`` on a channels-last map without copying it, see :func:`_fused_pair`).

    The pair's values and gradients are those of running the two modules
    (:meth:`robustsnn.neurons.SpikingNeuron.pooled`); the spikes themselves are never written
    out. Where the fused path does not apply, or either module has hooks (spike counting,
    threshold balancing, the MPPD regulariser record what the neuron sees and emits), the
    modules run one after the other. Same children and state-dict keys as nn.Sequential.
    """

    def forward(self, x):
        mods = list(self)
        i = 0
        while i < len(mods):
            y = _fused_pair(mods[i], mods[i + 1], x) if i + 1 < len(mods) else None
            if y is not None:
                x, i = y, i + 2
            else:
                x, i = mods[i](x), i + 1
        return x


def _fused_pair(first: nn.Module, second: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``second(first(x))`` in one step where a fusion applies, else None: a spiking neuron and
    ``AvgPool2d(2)`` (one kernel call, :func:`fused_pooling`), or ``Flatten`` and ``Linear`` on a
    channels-last map (no copy of the map, :meth:`Linear.flattened`). Never with hooks on either."""
    if _hooked(first) or _hooked(second):
        return None
    if isinstance(first, SpikingNeuron) and isinstance(second, AvgPool2d):
        return first.pooled(x) if _FUSE["on"] and second.is_pool2() else None
    if type(first) is Flatten and type(second).forward is Linear.forward:
        return second.flattened(x)
    return None
