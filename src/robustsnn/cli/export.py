"""``robustsnn export CKPT OUT [--sparse | --nir]``: re-write a checkpoint (compact sparse form) or write it as NIR."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .. import checkpoint
from ..sparsity.storage import export_sparse, load_sparse, plan_state_dict

__all__ = ["export", "register"]

_OWN_KEYS = ("format", "format_version", "version", "model", "sparse", "sparse_bytes", "dense_bytes")


def export(ckpt: str | Path, out: str | Path, sparse: bool = True) -> dict:
    """Write ``ckpt`` to ``out``: packed sparse (CSR / bitmap per layer) or plain dense.

    Returns:
        The storage plan of :func:`robustsnn.sparsity.storage.plan_state_dict` plus ``"out"``,
        ``"file_bytes"`` (size of the written weights file) and ``"sparse"``.
    """
    if sparse:
        return {**export_sparse(ckpt, out), "sparse": True}
    meta = checkpoint.read_meta(ckpt)
    model = load_sparse(ckpt)
    path = checkpoint.save(out, model, **{k: v for k, v in meta.items() if k not in _OWN_KEYS})
    plan = plan_state_dict(model.state_dict())
    return {**plan, "out": str(path), "file_bytes": (path / checkpoint.WEIGHTS).stat().st_size, "sparse": False}


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to ``app``."""

    @app.command("export")
    def export_cmd(
        ckpt: Path = typer.Argument(..., help="Checkpoint directory (or a run directory holding model/)."),
        out: Path = typer.Argument(..., help="Directory to write (replaced atomically)."),
        sparse: bool = typer.Option(False, "--sparse", help="Pack conv/linear weights as CSR or bitmap, whichever is smaller."),
        to_nir: bool = typer.Option(False, "--nir", help="Write the SNN as a NIR graph file OUT (robustsnn.interop.nirgraph; needs the nir package)."),
        dt: float = typer.Option(1e-4, "--dt", help="With --nir: the Euler step that maps the leak to NIR time constants."),
    ):
        """Re-write a checkpoint; with --sparse store only the non-zero weights plus their indices; --nir writes NIR."""
        con = Console()
        if to_nir:
            from ..interop.nirgraph import _nir, to_nir as graph_of

            graph = graph_of(checkpoint.load(ckpt), dt=dt)
            _nir().write(out, graph)
            con.print(f"NIR graph with {len(graph.nodes)} nodes (input after normalisation mean={graph.metadata['mean']}, "
                      f"std={graph.metadata['std']}; T={graph.metadata['time_steps']}): {out}")
            return
        r = export(ckpt, out, sparse=sparse)
        if sparse:
            t = Table("tensor", "shape", "non-zero", "encoding", "dense", "stored")
            for key, p in r["tensors"].items():
                t.add_row(key, "x".join(map(str, p["shape"])), f"{p['nonzero']:,} / {p['numel']:,}", p["encoding"],
                          _kib(p["dense_bytes"]), _kib(p["sparse_bytes"]))
            con.print(t)
            ratio = r["dense_bytes"] / r["sparse_bytes"] if r["sparse_bytes"] else float("nan")
            con.print(f"tensors: dense fp32 {_kib(r['dense_bytes'])} -> sparse {_kib(r['sparse_bytes'])} "
                      f"({ratio:.1f}x smaller); weights file {_kib(r['file_bytes'])}")
        else:
            con.print(f"dense checkpoint, weights file {_kib(r['file_bytes'])}")
        con.print(f"written: {r['out']}")
