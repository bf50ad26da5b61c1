"""VGG-5, VGG-11 and VGG-16 with batch norm and average pooling (SNN-conversion style).

Every convolution is ``conv3x3 (no bias) - BN - act``; stages are separated by
``avgpool 2`` (average, not max, pooling: it is linear, so it commutes with rate
coding and the same weights serve the ANN and the SNN twin). The last layer is a
plain Linear readout that does not spike. Channel counts below are at
``width = 1``; every count (including the hidden fc width) is multiplied by
``config.width``.

Notation: a number is a conv-BN-act block with that many output channels,
``A`` an AvgPool2d(2), ``GAP`` AdaptiveAvgPool2d(1), ``fc n`` Linear-act.

* ``vgg5``:  64, A, 128, 128, A, flatten, fc 1024, Linear(1024, K).
  The flatten has 128 * (H // 4)^2 features (8192 at 32x32, 6272 at 28x28).
* ``vgg11``: 64, A, 128, 256, A, 512, 512, 512, A, 512, 512, GAP, flatten,
  fc 512, Linear(512, K). The conv stack is the one of SNN-RAT (Ding et al.) and
  of Özdenizci & Legenstein's conversion code (8 convs, 3 pools); their
  4096-4096 classifier on the flattened 4x4 map (~50 M weights) is replaced by
  the common CIFAR variant GAP - fc 512 so that the model fits a CPU.
* ``vgg16``: 64, 64, A, 128, 128, A, 256, 256, 256, A, 512, 512, 512, A,
  512, 512, 512, GAP, flatten, fc 512, Linear(512, K). Four pools (not five) so
  that 28x28 inputs still leave a 1x1 map.

Convolutions use Kaiming-normal (fan-out) initialisation, as the seeds do.
Parameter counts at width 1, 10 classes, 3 input channels, 32x32: vgg5
8.62 M, vgg11 11.26 M, vgg16 14.99 M.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .. import layers as L
from .base import ActivationFactory, ModelConfig, init_weights, scaled_channels
from .registry import register

__all__ = ["vgg5", "vgg11", "vgg16", "VGG_FEATURES"]

#: Conv stacks at width 1: channel counts and "A" (average pool 2).
VGG_FEATURES: dict[str, list] = {
    "vgg5": [64, "A", 128, 128, "A"],
    "vgg11": [64, "A", 128, 256, "A", 512, 512, 512, "A", 512, 512],
    "vgg16": [64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A", 512, 512, 512],
}



def _features(config: ModelConfig, act: ActivationFactory, spec: list) -> tuple[nn.Sequential, int, int]:
    """The conv stack; returns (module, output channels, output side length)."""
    layers: list[nn.Module] = []
    c, side = config.in_channels, config.image_size
    for item in spec:
        if item == "A":
            layers.append(L.AvgPool2d(2))
            side //= 2
            if side < 1:
                raise ValueError(f"image_size {config.image_size} is too small for this VGG")
        else:
            out = scaled_channels(config, item)
            layers += [L.Conv2d(c, out, 3, padding=1, bias=False), L.BatchNorm2d(out), act()]
            c = out
    return L.Sequential(*layers), c, side




def _vgg(config: ModelConfig, act: ActivationFactory, name: str, hidden: int, global_pool: bool) -> nn.Module:
    features, c, side = _features(config, act, VGG_FEATURES[name])
    h = scaled_channels(config, hidden)
    if global_pool:
        head = [L.AdaptiveAvgPool2d(1), L.Flatten(), L.Linear(c, h)]
    else:
        head = [L.Flatten(), L.Linear(c * side * side, h)]
    classifier = nn.Sequential(*head, act(), L.Linear(h, config.num_classes))
    return init_weights(nn.Sequential(OrderedDict(features=features, classifier=classifier)))


@register("vgg5")
def vgg5(config: ModelConfig, act: ActivationFactory) -> nn.Module:
    """VGG-5: 64, A, 128, 128, A, flatten, fc 1024, Linear(1024, K) (4 spiking layers)."""
    return _vgg(config, act, "vgg5", 1024, global_pool=False)


@register("vgg11")
def vgg11(config: ModelConfig, act: ActivationFactory) -> nn.Module:
    """VGG-11: 64, A, 128, 256, A, 512x3, A, 512x2, GAP, fc 512, Linear(512, K) (9 spiking layers)."""
    return _vgg(config, act, "vgg11", 512, global_pool=True)


@register("vgg16")
def vgg16(config: ModelConfig, act: ActivationFactory) -> nn.Module:
    """VGG-16: 64x2, A, 128x2, A, 256x3, A, 512x3, A, 512x3, GAP, fc 512, Linear(512, K) (14 spiking layers)."""
    return _vgg(config, act, "vgg16", 512, global_pool=True)
