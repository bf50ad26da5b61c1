"""Stateless layers that run the same in the ANN twin and the SNN twin.

Each class subclasses its torch counterpart, so parameter names and defaults
are torch's. Given the ANN shape (e.g. [B, C, H, W]) it behaves exactly like
torch's layer; given one extra leading time dimension ([T, B, C, H, W]) it runs
on the merged [T*B, ...] view and splits the result back. Batch norm is
therefore shared over time, as in the seeds.
"""

from __future__ import annotations

import torch
from torch import nn

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
]


def _merged(layer_forward, x: torch.Tensor, ann_dims: int) -> torch.Tensor:
    """Apply ``layer_forward`` to ``x``, merging a leading time dim when ``x`` has one."""
    if x.dim() == ann_dims + 1:
        return layer_forward(x.flatten(0, 1)).unflatten(0, x.shape[:2])
    return layer_forward(x)


class Conv2d(nn.Conv2d):
    """nn.Conv2d on [B, C, H, W] or [T, B, C, H, W]."""

    def forward(self, x):
        return _merged(super().forward, x, 4)


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d on [B, C, H, W] or [T, B, C, H, W] (statistics over T*B*H*W)."""

    def forward(self, x):
        return _merged(super().forward, x, 4)


class BatchNorm1d(nn.BatchNorm1d):
    """nn.BatchNorm1d on [B, F] or [T, B, F] (statistics over T*B)."""

    def forward(self, x):
        return _merged(super().forward, x, 2)


class AvgPool2d(nn.AvgPool2d):
    """nn.AvgPool2d on [B, C, H, W] or [T, B, C, H, W]."""

    def forward(self, x):
        return _merged(super().forward, x, 4)


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
