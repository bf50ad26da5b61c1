"""Twin models: one architecture spec builds an ANN (ReLU) or an SNN (spiking neurons).

A :class:`TwinModel` wraps an architecture body built from the time-aware
layers of :mod:`robustsnn.layers`. The body is identical for both twins except
for the activation modules, so parameter names match and conversion is a
weight copy plus thresholds.

Forward contract (DESIGN.md section 2): ``model(x)`` takes pixels in [0, 1],
shape [B, C, H, W], normalises them, encodes T steps (SNN), and returns logits
[B, K] (mean over T of the non-spiking readout). ``model.forward_steps(x)``
gives the per-step logits [T, B, K].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import torch
from torch import nn

from ..errors import UsageError
from ..encoding import ENCODINGS, encode, readout
from ..layers import Normalize
from ..neurons import QCFS, NeuronConfig, ReLU, SpikingNeuron

__all__ = ["ModelConfig", "TwinModel", "ActivationFactory", "spiking_layers", "scaled_channels", "init_weights"]

ActivationFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model (stored as JSON in checkpoints).

    Attributes:
        name: architecture name in the registry (``robustsnn.models.available()``).
        kind: ``"snn"`` or ``"ann"``.
        num_classes: K.
        in_channels: C of the input images.
        image_size: H (= W) of the input images.
        time_steps: T (SNN only).
        encoding: ``"direct"`` or ``"poisson"`` (SNN only).
        neuron: neuron settings (SNN only).
        mean, std: per-channel normalisation of the data set, applied inside the model.
        width: channel multiplier for the architecture (1.0 = as published).
        activation: the ANN twin's activation: ``"relu"`` or ``"qcfs"`` (clip-floor-shift
            with a learnable clip, for near-lossless conversion; ANN only).
        levels: quantisation levels L of ``"qcfs"`` (None: ``time_steps``).
    """

    name: str = "cnn"
    kind: str = "snn"
    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 28
    time_steps: int = 4
    encoding: str = "direct"
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    width: float = 1.0
    activation: str = "relu"
    levels: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("snn", "ann"):
            raise ValueError(f"kind must be 'snn' or 'ann', got {self.kind!r}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; choose one of {', '.join(ENCODINGS)}")
        if not 1 <= int(self.time_steps) <= 10000:
            raise ValueError(f"time_steps must be in 1..10000, got {self.time_steps}")
        if self.activation not in ("relu", "qcfs"):
            raise ValueError(f"unknown ANN activation {self.activation!r}; choose relu or qcfs")
        if self.levels is not None and int(self.levels) < 1:
            raise ValueError(f"levels must be >= 1, got {self.levels}")
        if isinstance(self.neuron, dict):
            object.__setattr__(self, "neuron", NeuronConfig.from_dict(self.neuron))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(
                f"mean/std need {self.in_channels} values (one per input channel), "
                f"got {len(self.mean)}/{len(self.std)}"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["neuron"] = self.neuron.to_dict()
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        if not isinstance(d, dict):
            raise TypeError(f"the model config must be a mapping, got {type(d).__name__}")
        d = dict(d)
        check_field_types(cls, d)
        neuron = d.get("neuron", {})
        if not isinstance(neuron, dict):
            raise TypeError(f"field 'neuron' must be a mapping, got {neuron!r}")
        check_field_types(NeuronConfig, neuron)
        d["neuron"] = NeuronConfig.from_dict(neuron)
        return cls(**d)

    def with_(self, **changes) -> "ModelConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)


def check_field_types(cls, d: dict) -> None:
    """Raise TypeError naming the field if a value in ``d`` has not the type of the field's default.

    Only int, float and str fields are checked (a float field also takes an int); unknown
    fields are left to the dataclass, which names them.
    """
    from dataclasses import MISSING, fields

    for f in fields(cls):
        if f.name not in d or f.default is MISSING or f.default is None:
            continue
        want, value = type(f.default), d[f.name]
        ok = {int: (int,), float: (int, float), str: (str,)}.get(want)
        if ok is not None and (isinstance(value, bool) or not isinstance(value, ok)):
            raise TypeError(f"field {f.name!r} must be {want.__name__}, got {value!r}")


def spiking_layers(model: nn.Module) -> list[tuple[str, SpikingNeuron]]:
    """All spiking-neuron modules of ``model`` as (qualified name, module), in forward order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SpikingNeuron)]


class TwinModel(nn.Module):
    """Normalisation + encoder + architecture body + readout.

    Args:
        config: the model's :class:`ModelConfig`.
        body: module mapping [B, C, H, W] (ANN) or [T, B, C, H, W] (SNN) to logits
            [B, K] or [T, B, K]; built with the activation factory of ``config.kind``.
    """

    def __init__(self, config: ModelConfig, body: nn.Module):
        super().__init__()
        self.config = config
        self.normalize = Normalize(config.mean, config.std)
        self.body = body

    @property
    def is_snn(self) -> bool:
        return self.config.kind == "snn"

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`UsageError` unless ``x`` is [B, C, H, W] with the config's C and H = W."""
        c, s = self.config.in_channels, self.config.image_size
        if x.dim() != 4:
            raise UsageError(
                f"images must be [B, C, H, W] = [B, {c}, {s}, {s}], got shape {list(x.shape)}; "
                "for one image add the batch dimension with x.unsqueeze(0)"
            )
        if tuple(x.shape[1:]) != (c, s, s):
            got = "x".join(map(str, x.shape[1:]))
            raise UsageError(
                f"the model expects {c}x{s}x{s} images (channels x height x width), got {got}; "
                "give images of the data set it was trained on"
            )

    def forward_steps(self, x: torch.Tensor, time_steps: int | None = None) -> torch.Tensor:
        """Per-step logits [T, B, K] of the exact network for pixels x [B, C, H, W].

        An ANN returns its logits as a single step, [1, B, K].
        """
        self.check_input(x)
        if not self.is_snn:
            return self.body(self.normalize(x)).unsqueeze(0)
        T = time_steps or self.config.time_steps
        if self.config.encoding == "poisson":
            return self.body(encode(x, T, "poisson"))
        return self.body(encode(self.normalize(x), T, "direct"))

    def forward(self, x: torch.Tensor, time_steps: int | None = None) -> torch.Tensor:
        """Logits [B, K] for pixels x in [0, 1], shape [B, C, H, W].

        Under the ANN-proxy estimator the value is the exact SNN's and the gradient
        the ReLU twin's (same weights).
        """
        if not self.is_snn:
            self.check_input(x)
            return self.body(self.normalize(x))
        from ..estimators import proxy_forward

        neurons = [m for _, m in spiking_layers(self)]
        return proxy_forward(neurons, lambda: readout(self.forward_steps(x, time_steps)))


def scaled_channels(config: ModelConfig, n: int) -> int:
    """``n`` channels scaled by ``config.width`` (at least 1)."""
    return max(1, int(round(n * config.width)))


def init_weights(body: nn.Module) -> nn.Module:
    """Kaiming-normal (fan-out) convolutions and zero Linear biases, as the seeds initialise."""
    for m in body.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
    return body


def activation_factory(config: ModelConfig) -> ActivationFactory:
    """The activation each twin uses: ReLU for the ANN, a spiking neuron layer for the SNN."""
    if config.kind == "ann":
        if config.activation == "qcfs":
            levels = int(config.levels or config.time_steps)
            return lambda: QCFS(levels)
        return ReLU
    return lambda: SpikingNeuron(config.neuron, config.time_steps)
