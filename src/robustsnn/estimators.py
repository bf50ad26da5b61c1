"""Gradient estimators as a mode over a whole model (DESIGN.md section 4).

>>> with estimator(model, "bptt", surrogate="triangle", width=0.5):
...     loss = F.cross_entropy(model(x), y); loss.backward()

Only the backward pass changes; the forward pass is always the exact SNN.
Modes:

* ``bptt``: backprop through time with a surrogate (any of
  :data:`robustsnn.surrogates.SURROGATES`, with width and scale).
* ``bptr``: backprop through rate (SNN-RAT).
* ``ann``: ANN proxy; value from the exact SNN, gradient from the same weights
  with ReLU in place of the spiking neurons.
* ``assg``: adaptive-sharpness surrogate (ASSG, arXiv 2512.22522), per neuron and
  step from running statistics of |u| over the attack's iterations.
* ``hart``: HART's time-averaged gradient with the temporal path cut (ICLR 2024),
  triangle width gamma in units of the threshold.
* ``rga``: rate gradient approximation (RGA, CVPR 2023).

The last three run through :mod:`robustsnn.gradhooks`; the ``pdsg`` surrogate
(CVPR 2025) is a bptt surrogate (``"pdsg"``, ``"bptt:pdsg"``).

On an ANN every mode is the ordinary gradient. Attacks never need to know.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from torch import nn

from .gradhooks import HOOK_MODES
from .neurons import GradMode, SpikingNeuron
from .surrogates import Surrogate, parse_surrogate

__all__ = ["Estimator", "estimator", "MODES", "SEED_ESTIMATORS", "parse_estimator", "proxy_forward"]

MODES = ("bptt", "bptr", "ann", *HOOK_MODES)


@dataclass(frozen=True)
class Estimator:
    """A named gradient estimator: ``mode`` plus, for bptt, a surrogate (None = each neuron's own).

    ``options``: keyword arguments of a hook mode's :class:`~robustsnn.gradhooks.SpikeHook`
    as sorted ``(name, value)`` pairs, e.g. ``(("gamma", 0.5),)`` for ``hart``.
    """

    mode: str = "bptt"
    surrogate: Surrogate | None = None
    options: tuple = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown estimator mode {self.mode!r}; choose one of {', '.join(MODES)}")
        opts = tuple(sorted((str(k), float(v)) for k, v in dict(self.options).items()))
        if self.mode in HOOK_MODES:
            try:
                HOOK_MODES[self.mode](**dict(opts))
            except TypeError as err:
                raise ValueError(f"bad options for estimator {self.mode!r}: {err}") from None
        elif opts:
            raise ValueError(f"estimator {self.mode!r} takes no options, got {dict(opts)}")
        object.__setattr__(self, "options", opts)

    def label(self) -> str:
        """E.g. ``bptt:triangle(w=1)``, ``bptr``, ``ann``, ``bptt:default``, ``hart(gamma=0.5)``."""
        if self.mode in HOOK_MODES:
            return self.mode + (f"({','.join(f'{k}={v:g}' for k, v in self.options)})" if self.options else "")
        if self.mode != "bptt":
            return self.mode
        return "bptt:" + (self.surrogate.label() if self.surrogate else "default")

    def hook(self):
        """A fresh :class:`~robustsnn.gradhooks.SpikeHook` for one neuron (hook modes), else None."""
        return HOOK_MODES[self.mode](**dict(self.options)) if self.mode in HOOK_MODES else None

    def to_dict(self) -> dict:
        d = {"mode": self.mode, "surrogate": self.surrogate.to_dict() if self.surrogate else None}
        if self.options:
            d["options"] = dict(self.options)
        return d


#: The single option a hook mode's spec string sets: ``"hart:0.5"``, ``"assg:0.4"``, ``"rga:0.2"``.
_HOOK_FIRST_OPTION = {"assg": "A", "hart": "gamma", "rga": "gamma"}


def parse_estimator(spec: "str | Estimator") -> Estimator:
    """``"bptr"``, ``"ann"``, ``"bptt"``, ``"triangle:0.5"``, ``"bptt:exp-d:2"``, ``"hart:0.5"``, ``"assg"``, ``"rga"`` -> :class:`Estimator`."""
    if isinstance(spec, Estimator):
        return spec
    s = spec.strip().lower()
    if s in ("bptr", "ann", "bptt", *HOOK_MODES):
        return Estimator(s)
    head, _, value = s.partition(":")
    if head in HOOK_MODES:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"estimator {spec!r}: expected {head}:<{_HOOK_FIRST_OPTION[head]}>, a number") from None
        return Estimator(head, None, ((_HOOK_FIRST_OPTION[head], number),))
    if s.startswith("bptt:"):
        s = s[5:]
    return Estimator("bptt", parse_surrogate(s))


def _seed_estimators() -> tuple[Estimator, ...]:
    tri = [Surrogate("triangle", w) for w in (1.0, 2.0, 3.0, 0.5, 0.25)]
    expd = [Surrogate("exp-d", w) for w in (0.5, 1.0, 2.0)]
    exp = [Surrogate("exp", w) for w in (0.5, 1.0, 2.0)]
    rect = [Surrogate("rectangle", w) for w in (0.25, 0.5, 1.0, 2.0, 4.0)]
    bptt = [Estimator("bptt", s) for s in tri + expd + exp + rect + [Surrogate("ste")]]
    return tuple(bptt + [Estimator("bptr"), Estimator("ann")])


#: The 19 estimators of the conversion paper's PGD ensemble (DESIGN.md section 7).
SEED_ESTIMATORS: tuple[Estimator, ...] = _seed_estimators()


@contextmanager
def estimator(
    model: nn.Module,
    mode: "str | Estimator" = "bptt",
    surrogate: "str | Surrogate | None" = None,
    width: float | None = None,
    scale: float | None = None,
) -> Iterator[Estimator]:
    """Set every spiking neuron of ``model`` to one gradient estimator for the ``with`` block.

    Args:
        model: any module; its :class:`SpikingNeuron` layers are switched, others untouched.
        mode: ``"bptt"``, ``"bptr"``, ``"ann"`` or an :class:`Estimator`.
        surrogate: surrogate name (bptt only); None keeps each neuron's training surrogate.
        width, scale: surrogate width gamma and scale alpha.
    Yields:
        The :class:`Estimator` in force. Previous modes are restored on exit, even on error.
    """
    if isinstance(mode, Estimator):
        est = mode
    else:
        sur = None
        if surrogate is not None:
            sur = parse_surrogate(surrogate)
            if width is not None or scale is not None:
                sur = Surrogate(sur.name, width if width is not None else sur.width, scale)
        est = Estimator(mode, sur)
    neurons = [m for m in model.modules() if isinstance(m, SpikingNeuron)]
    saved = [n.grad_mode for n in neurons]
    try:
        for n in neurons:
            hook = est.hook()  # one per neuron: ASSG keeps running statistics per layer
            n.grad_mode = GradMode("bptt", est.surrogate, hook) if hook is not None else GradMode(est.mode, est.surrogate)
        yield est
    finally:
        for n, g in zip(neurons, saved):
            n.grad_mode = g


def proxy_forward(neurons: Sequence[SpikingNeuron], run: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``run()``, except under the ANN proxy: the exact SNN's value with the ReLU twin's gradient.

    ``neurons``: the model's spiking layers. If they are in ``ann`` mode, ``run`` is called
    twice: once as is (ReLU neurons, with gradient) and once with the neurons spiking (no
    gradient); the result is ``exact + (proxy - proxy.detach())``.
    """
    if not neurons or neurons[0].grad_mode.mode != "ann":
        return run()
    proxy = run()
    saved = [n.grad_mode for n in neurons]
    try:
        for n in neurons:
            n.grad_mode = GradMode("bptt")
        with torch.no_grad():
            exact = run()
    finally:
        for n, g in zip(neurons, saved):
            n.grad_mode = g
    return exact + (proxy - proxy.detach())
