"""Wide-ResNet-16-4 and -28-4 with pre-activation blocks, as in the seeds (SNN-RAT; Özdenizci & Legenstein;
WRN-28-4 is the CIFAR-100 model of Schmolli et al. 2025 and HYDRA's, Sehwag et al. 2020).

Pre-activation block (Zagoruyko & Komodakis 2016)::

    a   = act1(BN1(x))
    out = conv2( act2(BN2(conv1(a))) ) + shortcut

where conv1 carries the stride, and ``shortcut`` is ``x`` itself when channels
and resolution are unchanged, otherwise a 1x1 conv (stride s, no bias, no BN)
applied to the activated ``a``. In the SNN twin the residual stream between
blocks stays analog (a sum of convolution outputs); every convolution after the
stem sees spikes. The seeds' learnable convex combination of the two branches
and their dropout (0 by default) are left out: the sum is plain.

Layout at ``width = 1`` (all channel counts times ``config.width``)::

    stem conv3x3 16 (no BN, no act)
    layer1: 2 blocks,  64 channels, stride 1
    layer2: 2 blocks, 128 channels, stride 2
    layer3: 2 blocks, 256 channels, stride 2
    BN - act - GAP - flatten - Linear(256, K)

13 spiking layers; 2.75 M parameters (10 classes, 3 input channels). WRN-28-4 has the
same layout with 4 blocks per stage: 25 spiking layers, 5.85 M parameters. GAP is
AdaptiveAvgPool2d(1) (the seeds' AvgPool2d(8) at 32x32), so 28 and 64 work too.
Convolutions use Kaiming-normal (fan-out) initialisation, as the seeds do.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .. import layers as L
from .base import ActivationFactory, ModelConfig, init_weights, scaled_channels
from .registry import register

__all__ = ["PreActBlock", "wide_resnet", "wrn16_4", "wrn28_4"]



class PreActBlock(nn.Module):
    """Pre-activation wide basic block; input and output [B, C, H, W] or [T, B, C, H, W].

    Submodules are registered in forward order (bn1, act1, conv1, bn2, act2,
    conv2, shortcut).

    Args:
        in_ch, out_ch: channels in and out.
        stride: stride of conv1 (and of the shortcut conv).
        act: activation factory; called twice (two distinct modules).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, act: ActivationFactory):
        super().__init__()
        self.bn1 = L.BatchNorm2d(in_ch)
        self.act1 = act()
        self.conv1 = L.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = L.BatchNorm2d(out_ch)
        self.act2 = act()
        self.conv2 = L.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            L.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False) if stride != 1 or in_ch != out_ch else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act1(self.bn1(x))
        out = self.conv2(self.act2(self.bn2(self.conv1(a))))
        return out + (x if self.shortcut is None else self.shortcut(a))


def wide_resnet(config: ModelConfig, act: ActivationFactory, depth: int, widen: int) -> nn.Module:
    """Body of a pre-activation WRN-depth-widen; ``depth = 6 n + 4``."""
    if (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
    n = (depth - 4) // 6
    c = scaled_channels(config, 16)
    parts: list[tuple[str, nn.Module]] = [("stem", L.Conv2d(config.in_channels, c, 3, padding=1, bias=False))]
    for i, (channels, stride) in enumerate([(16 * widen, 1), (32 * widen, 2), (64 * widen, 2)], start=1):
        out = scaled_channels(config, channels)
        blocks = []
        for b in range(n):
            blocks.append(PreActBlock(c, out, stride if b == 0 else 1, act))
            c = out
        parts.append((f"layer{i}", nn.Sequential(*blocks)))
    parts += [
        ("bn", L.BatchNorm2d(c)),
        ("act", act()),
        ("pool", L.AdaptiveAvgPool2d(1)),
        ("flatten", L.Flatten()),
        ("fc", L.Linear(c, config.num_classes)),
    ]
    return init_weights(nn.Sequential(OrderedDict(parts)))


@register("wrn16_4")
def wrn16_4(config: ModelConfig, act: ActivationFactory) -> nn.Module:
    """WRN-16-4 (pre-activation): stem 16; 2 blocks each of 64, 128 (s2), 256 (s2); BN-act-GAP; Linear(256, K)."""
    return wide_resnet(config, act, depth=16, widen=4)


@register("wrn28_4")
def wrn28_4(config: ModelConfig, act: ActivationFactory) -> nn.Module:
    """WRN-28-4 (pre-activation): stem 16; 4 blocks each of 64, 128 (s2), 256 (s2); BN-act-GAP; Linear(256, K)."""
    return wide_resnet(config, act, depth=28, widen=4)
