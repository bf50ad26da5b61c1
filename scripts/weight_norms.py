"""L2 norm of every weight matrix / kernel of one or more checkpoints, one line per checkpoint.

    python scripts/weight_norms.py results/fmnist_full/lif_rfgsm_mppd0_60k3/model results/fmnist_full/lif_rfgsm_mppd1_clip5_60k3/model

Used in docs/results.md to show how far the MPPD rho = 1 runs let the weights grow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import robustsnn


def weight_norms(ckpt: Path) -> dict[str, float]:
    """{parameter name: L2 norm} of the conv / linear weights (two or more dimensions) of a checkpoint."""
    model = robustsnn.load(ckpt)
    return {k: float(v.detach().norm()) for k, v in model.named_parameters() if k.endswith("weight") and v.dim() > 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", type=Path, nargs="+")
    for ckpt in ap.parse_args().checkpoints:
        norms = weight_norms(ckpt)
        print(f"{ckpt}: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(norms.items())))


if __name__ == "__main__":
    main()
