"""Robust accuracy under fixed-surrogate PGD and the SNN-specific attacks on a model that masks a fixed surrogate.

    python benchmarks/masked_surrogate.py [--n 64] [--steps 10] [--eps 0.1]

The model is robustsnn.attacks.toy.sharp_potential_model: the tiny trained toy SNN with
every spiking layer's current and threshold scaled by 64 (same spikes, potentials 64x
farther from threshold). Accuracies are on its correctly classified images.
"""

from __future__ import annotations

import argparse

import torch

from robustsnn.attacks import HART, PGD, RGA, SAPGD
from robustsnn.attacks.toy import sharp_potential_model, toy_data, trained_toy_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eps", type=float, default=0.1)
    args = ap.parse_args()
    model = sharp_potential_model(trained_toy_model("snn"))
    x, y = toy_data("test", args.n)
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    x, y = x[ok], y[ok]
    print(f"{int(ok.sum())} correctly classified of the first {args.n} test images; eps={args.eps:g}, {args.steps} steps")
    k, e = args.steps, args.eps
    for attack in (PGD(model, eps=e, steps=k, estimator="triangle:1"), SAPGD(model, eps=e, steps=k),
                   HART(model, eps=e, steps=k), RGA(model, eps=e, steps=k), PGD(model, eps=e, steps=k, estimator="pdsg")):
        with torch.no_grad():
            acc = float((model(attack(x, y)).argmax(1) == y).float().mean())
        print(f"  {attack.label():<36} robust {acc:.1%}")


if __name__ == "__main__":
    main()
