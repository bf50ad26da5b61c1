"""Registry of architectures and the public builder ``build``."""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..neurons import NeuronConfig
from .base import ActivationFactory, ModelConfig, TwinModel, activation_factory

__all__ = ["register", "available", "build", "build_from_config"]

BodyBuilder = Callable[[ModelConfig, ActivationFactory], nn.Module]
_REGISTRY: dict[str, BodyBuilder] = {}


def register(name: str) -> Callable[[BodyBuilder], BodyBuilder]:
    """Decorator: register ``fn(config, act) -> body`` under ``name``."""

    def deco(fn: BodyBuilder) -> BodyBuilder:
        _REGISTRY[name] = fn
        return fn

    return deco


def available() -> list[str]:
    """Names of all registered architectures."""
    return sorted(_REGISTRY)


def build_from_config(config: ModelConfig) -> TwinModel:
    """Build the twin described by ``config`` (fresh initialisation)."""
    if config.name not in _REGISTRY:
        raise ValueError(f"unknown model {config.name!r}; choose one of {', '.join(available())}")
    body = _REGISTRY[config.name](config, activation_factory(config))
    return TwinModel(config, body)


def build(
    name: str = "cnn",
    kind: str = "snn",
    *,
    neuron: str | NeuronConfig = "lif",
    time_steps: int = 4,
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    mean=None,
    std=None,
    encoding: str = "direct",
    width: float = 1.0,
    activation: str = "relu",
    levels: int | None = None,
    **neuron_kwargs,
) -> TwinModel:
    """Build an ANN or SNN twin by architecture name.

    Args:
        name: architecture (see :func:`available`), e.g. ``"cnn"``, ``"vgg11"``, ``"resnet19"``.
        kind: ``"snn"`` or ``"ann"``.
        neuron: ``"if"``, ``"lif"``, ``"dlif"`` or a :class:`NeuronConfig`.
        time_steps: T for the SNN.
        num_classes, in_channels, image_size: data shape.
        mean, std: per-channel normalisation (defaults: 0 and 1).
        encoding: ``"direct"`` or ``"poisson"``.
        width: channel multiplier.
        activation: the ANN twin's activation, ``"relu"`` or ``"qcfs"``.
        levels: QCFS quantisation levels (None: ``time_steps``).
        **neuron_kwargs: fields of :class:`NeuronConfig` (threshold, reset, leak, surrogate, ...).
    Returns:
        A :class:`TwinModel`; ``model(x)`` maps [B, C, H, W] in [0, 1] to logits [B, K].
    """
    if isinstance(neuron, str):
        neuron = NeuronConfig(kind=neuron, **neuron_kwargs)
    elif neuron_kwargs:
        neuron = neuron.with_(**neuron_kwargs)
    config = ModelConfig(
        name=name,
        kind=kind,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        time_steps=time_steps,
        encoding=encoding,
        neuron=neuron,
        mean=tuple(mean) if mean is not None else (0.0,) * in_channels,
        std=tuple(std) if std is not None else (1.0,) * in_channels,
        width=width,
        activation=activation,
        levels=levels,
    )
    return build_from_config(config)
