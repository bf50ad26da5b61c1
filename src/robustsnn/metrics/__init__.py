"""Efficiency accounting: spike rates, MAC / SOP counts, energy and memory (DESIGN.md section 8).

>>> from robustsnn.metrics import efficiency, EnergyModel
>>> report = efficiency(snn, test_set, n=1000)           # doctest: +SKIP
>>> report["energy"]["savings"]["ann_dense"]              # doctest: +SKIP

One forward pass with hooks records spike rates and where every conv/linear
layer's inputs are non-zero; the model is left bit-identical. Operation
counting rules are in :mod:`robustsnn.metrics.ops`, the energy model in
:mod:`robustsnn.metrics.energy`, the storage format in
:mod:`robustsnn.sparsity.storage`.
"""

from __future__ import annotations

from torch import nn

from .energy import EnergyModel, compare_energy, energy_pj
from .memory import memory_report
from .ops import OpRecorder, count_ops, fanout
from .recording import iter_images, record
from .spikes import SpikeRecorder, spike_rates

__all__ = [
    "EnergyModel",
    "OpRecorder",
    "SpikeRecorder",
    "compare_energy",
    "count_ops",
    "efficiency",
    "energy_pj",
    "fanout",
    "iter_images",
    "memory_report",
    "record",
    "spike_rates",
]


def efficiency(
    model: nn.Module,
    data,
    energy: EnergyModel = EnergyModel(),
    n: int | None = None,
    *,
    batch_size: int = 256,
) -> dict:
    """Spike rates, operation counts, energy and memory of ``model`` in one forward pass.

    Args:
        model: an SNN (or an ANN: then only MACs, energy and memory).
        data: ArrayDataset, tensor [N, C, H, W] in [0, 1], or iterable of ``(x, y)`` batches.
        energy: energy per operation (45 nm defaults).
        n: use at most this many images (``None``: all).
        batch_size: batch size for a data set or tensor.
    Returns:
        JSON-serialisable ``{"images", "kind", "time_steps", "spikes" (None for an ANN),
        "ops" (per-layer rows and totals, per image), "energy" (pJ per image of the SNN,
        the dense SNN, the ANN twin and the dense ANN, with ratios to the SNN), "memory"}``.
    """
    spikes, ops = SpikeRecorder(), OpRecorder()
    images = record(model, data, [spikes, ops], n=n, batch_size=batch_size)
    op_report = ops.report()
    return {
        "images": images,
        "kind": op_report["kind"],
        "time_steps": op_report["time_steps"],
        "spikes": spikes.report() if spikes.names else None,
        "ops": {"layers": op_report["layers"], "totals": op_report["totals"]},
        "energy": compare_energy(op_report, energy),
        "memory": memory_report(model),
    }
