"""``robustsnn prune CKPT``: prune a checkpoint to a target sparsity (LWM, global LWM, random, HYDRA).

    robustsnn prune runs/ann/model --sparsity 0.9 --method lwm --out runs/ann-lwm90
    robustsnn prune runs/ann/model --sparsity 0.9 --method hydra --epochs 10 \\
        --objective pgd --eps 0.1 --finetune-epochs 10 --out runs/ann-hydra90

The pruned model is written to ``OUT/model`` (``robustsnn.load`` and ``robustsnn
info`` read ``OUT`` or ``OUT/model``). HYDRA trains the scores in ``OUT/scores`` and
then finetunes the weights with the mask fixed into ``OUT``; any method can be
followed by finetuning (``--finetune-epochs``).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.console import Console
from rich.table import Table

from .. import checkpoint
from ..data import load_dataset
from ..errors import UsageError
from ..sparsity import sparsity_report
from ..sparsity.hydra import prune_hydra
from ..sparsity.prune import check_sparsity, prune_lwm, prune_random
from ..train import TrainConfig, accuracy, fit, make_objective
from .train import objective_params

__all__ = ["METHODS", "prune_checkpoint", "register"]

METHODS = ("lwm", "lwm-global", "random", "hydra")


def _dataset_of(meta: dict, data: str | None) -> str:
    return data or meta.get("dataset") or "fashion-mnist"


def prune_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    *,
    sparsity: float,
    method: str = "lwm",
    first: bool = True,
    last: bool = True,
    seed: int = 0,
    data: str | None = None,
    data_dir: str | None = None,
    epochs: int = 10,
    lr: float = 0.1,
    finetune_epochs: int | None = None,
    finetune_lr: float = 0.01,
    batch_size: int = 64,
    weight_decay: float = 5e-4,
    train_subset: int | None = None,
    test_subset: int | None = 1000,
    objective: str = "natural",
    params: dict | None = None,
    train_bn: bool = False,
    device: str = "cpu",
    progress: bool = True,
    command: str | None = None,
    console: Console | None = None,
) -> dict:
    """Prune the model in ``ckpt`` and write it to ``out/model``; returns a summary dict.

    ``epochs``/``lr`` are the HYDRA score phase (HYDRA: SGD lr 0.1, cosine);
    ``finetune_epochs``/``finetune_lr`` the weight finetuning with the mask fixed
    (default: ``epochs`` for HYDRA, 0 otherwise). Training uses ``objective`` with
    ``params`` (see ``robustsnn train``).
    """
    console = console or Console()
    if method not in METHODS:
        raise UsageError(f"unknown pruning method {method!r}; choose one of {', '.join(METHODS)}")
    s = check_sparsity(sparsity)
    meta = checkpoint.read_meta(ckpt)
    model = checkpoint.load(ckpt)
    out = Path(out)
    params = dict(params or {})
    if finetune_epochs is None:
        finetune_epochs = epochs if method == "hydra" else 0
    if finetune_epochs < 0 or (method == "hydra" and epochs < 1):
        raise UsageError("--epochs must be >= 1 for hydra and --finetune-epochs >= 0")
    needs_data = method == "hydra" or finetune_epochs > 0
    info = {"method": method, "sparsity": s, "first": first, "last": last, "seed": seed, "source": str(ckpt)}
    base_meta = {"dataset": meta.get("dataset"), "command": command, "pruning": info}

    train_set = test_set = None
    if needs_data:
        name = _dataset_of(meta, data)
        train_set = load_dataset(name, "train", data_dir=data_dir)
        test_set = load_dataset(name, "test", data_dir=data_dir)
        base_meta["dataset"] = train_set.info.name
        make_objective(objective, **params)  # fail fast on a bad option

    def recipe(n_epochs: int, rate: float) -> TrainConfig:
        return TrainConfig(epochs=n_epochs, batch_size=batch_size, lr=rate, weight_decay=weight_decay, seed=seed,
                           train_subset=train_subset, test_subset=test_subset, objective=objective,
                           objective_params=params, device=device)

    torch.manual_seed(seed)
    console.print(f"pruning {ckpt} to {s:.1%} sparsity with {method} -> {out / 'model'}")
    info["finetune_epochs"] = finetune_epochs
    if method == "hydra":
        info["score_epochs"] = epochs
        result = prune_hydra(model, s, train_set, test_set, recipe(epochs, lr), out,
                             finetune_config=recipe(finetune_epochs, finetune_lr) if finetune_epochs else None,
                             first=first, last=last, train_bn=train_bn, progress=progress, meta=base_meta)
        reached = result["sparsity"]
    else:
        if method == "random":
            reached = prune_random(model, s, torch.Generator().manual_seed(seed), first=first, last=last)
        else:
            reached = prune_lwm(model, s, "global" if method == "lwm-global" else "layer", first=first, last=last)
        info["layers"] = reached
        if finetune_epochs:
            fit(model, train_set, test_set, recipe(finetune_epochs, finetune_lr), out, progress=progress, meta=base_meta)
    info["layers"] = reached
    model.eval()
    if not finetune_epochs:  # otherwise fit wrote OUT/model (with the pruning record)
        kept = {k: meta[k] for k in ("recipe", "history", "epoch") if k in meta}
        checkpoint.save(out / "model", model, **kept, **base_meta)
    rows = sparsity_report(model)
    total = sum(r["weights"] for r in rows)
    nonzero = sum(r["nonzero"] for r in rows)
    summary = {"out": str(out), "method": method, "sparsity": 1 - nonzero / max(1, total), "layers": reached}
    if test_set is not None:
        summary["test_acc"] = accuracy(model, test_set if test_subset is None else test_set.subset(test_subset))
    return summary


def print_summary(summary: dict, model_path: Path, console: Console) -> None:
    t = Table("layer", "sparsity")
    for name, sp in summary["layers"].items():
        t.add_row(name, f"{sp:.2%}")
    console.print(t)
    line = f"[bold green]overall sparsity[/]: {summary['sparsity']:.2%} of the conv/linear weights"
    if "test_acc" in summary:
        line += f"; test accuracy {summary['test_acc']:.2%}"
    console.print(line)
    console.print(f"checkpoint: {model_path}")


def register(app: typer.Typer) -> None:
    """Add the ``prune`` command to ``app``."""

    @app.command("prune")
    def prune_cmd(
        ckpt: Path = typer.Argument(..., help="Checkpoint to prune (directory, or a run directory holding model/)."),
        sparsity: float = typer.Option(..., "--sparsity", "-s", help="Fraction of conv/linear weights removed, in [0, 1), e.g. 0.9."),
        method: str = typer.Option("lwm", help="lwm (layer-wise magnitude), lwm-global, random, or hydra."),
        out: Path = typer.Option(..., "--out", "-o", help="Run directory; the pruned model goes to OUT/model."),
        first: bool = typer.Option(True, "--prune-first/--keep-first", help="Prune the first conv layer too."),
        last: bool = typer.Option(True, "--prune-last/--keep-last", help="Prune the last (readout) layer too."),
        seed: int = typer.Option(0, help="Seed of random masks, data order and attacks."),
        data: Optional[str] = typer.Option(None, "--data", "--dataset", help="Data set for HYDRA/finetuning (default: the checkpoint's)."),
        data_dir: Optional[str] = typer.Option(None, help="Folder holding the data set files."),
        epochs: int = typer.Option(10, help="HYDRA score-training epochs."),
        lr: float = typer.Option(0.1, help="HYDRA score learning rate (cosine to 0)."),
        finetune_epochs: Optional[int] = typer.Option(None, help="Weight finetuning epochs with the mask fixed (default: --epochs for hydra, 0 otherwise)."),
        finetune_lr: float = typer.Option(0.01, help="Finetuning learning rate."),
        batch_size: int = typer.Option(64),
        weight_decay: float = typer.Option(5e-4),
        train_subset: Optional[int] = typer.Option(None, help="Train on this many images (seeded subset)."),
        test_subset: Optional[int] = typer.Option(1000, help="Test images for the per-epoch and final accuracy."),
        objective: str = typer.Option("natural", help="Training objective: natural, pgd, trades, mart, rfgsm, ..."),
        eps: Optional[float] = typer.Option(None, help="Attack budget in pixel units (L-inf), e.g. 0.1."),
        attack_steps: Optional[int] = typer.Option(None, help="Inner attack steps."),
        step_size: Optional[float] = typer.Option(None, help="Inner attack step size."),
        beta: Optional[float] = typer.Option(None, help="TRADES / MART weight."),
        train_bn: bool = typer.Option(False, "--train-bn", help="HYDRA: train BN affine parameters with the scores."),
        device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No live progress bar."),
    ):
        """Prune a checkpoint to a target sparsity; masks are stored and kept by every later step."""
        console = Console()
        params = objective_params({"eps": eps, "attack_steps": attack_steps, "step_size": step_size, "beta": beta})
        command = "robustsnn " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        summary = prune_checkpoint(
            ckpt, out, sparsity=sparsity, method=method, first=first, last=last, seed=seed, data=data,
            data_dir=data_dir, epochs=epochs, lr=lr, finetune_epochs=finetune_epochs, finetune_lr=finetune_lr,
            batch_size=batch_size, weight_decay=weight_decay, train_subset=train_subset, test_subset=test_subset,
            objective=objective, params=params, train_bn=train_bn, device=device, progress=not no_progress,
            command=command, console=console,
        )
        print_summary(summary, out / "model", console)
