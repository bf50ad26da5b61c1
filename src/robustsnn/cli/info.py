"""``robustsnn info CKPT``: what a checkpoint holds."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .. import checkpoint
from ..models import spiking_layers
from ..sparsity import sparsity_report

__all__ = ["describe", "register"]


def describe(path: str | Path) -> dict:
    """Summary of a checkpoint: config, recipe, last metrics, neurons (threshold, gain), sparsity."""
    meta = checkpoint.read_meta(path)
    model = checkpoint.load(path)
    neurons = []
    for name, n in spiking_layers(model):
        row = {"layer": name, "threshold": float(n.effective_threshold().detach())}
        if n.gain is not None:
            row["gain"] = [round(float(g), 4) for g in n.gain.detach()]
        neurons.append(row)
    history = meta.get("history") or []
    return {
        "model": meta["model"],
        "dataset": meta.get("dataset"),
        "version": meta.get("version"),
        "epoch": meta.get("epoch"),
        "recipe": meta.get("recipe"),
        "last_epoch": history[-1] if history else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "neurons": neurons,
        "sparsity": sparsity_report(model),
        "command": meta.get("command"),
    }


def register(app: typer.Typer) -> None:
    """Add the ``info`` command to ``app``."""

    @app.command("info")
    def info_cmd(ckpt: Path = typer.Argument(..., help="Checkpoint directory (or a run directory holding model/).")):
        """Show a checkpoint's model, neuron settings, thresholds, DLIF gains, sparsity and recipe."""
        d = describe(ckpt)
        con = Console()
        m = d["model"]
        con.print(f"[bold]{m['name']}[/] {m['kind'].upper()}  classes={m['num_classes']}  input={m['in_channels']}x{m['image_size']}x{m['image_size']}  parameters={d['parameters']:,}")
        if m["kind"] == "snn":
            nc = m["neuron"]
            con.print(f"neuron {nc['kind']}  T={m['time_steps']}  encoding={m['encoding']}  reset={nc['reset']}  leak={nc['leak']}  surrogate={nc['surrogate']['name']}(w={nc['surrogate']['width']})")
        con.print(f"dataset {d['dataset']}  epochs trained {d['epoch']}  robustsnn {d['version']}")
        if d["recipe"]:
            r = d["recipe"]
            con.print(f"recipe: objective {r.get('objective')} {r.get('objective_params') or ''}  optimizer {r.get('optimizer')} lr {r.get('lr')} batch {r.get('batch_size')}")
        if d["last_epoch"]:
            e = d["last_epoch"]
            extra = f"  test acc {e['test_acc']:.2%} ({e.get('test_images')} images)" if "test_acc" in e else ""
            con.print(f"last epoch: loss {e['loss']:.4f}  train acc {e['train_acc']:.2%}{extra}")
        if d["neurons"]:
            t = Table("spiking layer", "threshold", "DLIF gain a[t]")
            for row in d["neurons"]:
                t.add_row(row["layer"], f"{row['threshold']:.4f}", ", ".join(f"{g:.3f}" for g in row.get("gain", [])) or "-")
            con.print(t)
        t = Table("layer", "weights", "non-zero", "sparsity", "masked")
        for row in d["sparsity"]:
            t.add_row(row["layer"], f"{row['weights']:,}", f"{row['nonzero']:,}", f"{row['sparsity']:.1%}", "yes" if row["masked"] else "no")
        con.print(t)
        if d["command"]:
            con.print(f"command: {d['command']}")
