"""Training-mode batch norm on the CPU with two cheap reductions instead of torch's Welford loop.

torch's CPU ``batch_norm`` in training computes each channel's mean and variance with a
Welford recursion over the [N, H, W] values: on one thread it runs at about a fifth of the
memory bandwidth (6.3 ms for a [256, 64, 14, 14] float32 tensor, whose copy takes 0.6 ms),
and at T = 4 the SNN's second batch norm sees T * B images per step. Here the forward is
three passes over x in the compiled kernel (``bn_forward`` in ``kernels/lif.cpp``): the mean,
the biased variance as the sum of squares of the centred values (sums in float64, added in
a fixed block order), and y = bias + (x - mean) * invstd * weight, on NCHW or channels-last
x as it lies (:mod:`robustsnn.layout`). Without the kernel the same statistics take torch ops
(mean from row sums, ``torch.linalg.vecdot`` of the centred values, one ``addcmul``).
The backward pass is torch's own (``aten::native_batch_norm_backward`` with the saved mean and
inverse std), so gradients follow the same formula as ``nn.BatchNorm2d``'s.

Values equal torch's to rounding (float32: relative 1e-6; tested), not bit for bit.
:func:`batch_norm_forward` is a drop-in for ``nn.BatchNorm*d.forward`` that takes this path for
CPU float32/float64 inputs in training (or without running statistics) and torch's otherwise
(GPUs, evaluation with running statistics, autocast, one value per channel, ``fast_batchnorm(False)``).
On channels-last maps a block's 64 rows are summed per channel in x's dtype (vector-wide), then
added to the float64 total in block order; torch's channels-last forward is nearly as fast but its
sums depend on the thread count, which would make training at 1 and 2 threads (or on 1 and 2
ranks) part ways at the first spike that flips.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import nn

from . import kernels
from .layout import is_channels_last
from .switches import switched

__all__ = ["batch_norm_train", "batch_norm_forward", "fast_batchnorm"]

_FAST = {"on": True}


def fast_batchnorm(enabled: bool = True) -> AbstractContextManager[None]:
    """Use the three-pass CPU batch norm (True) or torch's (False) inside the block."""
    return switched(_FAST, "on", bool(enabled))


def _kernel_forward(x, weight, bias, eps):
    """(y, mean64, var64, mean, invstd) from the compiled kernel's three passes, or None without the kernel."""
    mod = kernels.get() if kernels.supports(x) else None
    if mod is None or any(p is not None and p.dtype != x.dtype for p in (weight, bias)):
        return None
    c = x.shape[1]
    inner = 1 if is_channels_last(x) else x.numel() // max(x.shape[0] * c, 1)
    w, b = (None if p is None else p.detach().contiguous() for p in (weight, bias))
    return tuple(mod.bn_forward(x, w, b, float(eps), c, inner))


def _torch_forward(x, weight, bias, eps):
    """The same statistics and output from torch ops: x as rows [N, L, C] (channels-last) or [N, C, L]."""
    c, last = x.shape[1], is_channels_last(x)
    if last:
        x3, along, shape = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, c), 1, (1, 1, c)
    else:
        x3, along, shape = x.reshape(x.shape[0], c, -1), -1, (1, c, 1)
    count = x.numel() // c
    mean64 = x3.sum(along).sum(0, dtype=torch.float64) / count
    mean = mean64.to(x.dtype)
    xc = x3 - mean.view(shape)
    var64 = torch.linalg.vecdot(xc, xc, dim=along).sum(0, dtype=torch.float64) / count
    invstd = torch.rsqrt(var64 + eps).to(x.dtype)
    scale = invstd if weight is None else invstd * weight
    y = xc.mul_(scale.view(shape)) if bias is None else torch.addcmul(bias.view(shape), xc, scale.view(shape))
    y = y.view(x.shape[0], x.shape[2], x.shape[3], c).permute(0, 3, 1, 2) if last else y.view(x.shape)
    return y, mean64, var64, mean, invstd


class _TrainBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        y, mean64, var64, mean, invstd = _kernel_forward(x, weight, bias, eps) or _torch_forward(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps, ctx.layout = eps, torch.channels_last if is_channels_last(x) else torch.contiguous_format
        ctx.mark_non_differentiable(mean64, var64)
        return y, mean64, var64

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        x, weight, mean, invstd = ctx.saved_tensors
        want = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1],
                ctx.needs_input_grad[2]]
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            grad_y.contiguous(memory_format=ctx.layout), x, weight, None, None, mean, invstd, True, ctx.eps, want)
        return (gx if want[0] else None), (gw if want[1] else None), (gb if want[2] else None), None


def batch_norm_train(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                     eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch norm with the statistics of ``x`` itself.

    Args:
        x: [N, C, ...] float32 or float64 (channels-last [N, C, H, W] is read as it lies, and
            ``y`` is channels-last too).
        weight, bias: [C] affine parameters or None.
        eps: added to the variance.

    Returns:
        (y [N, C, ...] like x, mean [C] float64, biased variance [C] float64); the
        statistics carry no gradient.
    """
    x = x if is_channels_last(x) else x.contiguous()
    return _TrainBatchNorm.apply(x, weight, bias, float(eps))


def _eligible(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> bool:
    batch_stats = bn.training or bn.running_mean is None
    return (_FAST["on"] and batch_stats and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and x.dim() >= 2 and x.numel() > x.shape[1] and not torch.is_autocast_enabled("cpu"))


def batch_norm_forward(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``bn``'s forward on ``x`` [N, C, ...] (the module's settings, running statistics and counter
    updated as torch does), through :func:`batch_norm_train` where eligible (module docstring)."""
    if not _eligible(bn, x):
        return nn.modules.batchnorm._BatchNorm.forward(bn, x)
    bn._check_input_dim(x)
    y, mean, var = batch_norm_train(x, bn.weight, bn.bias, bn.eps)
    if bn.training and bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
            factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            count = x.numel() // x.shape[1]
            bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
            unbiased = var * (count / (count - 1))
            bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var.dtype), alpha=factor)
    return y
