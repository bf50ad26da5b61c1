"""How much accuracy ANN -> SNN conversion loses, per recipe and T, before any finetuning.

One run trains (or reuses) two robust ANNs of the default model with the same budget,
one with ReLU and one with the QCFS activation (clip-floor-shift, L levels), prunes
each to the target sparsity with LWM (one finetuning epoch), then converts the dense
and the sparse ANN with every applicable recipe at each T and prints one table:

    ANN      sparsity  recipe       ANN acc   T=2   T=4   T=8   T=16   (points below the ANN)

Accuracies are clean top-1 on the first ``--eval-n`` Fashion-MNIST test images (the
same images for the ANN and its SNNs). The ANNs are the pipeline's ``ann`` and
``prune`` stages (``robustsnn pipeline ... --ann-activation relu|qcfs``), kept in
``--out`` so a rerun only converts. Results go to ``--out/conversion_loss.json``.

    python benchmarks/conversion_loss.py                      # the README's table
    python benchmarks/conversion_loss.py --train-subset 2000 --ann-epochs 1 --eval-n 500   # quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from rich.console import Console

from robustsnn import checkpoint
from robustsnn.convert import RECIPES, convert
from robustsnn.data import batches, load_dataset
from robustsnn.io import atomic_write_json
from robustsnn.pipeline import PipelineConfig, run_pipeline
from robustsnn.train import accuracy


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/bench/conversion_loss")
    p.add_argument("--train-subset", type=int, default=20000)
    p.add_argument("--ann-epochs", type=int, default=2)
    p.add_argument("--levels", type=int, default=8, help="QCFS quantisation levels L")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--time-steps", default="2,4,8,16")
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--eval-n", type=int, default=2000)
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--calib-batches", type=int, default=10)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    return p.parse_args()


def _anns(a, console) -> dict:
    """{(activation, sparsity): ANN checkpoint dir}, trained through the pipeline's first two stages."""
    out = {}
    for act in ("relu", "qcfs"):
        dense_run = Path(a.out) / f"{act}_s0"
        common = dict(train_subset=a.train_subset, ann_epochs=a.ann_epochs, ann_activation=act, ann_levels=a.levels,
                      time_steps=a.levels, eps=a.eps, stage_eval_n=0, pruning="lwm")
        run_pipeline(PipelineConfig(sparsity=0.0, **common), dense_run, progress=False, console=console,
                     stop_after="prune")
        out[(act, 0.0)] = dense_run / "prune" / "model"
        if a.sparsity > 0:
            sparse_run = Path(a.out) / f"{act}_s{round(a.sparsity * 100)}"
            cfg = PipelineConfig(sparsity=a.sparsity, ann_checkpoint=str(dense_run / "ann" / "model"), **common)
            run_pipeline(cfg, sparse_run, progress=False, console=console, stop_after="prune")
            out[(act, a.sparsity)] = sparse_run / "prune" / "model"
    return out


def main() -> None:
    a = _args()
    torch.set_num_threads(a.threads)
    console = Console()
    steps = [int(t) for t in a.time_steps.split(",")]
    recipes = [r for r in a.recipes.split(",") if r]
    train_set = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test").subset(a.eval_n)
    anns = _anns(a, console)
    path = Path(a.out) / "conversion_loss.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    done = {(r["ann"], r["sparsity"], r["recipe"], r["T"]) for r in rows}
    models = {key: checkpoint.load(ckpt).eval() for key, ckpt in anns.items()}
    ann_accs = {key: accuracy(m, test) for key, m in models.items()}
    for name in sorted(recipes, key=lambda r: r.startswith("seed")):  # the slow seed balancing last
        for (act, sparsity), ann in models.items():
            ann_acc = ann_accs[(act, sparsity)]
            if name.startswith("qcfs") and act != "qcfs":
                continue
            for T in steps:
                if (act, sparsity, name, T) in done:
                    continue
                calib = batches(train_set, 32, shuffle=True, seed=0)
                t0 = time.perf_counter()
                snn = convert(ann, calib, recipe=name, time_steps=T, n_calib_batches=a.calib_batches)
                seconds = time.perf_counter() - t0
                snn_acc = accuracy(snn, test, batch_size=250)
                rows.append({"ann": act, "sparsity": sparsity, "recipe": name, "T": T, "ann_acc": ann_acc,
                             "snn_acc": snn_acc, "gap_points": 100 * (ann_acc - snn_acc), "convert_seconds": seconds})
                console.print(f"{act:<5} s={sparsity:.2f} {name:<11} T={T:<3} ANN {ann_acc:.1%}  SNN {snn_acc:.1%}")
                atomic_write_json(path, {"command": "python " + " ".join(sys.argv), "args": vars(a),
                                         "eval_n": a.eval_n, "rows": rows})
    _print_table(rows, steps, a.eval_n, console)


def _print_table(rows, steps, n, console) -> None:
    from rich.table import Table

    se = 100 * math.sqrt(0.8 * 0.2 / n)
    t = Table(title=f"clean accuracy on {n} test images, before finetuning (s.e. of one cell ~{se:.1f} points); "
                    "in brackets: points below the ANN")
    for col in ("ANN", "sparsity", "recipe", "ANN acc", *[f"T={s}" for s in steps]):
        t.add_column(col)
    keys = sorted({(r["ann"], r["sparsity"], r["recipe"]) for r in rows}, key=lambda k: (k[0], k[1], list(RECIPES).index(k[2])))
    for act, sp, name in keys:
        cells = {r["T"]: r for r in rows if (r["ann"], r["sparsity"], r["recipe"]) == (act, sp, name)}
        ann_acc = next(iter(cells.values()))["ann_acc"]
        t.add_row(act, f"{sp:.0%}", name, f"{ann_acc:.1%}",
                  *[f"{cells[s]['snn_acc']:.1%} ({-cells[s]['gap_points']:+.1f})" if s in cells else "" for s in steps])
    console.print(t)


if __name__ == "__main__":
    main()
