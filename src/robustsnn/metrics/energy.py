r"""Energy estimate from operation counts: :math:`E = E_{MAC} \cdot \mathrm{MACs} + E_{AC} \cdot \mathrm{SOPs}`.

Defaults are the 45 nm CMOS figures of Horowitz (ISSCC 2014) for 32-bit float
operations: a multiply-accumulate 4.6 pJ (3.7 pJ multiply + 0.9 pJ add), an
accumulate 0.9 pJ. Memory access is not included (see
:mod:`robustsnn.metrics.memory` for storage).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["EnergyModel", "energy_pj", "compare_energy"]


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation in picojoules.

    Attributes:
        e_mac_pj: one multiply-accumulate (ANN layers, analog SNN inputs).
        e_ac_pj: one accumulate (a synaptic operation driven by a spike).
    """

    e_mac_pj: float = 4.6
    e_ac_pj: float = 0.9

    def __post_init__(self) -> None:
        if not (self.e_mac_pj >= 0 and self.e_ac_pj >= 0):
            raise ValueError(f"energies per operation must be >= 0 pJ, got MAC {self.e_mac_pj}, AC {self.e_ac_pj}")

    def to_dict(self) -> dict:
        return asdict(self)


def energy_pj(macs: float, sops: float, model: EnergyModel = EnergyModel()) -> float:
    """Energy in pJ of ``macs`` multiply-accumulates and ``sops`` accumulates."""
    return model.e_mac_pj * float(macs) + model.e_ac_pj * float(sops)


def compare_energy(ops: dict, model: EnergyModel = EnergyModel()) -> dict:
    """Energy per image of every variant in an operation report, and ratios to the first.

    Args:
        ops: the report of :func:`robustsnn.metrics.count_ops` (its ``totals``).
        model: energy per operation.
    Returns:
        ``{"model": {...}, "unit": "pJ per image", "variants": {"snn": {"macs", "sops",
        "energy_pj"}, "snn_dense": ..., "ann": ..., "ann_dense": ...}, "savings": {...}}``
        where ``savings[v]`` = energy of ``v`` / energy of the sparse SNN (of the ANN
        for an ANN report): how many times more the alternative costs.
    """
    variants = {}
    for name, t in ops["totals"].items():
        variants[name] = {"macs": t["macs"], "sops": t["sops"], "energy_pj": energy_pj(t["macs"], t["sops"], model)}
    base = variants["snn"]["energy_pj"] if "snn" in variants else variants["ann"]["energy_pj"]
    savings = {k: (v["energy_pj"] / base if base > 0 else None) for k, v in variants.items()}
    return {"model": model.to_dict(), "unit": "pJ per image", "variants": variants, "savings": savings}
