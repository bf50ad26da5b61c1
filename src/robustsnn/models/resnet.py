"""ResNet-19 (SNN literature) and ResNet-20 (CIFAR) with post-activation basic blocks.

Basic block (He et al. 2016, as in the tdBN / TET and conversion codes)::

    out = act2( BN2(conv2( act1(BN1(conv1(x))) )) + shortcut(x) )

with 3x3 convolutions (no bias), the stride on conv1, and ``shortcut`` the
identity or, when the channel count or the resolution changes, a 1x1 conv
(stride s, no bias) + BN. The activation comes after the addition, so in the
SNN twin every convolution after the stem sees spikes and the shortcut adds a
spike train to the block's analog current. The addition is elementwise and
works on [B, ...] (ANN) and [T, B, ...] (SNN) alike.

Channel counts at ``width = 1`` (every count, including the hidden fc width, is
multiplied by ``config.width``):

* ``resnet19`` (Zheng et al. 2021 tdBN; Deng et al. 2022 TET):
  stem conv3x3 128 - BN - act; stages of 3, 3, 2 blocks with 128, 256, 512
  channels and strides 1, 2, 2; GAP; flatten; fc 256 - act; Linear(256, K).
  18 spiking layers; 12.70 M parameters (10 classes, 3 input channels).
* ``resnet20`` (He et al. 2016, CIFAR): stem conv3x3 16 - BN - act; stages of
  3, 3, 3 blocks with 16, 32, 64 channels and strides 1, 2, 2; GAP; flatten;
  Linear(64, K). 19 spiking layers; 0.27 M parameters (1x1-conv shortcuts,
  "option B").

GAP is AdaptiveAvgPool2d(1), so any image size (28, 32, 64) works.
Convolutions use Kaiming-normal (fan-out) initialisation, as the seeds do.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .. import layers as L
from .base import ActivationFactory, ModelConfig, init_weights, scaled_channels
from .registry import register

__all__ = ["BasicBlock", "resnet19", "resnet20"]



class BasicBlock(nn.Module):
    """Post-activation basic block; input and output [B, C, H, W] or [T, B, C, H, W].

    Submodules are registered in forward order (conv1, bn1, act1, conv2, bn2,
    shortcut, act2) so that ``spiking_layers`` lists act1 before act2.

    Args:
        in_ch, out_ch: channels in and out.
        stride: stride of conv1 (and of the shortcut conv).
        act: activation factory; called twice (two distinct modules).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, act: ActivationFactory):
        super().__init__()
        self.conv1 = L.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = L.BatchNorm2d(out_ch)
        self.act1 = act()
        self.conv2 = L.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = L.BatchNorm2d(out_ch)
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                L.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                L.BatchNorm2d(out_ch),
            )
        else:
            self.shortcut = nn.Identity()
        self.act2 = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))




def _resnet(
    config: ModelConfig,
    act: ActivationFactory,
    stem: int,
    stages: list[tuple[int, int, int]],
    hidden: int | None,
) -> nn.Module:
    """Stem conv, stages of (channels, blocks, stride), GAP, optional fc-act, readout."""
    c = scaled_channels(config, stem)
    parts: list[tuple[str, nn.Module]] = [
        ("stem", nn.Sequential(L.Conv2d(config.in_channels, c, 3, padding=1, bias=False), L.BatchNorm2d(c), act()))
    ]
    for i, (channels, blocks, stride) in enumerate(stages, start=1):
        out = scaled_channels(config, channels)
        stage = []
        for b in range(blocks):
            stage.append(BasicBlock(c, out, stride if b == 0 else 1, act))
            c = out
        parts.append((f"layer{i}", nn.Sequential(*stage)))
    head: list[nn.Module] = [L.AdaptiveAvgPool2d(1), L.Flatten()]
    if hidden is not None:
        h = scaled_channels(config, hidden)
        head += [L.Linear(c, h), act()]
        c = h
    head.append(L.Linear(c, config.num_classes))
    parts.append(("head", nn.Sequential(*head)))
    return init_weights(nn.Sequential(OrderedDict(parts)))


@register("resnet19")
def resnet19(config: ModelConfig, act: ActivationFactory) -> nn.Module:
    """ResNet-19: stem 128; blocks 3x128, 3x256 (s2), 2x512 (s2); GAP; fc 256; Linear(256, K)."""
    return _resnet(config, act, 128, [(128, 3, 1), (256, 3, 2), (512, 2, 2)], hidden=256)


@register("resnet20")
def resnet20(config: ModelConfig, act: ActivationFactory) -> nn.Module:
    """ResNet-20 (CIFAR): stem 16; blocks 3x16, 3x32 (s2), 3x64 (s2); GAP; Linear(64, K)."""
    return _resnet(config, act, 16, [(16, 3, 1), (32, 3, 2), (64, 3, 2)], hidden=None)
