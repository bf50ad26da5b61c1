"""Architectures that build an ANN twin or an SNN twin from one spec.

>>> from robustsnn.models import build
>>> snn = build("cnn", kind="snn", neuron="lif", time_steps=4)
>>> ann = build("cnn", kind="ann")
"""

from .base import ModelConfig, TwinModel, spiking_layers
from .registry import available, build, build_from_config, register
from . import cnn  # noqa: F401  (registers "cnn")
from . import vgg, resnet, wrn  # noqa: F401  (register vgg5/11/16, resnet19/20, wrn16_4, wrn28_4)

__all__ = ["ModelConfig", "TwinModel", "spiking_layers", "available", "build", "build_from_config", "register"]
