"""``robustsnn report RUN_DIR``: one self-contained HTML report and a Markdown summary of a run.

    robustsnn report runs/demo
    robustsnn report runs/demo --html /tmp/demo.html --md docs/demo.md --n 512
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to ``app``."""

    @app.command("report")
    def report_cmd(
        run_dir: Path = typer.Argument(..., help="Run directory (checkpoints, evaluation JSON, efficiency.json, logs)."),
        html: Optional[Path] = typer.Option(None, "--html", help="HTML file to write (default RUN_DIR/report.html)."),
        md: Optional[Path] = typer.Option(None, "--md", help="Markdown file to write (default RUN_DIR/report.md; figures go to <name>_files/ beside it)."),
        n: int = typer.Option(256, "--n", help="Test images for the efficiency measurement when the run has no efficiency.json."),
    ):
        """Write an offline HTML report and a Markdown summary: accuracy vs eps, diagnostics, spikes, sparsity, energy, memory, commands."""
        from ..report import write_report

        con = Console()
        paths = write_report(run_dir, html, md, n=n)
        if paths["efficiency"] is not None:
            con.print(f"measured the final model's efficiency: {paths['efficiency']}")
        for what, why in paths["missing"].items():
            con.print(f"[dim]not available: {what}: {why}[/]")
        for problem in paths["problems"]:
            con.print(f"[yellow]skipped[/]: {problem}")
        for w in paths["warnings"]:
            con.print(f"[bold red]WARNING[/]: {w}")
        con.print(f"written: {paths['html']}")
        con.print(f"written: {paths['md']} (+ {len(paths['images'])} figures)")
