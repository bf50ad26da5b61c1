"""``robustsnn efficiency CKPT``: spike rates, SOPs / MACs, energy and memory of a checkpoint."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .. import __version__, checkpoint
from ..data import load_dataset
from ..distributed import resolve_device
from ..errors import UsageError
from ..io import atomic_write_json
from ..metrics import EnergyModel, efficiency
from ..sparsity.storage import load_sparse

__all__ = ["efficiency_of_checkpoint", "print_report", "register"]


def efficiency_of_checkpoint(
    ckpt: str | Path,
    *,
    n: int | None = 1000,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    batch_size: int = 256,
    energy: EnergyModel = EnergyModel(),
    device: str = "cpu",
) -> dict:
    """:func:`robustsnn.metrics.efficiency` of a checkpoint on the first ``n`` images of a split.

    The data set defaults to the one the checkpoint was trained on; ``device``: cpu, cuda, cuda:N or auto.
    """
    meta = checkpoint.read_meta(ckpt)
    name = dataset or meta.get("dataset")
    if not name:
        raise UsageError(f"{ckpt} does not record its data set; pass --dataset")
    data = load_dataset(name, split, data_dir=data_dir)
    model = load_sparse(ckpt).to(resolve_device(device))
    report = efficiency(model, data, energy, n=n, batch_size=batch_size)
    return {"checkpoint": str(ckpt), "dataset": name, "split": split, "model": meta["model"],
            "version": __version__, **report}


def _num(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.2f}{unit}"
    return f"{v:.1f}"


def print_report(r: dict, console: Console | None = None) -> None:
    """Rich tables of an efficiency report."""
    con = console or Console()
    con.print(f"{r.get('checkpoint', 'model')}: {r['kind'].upper()}"
              + (f" T={r['time_steps']}" if r["time_steps"] else "") + f", {r['images']} images"
              + (f" of {r['dataset']} {r['split']}" if "dataset" in r else ""))
    if r["spikes"]:
        t = Table("spiking layer", "neurons", "rate", "rate per step")
        for row in r["spikes"]["layers"]:
            t.add_row(row["layer"], f"{row['neurons']:,}", f"{row['rate']:.4f}",
                      " ".join(f"{v:.3f}" for v in row["rate_per_step"]))
        t.add_row("[bold]all[/]", "", f"{r['spikes']['rate']:.4f}", " ".join(f"{v:.3f}" for v in r["spikes"]["rate_per_step"]))
        con.print(t)
    snn = r["kind"] == "snn"
    cols = ["layer", "input", "non-zero weights", "ANN MACs"] + (["SNN MACs", "SOPs", "SOPs dense"] if snn else [])
    t = Table(*cols, title="operations per image")
    for row in r["ops"]["layers"]:
        cells = [row["layer"], row["input"], f"{row['nonzero']:,} / {row['weights']:,}", _num(row["ann_macs"])]
        if snn:
            cells += [_num(row["macs"]), _num(row["sops"]), _num(row["sops_dense"])]
        t.add_row(*cells)
    con.print(t)
    e = r["energy"]
    t = Table("variant", "MACs", "SOPs", "energy", "x sparse SNN" if snn else "x ANN",
              title=f"energy per image (MAC {e['model']['e_mac_pj']} pJ, AC {e['model']['e_ac_pj']} pJ)")
    for name, v in e["variants"].items():
        ratio = e["savings"][name]
        t.add_row(name.replace("_", " "), _num(v["macs"]), _num(v["sops"]), f"{v['energy_pj'] / 1e6:.4f} uJ",
                  "-" if ratio is None else f"{ratio:.2f}")
    con.print(t)
    m = r["memory"]
    con.print(f"memory: {m['nonzero']:,} of {m['weights']:,} conv/linear weights non-zero"
              + (f" ({m['weight_ratio']:.1f}x fewer)" if m["weight_ratio"] else "")
              + f"; dense fp32 {m['dense_bytes'] / 1024:,.1f} KiB, sparse {m['sparse_bytes'] / 1024:,.1f} KiB"
              + (f" ({m['bytes_ratio']:.1f}x smaller)" if m["bytes_ratio"] else ""))


def register(app: typer.Typer) -> None:
    """Add the ``efficiency`` command to ``app``."""

    @app.command("efficiency")
    def efficiency_cmd(
        ckpt: Path = typer.Argument(..., help="Checkpoint directory (dense or exported --sparse)."),
        n: int = typer.Option(1000, "--n", help="Number of images (the first n of the split)."),
        dataset: Optional[str] = typer.Option(None, help="Data set (default: the checkpoint's)."),
        data_dir: Optional[str] = typer.Option(None, help="Folder holding the data set files."),
        split: str = typer.Option("test", help="train or test."),
        batch_size: int = typer.Option(256),
        e_mac: float = typer.Option(4.6, help="Energy of one MAC in pJ (45 nm default)."),
        e_ac: float = typer.Option(0.9, help="Energy of one accumulate in pJ (45 nm default)."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON here."),
        device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
    ):
        """Spike rates per layer and step, MACs / SOPs, energy (SNN vs dense SNN vs ANN) and memory."""
        r = efficiency_of_checkpoint(ckpt, n=n, dataset=dataset, data_dir=data_dir, split=split, device=device,
                                     batch_size=batch_size, energy=EnergyModel(e_mac, e_ac))
        print_report(r)
        if json_out is not None:
            command = "robustsnn " + " ".join(shlex.quote(a) for a in sys.argv[1:])
            atomic_write_json(json_out, {"command": command, **r})
            Console().print(f"written: {json_out}")
