r"""The membrane-potential perturbation dynamics (MPPD) regulariser of Ding et al. (ICML 2024).

For a spiking layer with leak :math:`\lambda` and input currents
:math:`I_{clean}[t]`, :math:`I_{pert}[t]` (before the DLIF gain :math:`a[t]`):

.. math::

    \Delta I[t] = \mathrm{sg}(I_{clean}[t]) - I_{pert}[t], \qquad
    Y[t] = \lambda\, Y[t-1] + \Delta I[t], \quad Y[-1] = 0, \qquad
    V = \frac{1}{T\,B\,N} \sum_{t, b, n} Y[t]_{b,n}^2

(sg = stop-gradient: the clean branch is detached). The training loss is
:math:`\chi\,CE(f(x)) + (1-\chi)\,CE(f(x')) + \rho\,V`, by default with the
last spiking layer (the seed's choice).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..errors import UsageError
from ..models import spiking_layers
from ..neurons import SpikingNeuron

__all__ = ["perturbation_energy", "capture_currents", "select_layers"]


def perturbation_energy(clean: torch.Tensor, perturbed: torch.Tensor, lam: float) -> torch.Tensor:
    """V for one layer.

    Args:
        clean, perturbed: input currents [T, B, ...] for the clean and the perturbed input.
        lam: the layer's leak lambda.
    Returns:
        0-dim tensor: mean over t, batch and neurons of Y[t]^2; no gradient reaches ``clean``.
    """
    delta = clean.detach() - perturbed
    y = torch.zeros_like(delta[0])
    total = delta.new_zeros(())
    for t in range(delta.shape[0]):
        y = lam * y + delta[t]
        total = total + (y * y).mean()
    return total / delta.shape[0]


def select_layers(model: nn.Module, which: str = "last") -> list[tuple[str, SpikingNeuron]]:
    """Spiking layers for MPPD: ``"last"`` (default), ``"all"`` or comma-separated indices ("0,2")."""
    layers = spiking_layers(model)
    if not layers:
        raise UsageError("the MPPD regulariser needs an SNN (this model has no spiking layer); drop --mppd or use --kind snn")
    if which == "last":
        return layers[-1:]
    if which == "all":
        return layers
    try:
        return [layers[int(i)] for i in str(which).split(",")]
    except (ValueError, IndexError):
        raise UsageError(f"mppd layers {which!r}: give 'last', 'all' or indices in 0..{len(layers) - 1}") from None


@contextmanager
def capture_currents(layers: list[tuple[str, SpikingNeuron]]) -> Iterator[list[list[torch.Tensor]]]:
    """Record the input current of each layer at every forward call inside the block.

    Yields a list (one per layer) of lists of [T, B, ...] tensors, one per call, with autograd
    history intact. Hooks are removed on exit.
    """
    records: list[list[torch.Tensor]] = [[] for _ in layers]
    handles = [
        module.register_forward_pre_hook(lambda _m, args, rec=rec: rec.append(args[0]))
        for (_, module), rec in zip(layers, records)
    ]
    try:
        yield records
    finally:
        for h in handles:
            h.remove()
