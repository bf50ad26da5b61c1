"""Seconds per attack step of the SNN-specific attacks against PGD, compiled kernel vs torch path.

    python benchmarks/attack_speed.py [--ckpt results/demo/model] [--n 64] [--steps 10] [--rounds 3]

One process, one thread, process CPU time (other jobs on the machine do not change it),
interleaved rounds, minimum taken. Each attack runs ``--steps`` iterations at eps = 0 against
the model's own predictions (so no image breaks and every step runs on every image) on the
first ``--n`` Fashion-MNIST test images (random images if the data set cannot load), once with the
compiled neuron kernel (``ROBUSTSNN_KERNEL=cpp``: neurons, the spike hooks' backward and
ASSG's statistics in C++) and once on the torch path (``torch``: every neuron step and
hooked backward in torch operations). Prints seconds per attack and, per backend, each
attack's cost against PGD's: ASSG + SA-PGD, HART and RGA replace the surrogate by a
per-element derivative (``robustsnn.gradhooks``), PGD under PDSG through the same path.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch

from robustsnn import checkpoint, kernels
from robustsnn.attacks import HART, PGD, RGA, SAPGD
from robustsnn.estimators import parse_estimator

DEMO = Path(__file__).resolve().parents[1] / "results" / "demo" / "model"


def _data(ckpt: str, n: int):
    try:
        from robustsnn.data import load_dataset

        ds = load_dataset(checkpoint.read_meta(ckpt).get("dataset") or "fashion-mnist", "test")
        return ds.images[:n].float() / 255, ds.labels[:n]
    except Exception as e:  # noqa: BLE001 - a benchmark still runs without the data set
        print(f"(random images: {e})")
        g = torch.Generator().manual_seed(0)
        return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default=str(DEMO), help="SNN checkpoint (default: the committed demo model)")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    from robustsnn.allocator import tune_allocator

    tune_allocator()
    model = checkpoint.load(args.ckpt).eval()
    x, _ = _data(args.ckpt, args.n)
    with torch.no_grad():  # attack the model's own predictions at eps 0: no image ever breaks,
        y = model(x).argmax(1)  # so every attack spends all its steps on every image
    ids = torch.arange(len(y))
    s = args.steps
    attacks = {
        "pgd@triangle": PGD(model, 0.0, estimator=parse_estimator("triangle:1"), steps=s),
        "sa-pgd@assg": SAPGD(model, 0.0, estimator=parse_estimator("assg"), steps=s),
        "hart": HART(model, 0.0, steps=s),
        "rga": RGA(model, 0.0, steps=s),
        "pgd@pdsg": PGD(model, 0.0, estimator=parse_estimator("pdsg"), steps=s),
    }
    backends = ["cpp", "torch"] if kernels.get() is not None else ["torch"]
    best = {(a, b): float("inf") for a in attacks for b in backends}
    saved = kernels.backend()
    try:
        for _ in range(args.rounds):
            for b in backends:
                kernels.set_backend(b)
                for name, atk in attacks.items():
                    t = time.process_time()
                    atk(x, y, ids)
                    best[name, b] = min(best[name, b], time.process_time() - t)
    finally:
        kernels.set_backend(saved)
    print(f"model {args.ckpt}; {len(y)} images x {s} steps; 1 thread, process CPU time, min of {args.rounds} rounds")
    print(f"{'attack':<14}" + "".join(f"{b + ' s':>10}{'x pgd':>8}" for b in backends)
          + ("   torch / cpp" if len(backends) == 2 else ""))
    for name in attacks:
        row = f"{name:<14}"
        for b in backends:
            row += f"{best[name, b]:>10.2f}{best[name, b] / best['pgd@triangle', b]:>8.2f}"
        if len(backends) == 2:
            row += f"   x{best[name, 'torch'] / best[name, 'cpp']:.2f}"
        print(row)


if __name__ == "__main__":
    main()
