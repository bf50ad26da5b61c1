"""Small CNN sized for Fashion-MNIST / MNIST on a CPU (the default model).

conv(C->32, 3x3) - BN - act - avgpool2 - conv(32->64, 3x3) - BN - act - avgpool2
- flatten - fc(64*(H/4)^2 -> 128) - act - fc(128 -> K). The last layer does not spike.
"""

from __future__ import annotations

from torch import nn

from .. import layers as L
from .base import ActivationFactory, ModelConfig, scaled_channels
from .registry import register



@register("cnn")
def small_cnn(config: ModelConfig, act: ActivationFactory) -> nn.Module:
    """Body of the small CNN; input [B, C, H, W] or [T, B, C, H, W], H divisible by 4."""
    c1, c2, h = scaled_channels(config, 32), scaled_channels(config, 64), scaled_channels(config, 128)
    side = config.image_size // 4
    return L.Sequential(
        L.Conv2d(config.in_channels, c1, 3, padding=1, bias=False),
        L.BatchNorm2d(c1),
        act(),
        L.AvgPool2d(2),
        L.Conv2d(c1, c2, 3, padding=1, bias=False),
        L.BatchNorm2d(c2),
        act(),
        L.AvgPool2d(2),
        L.Flatten(),
        L.Linear(c2 * side * side, h),
        act(),
        L.Linear(h, config.num_classes),
    )
