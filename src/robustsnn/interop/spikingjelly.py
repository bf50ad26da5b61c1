"""SpikingJelly adapter: multi-step LIF / IF / PLIF nodes become robustsnn neurons, others get a surrogate slot.

SpikingJelly's LIF (``decay_input=True``) charges
``H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau``; with ``V_reset = 0`` that is our
``m[t] = lambda v[t-1] + g X[t]`` with ``lambda = 1 - 1/tau`` and ``g = 1/tau``
(``decay_input=False``: ``g = 1``); IF is ``lambda = 1``. Spikes are
``H - V_th >= 0`` in both. Hard reset to 0 (``v_reset=0``) or soft reset
(``v_reset=None``); ``detach_reset`` is kept. ``ParametricLIFNode`` is converted
with its current tau = 1 / sigmoid(w) (fixed during the evaluation). The node's
surrogate becomes the converted neuron's own (``bptt:default``): SpikingJelly's
``Sigmoid(alpha)`` and ``ATan(alpha)`` are our ``sigmoid`` / ``atan`` with width 1 and
scale alpha; a node with any other surrogate keeps it through a surrogate slot instead.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from ..neurons import NeuronConfig, SpikingNeuron
from ..surrogates import Surrogate
from . import SurrogateSlot, _is_sj_neuron

__all__ = ["adapt", "SJNeuron"]


class SJNeuron(nn.Module):
    """A converted SpikingJelly node: [T, B, ...] current -> spikes, ``gain`` x current into a robustsnn neuron."""

    def __init__(self, neuron: SpikingNeuron, gain: float):
        super().__init__()
        self.neuron, self.gain = neuron, float(gain)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.neuron(x_seq * self.gain if self.gain != 1.0 else x_seq)


def _dynamics(node) -> tuple[str, float, float] | None:
    """(kind, lambda, gain) of a convertible node, else None."""
    name = type(node).__name__
    if name == "IFNode":
        return "if", 1.0, 1.0
    if name in ("LIFNode", "ParametricLIFNode"):
        if name == "LIFNode":
            tau = float(node.tau)
        else:
            tau = float(1.0 / torch.sigmoid(node.w.detach()).item())
        return "lif", 1.0 - 1.0 / tau, (1.0 / tau if getattr(node, "decay_input", True) else 1.0)
    return None


def _surrogate(fn) -> Surrogate | None:
    """Our equal of SpikingJelly's surrogate object ``fn`` (Sigmoid, ATan), else None."""
    name = {"Sigmoid": "sigmoid", "ATan": "atan"}.get(type(fn).__name__)
    if name is None or type(fn).__module__.split(".")[0] != "spikingjelly" or getattr(fn, "spiking", True) is False:
        return None
    return Surrogate(name, 1.0, float(fn.alpha))


def _convert(node) -> SJNeuron | None:
    dyn = _dynamics(node)
    if dyn is None or getattr(node, "step_mode", "s") != "m" or node.v_reset not in (0.0, None):
        return None
    sur = _surrogate(node.surrogate_function)
    if sur is None:
        return None
    if type(node).__module__.split(".")[0] != "spikingjelly" or getattr(node, "store_v_seq", False):
        return None
    kind, lam, gain = dyn
    cfg = NeuronConfig(kind, leak=lam, threshold=float(node.v_threshold), reset="hard" if node.v_reset == 0.0 else "soft",
                       threshold_floor=min(0.03, float(node.v_threshold)), detach_reset=bool(node.detach_reset),
                       surrogate=sur)
    return SJNeuron(SpikingNeuron(cfg, 1), gain)


def adapt(net: nn.Module) -> tuple[list[str], list[str]]:
    """Adapt ``net`` in place; returns (names of converted neurons, names of surrogate slots)."""
    converted, slots = [], []
    for parent_name, parent in list(net.named_modules()):
        for child_name, child in list(parent.named_children()):
            if not _is_sj_neuron(child):
                continue
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            new = _convert(child)
            if new is not None:
                setattr(parent, child_name, new)
                converted.append(full)
                continue
            if getattr(child, "backend", "torch") != "torch":
                raise UsageError(f"{full}: backend={child.backend!r} fuses the surrogate into a kernel; "
                                 "build the network with backend='torch' to evaluate it")
            if not callable(child.surrogate_function):
                raise UsageError(f"{full}: {type(child).__name__} has no callable surrogate_function to adapt")
            child.surrogate_function = SurrogateSlot(child.surrogate_function, strict=False, owner=full)
            slots.append(full)
    return converted, slots
