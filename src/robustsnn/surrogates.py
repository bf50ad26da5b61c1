r"""Surrogate gradients for the Heaviside spike function.

The forward pass of a spiking neuron is always the exact step
:math:`s = H(u)`, :math:`u = m - \theta`. Only the backward pass replaces
:math:`dH/du` by a smooth shape :math:`\sigma'(u)`. Every shape takes a width
:math:`\gamma` (in units of membrane potential) and some a scale :math:`\alpha`:

==============  ==========================================================  ==============
name            :math:`\sigma'(u)`                                          default scale
==============  ==========================================================  ==============
triangle        :math:`\gamma^{-2} \max(0, \gamma - |u|)`                  --
exp             :math:`\alpha \exp(-\gamma |u|)`                            1.0
exp-d           same as ``exp``                                             0.3
rectangle       :math:`\gamma^{-1} \, 1[|u| < \gamma/2]`                    --
ste             :math:`1`                                                   --
sigmoid         :math:`(\alpha/\gamma)\,\mathrm{sig}(\alpha u/\gamma)(1-\mathrm{sig})`  4.0
atan            :math:`(\alpha/2) / (1 + (\pi \alpha u / 2\gamma)^2) / \gamma`  2.0
pdsg            :math:`\mathcal N(u;\ \sigma/2, \sigma^2)`, :math:`\sigma = \gamma\,\mathrm{std}(m[0..t])`  --
pdsg-batch      the same, std pooled over the batch (the paper's)                --
==============  ==========================================================  ==============

``sigmoid`` and ``atan`` with ``width=1`` equal SpikingJelly's shapes.
``pdsg`` is potential-dependent (Lun et al., CVPR 2025): a Gaussian whose
mean sigma/2 and standard deviation sigma follow the spread of the membrane
potentials m[0..t] up to step t, per channel (conv) or per neuron (linear),
computed in the forward pass and constant in the backward pass
(:class:`robustsnn.gradhooks.PDSG`). The paper pools the spread over the batch
(``pdsg-batch``); ``pdsg`` takes it per sample, so that a verdict does not
depend on the other samples of its batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Surrogate", "SURROGATES", "surrogate_grad", "parse_surrogate"]

_DEFAULT_SCALE = {"exp": 1.0, "exp-d": 0.3, "sigmoid": 4.0, "atan": 2.0}
SURROGATES = ("triangle", "exp", "exp-d", "rectangle", "ste", "sigmoid", "atan", "pdsg", "pdsg-batch")


@dataclass(frozen=True)
class Surrogate:
    """A surrogate-gradient shape: ``name``, ``width`` (gamma > 0) and optional ``scale`` (alpha)."""

    name: str = "triangle"
    width: float = 1.0
    scale: float | None = None

    def __post_init__(self) -> None:
        if self.name not in SURROGATES:
            raise ValueError(
                f"unknown surrogate {self.name!r}; choose one of {', '.join(SURROGATES)}"
            )
        if not self.width > 0:
            raise ValueError(f"surrogate width must be > 0, got {self.width}")

    @property
    def alpha(self) -> float:
        """The scale alpha in use (the shape's default when ``scale`` is None)."""
        return self.scale if self.scale is not None else _DEFAULT_SCALE.get(self.name, 1.0)

    def label(self) -> str:
        """Short human-readable label, e.g. ``triangle(w=0.5)``."""
        extra = f",a={self.alpha:g}" if self.name in _DEFAULT_SCALE else ""
        return f"{self.name}(w={self.width:g}{extra})"

    def to_dict(self) -> dict:
        return {"name": self.name, "width": self.width, "scale": self.scale}


def parse_surrogate(spec: str | Surrogate | dict) -> Surrogate:
    """Build a :class:`Surrogate` from ``"triangle"``, ``"exp-d:0.5"`` (name:width), a dict or itself."""
    if isinstance(spec, Surrogate):
        return spec
    if isinstance(spec, dict):
        return Surrogate(**spec)
    name, _, width = spec.partition(":")
    return Surrogate(name.strip().lower(), float(width) if width else 1.0)


def layer_width(surrogate: Surrogate, u: torch.Tensor) -> float:
    """Effective width for one layer: ``width`` or, for ``pdsg``, ``width * std(u)`` (floored)."""
    if surrogate.name != "pdsg":
        return surrogate.width
    return surrogate.width * max(float(u.detach().float().std()), 1e-3)


def surrogate_grad(u: torch.Tensor, surrogate: Surrogate, width: float) -> torch.Tensor:
    """dH/du at ``u = m - theta`` for the given shape; ``width`` is the layer's effective width.

    Args:
        u: membrane potential minus threshold, any shape.
        surrogate: the shape (its ``alpha`` is used where the shape has a scale).
        width: effective width gamma (see :func:`layer_width`).
    Returns:
        Tensor of u's shape with the surrogate derivative.
    """
    name, g, a = surrogate.name, width, surrogate.alpha
    if name == "triangle":
        return (g - u.abs()).clamp_min(0.0) / (g * g)
    if name in ("exp", "exp-d"):
        return a * torch.exp(-g * u.abs())
    if name == "rectangle":
        return (u.abs() < g / 2).to(u.dtype) / g
    if name == "ste":
        return torch.ones_like(u)
    if name == "sigmoid":
        sg = torch.sigmoid(a * u / g)
        return (a / g) * sg * (1 - sg)
    if name == "atan":
        return (a / 2) / (1 + (math.pi / 2 * a * u / g) ** 2) / g
    if name in ("pdsg", "pdsg-batch"):  # g = sigma: N(u; sigma/2, sigma^2)
        return torch.exp(-0.5 * ((u - 0.5 * g) / g) ** 2) / (g * math.sqrt(2 * math.pi))
    raise ValueError(f"unknown surrogate {name!r}")
