"""snnTorch adapter: every neuron's ``spike_grad`` becomes a :class:`~robustsnn.interop.SurrogateSlot`.

snnTorch neurons keep their state between calls and are driven one step at a time by the
user's own loop, so their dynamics stay snnTorch's; only the spike function's backward
changes. snnTorch spikes where ``mem - threshold > 0``. Its reset term calls
``spike_grad`` too (detached); the adapter computes that term directly so that the slot
sees exactly one call per time step.
"""

from __future__ import annotations

from torch import nn

from ..errors import UsageError
from . import SurrogateSlot

__all__ = ["adapt"]


def _reset_term(neuron):
    def mem_reset(mem):
        return (mem - neuron.threshold > 0).to(mem.dtype).detach()

    return mem_reset


def adapt(net: nn.Module) -> tuple[list[str], list[str]]:
    """Adapt ``net`` in place; returns ([], names of the neurons with a surrogate slot)."""
    slots = []
    for name, m in list(net.named_modules()):
        if type(m).__module__.split(".")[0] != "snntorch" or not hasattr(m, "spike_grad"):
            continue
        if getattr(m, "state_quant", False):
            raise UsageError(f"{name}: state_quant is not supported (quantised membranes change the spike rule)")
        if not callable(m.spike_grad):
            raise UsageError(f"{name}: {type(m).__name__} has no callable spike_grad to adapt")
        m.spike_grad = SurrogateSlot(m.spike_grad, strict=True, owner=name or type(m).__name__)
        if hasattr(m, "mem_reset"):
            m.mem_reset = _reset_term(m)
        slots.append(name or type(m).__name__)
    return [], slots
