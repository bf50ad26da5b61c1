"""``robustsnn report``: one readable report of a run directory, as HTML and Markdown.

>>> from robustsnn.report import write_report
>>> paths = write_report("runs/demo")                    # doctest: +SKIP
>>> paths["html"], paths["md"]                            # doctest: +SKIP
(PosixPath('runs/demo/report.html'), PosixPath('runs/demo/report.md'))

The HTML is one self-contained file (inline CSS, figures as base64 PNG data
URIs, no script, no web fonts): it opens offline. The Markdown links its
figures, written to ``<md stem>_files/`` next to it (``report_files/``).

Sections: a summary (clean and robust accuracy at each eps, sparsity, energy
and memory against the dense SNN and the ANN, diagnostics), the diagnostics'
warnings in red, accuracy against eps per attack and estimator, which ensemble
member broke how many samples, clean and robust accuracy after each stage of a
pipeline run (robust ANN, pruned ANN, converted SNN, finetuned SNN), spike rates per layer and time step, per-layer
sparsity, energy and memory, training curves, and the exact commands and
configuration. Inputs that are missing make their section say so; see
:mod:`robustsnn.report.collect` for what is read.
"""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_write
from .collect import RunData, collect
from .document import Document, build
from .html import render_html
from .markdown import image_name, render_markdown

__all__ = ["write_report", "collect", "build", "render_html", "render_markdown", "RunData", "Document"]


def write_report(
    run_dir: str | Path,
    out_html: str | Path | None = None,
    out_md: str | Path | None = None,
    n: int = 256,
    *,
    compute: bool = True,
) -> dict:
    """Write the report of ``run_dir`` as a self-contained HTML file and a Markdown file.

    Args:
        run_dir: a run directory (checkpoints, evaluation JSON, efficiency.json, logs, pipeline.json).
        out_html: HTML path (default ``RUN_DIR/report.html``).
        out_md: Markdown path (default ``RUN_DIR/report.md``); its figures go to
            ``<stem>_files/`` beside it.
        n: test images for the efficiency measurement when the run has none.
        compute: measure the final SNN's efficiency when missing (saved as ``RUN_DIR/efficiency.json``).
    Returns:
        ``{"html": Path, "md": Path, "images": [Path], "efficiency": Path | None (written now),
        "missing": {section: why}, "warnings": [message], "problems": [str]}``.
    Raises:
        UsageError: ``run_dir`` is not a directory, holds no robustsnn output, or ``n`` < 1.
    """
    from ..errors import UsageError

    run_dir = Path(run_dir)
    html_path = Path(out_html) if out_html is not None else run_dir / "report.html"
    md_path = Path(out_md) if out_md is not None else run_dir / "report.md"
    files_dir = md_path.parent / f"{md_path.stem}_files"
    eff_before = (run_dir / "efficiency.json").exists()
    data = collect(run_dir, n=n, compute=compute, skip=[files_dir])
    if data.empty:
        raise UsageError(
            f"{run_dir} holds no robustsnn output (no checkpoint, evaluation JSON, efficiency.json, log.json or "
            "pipeline.json); give the directory that robustsnn train / evaluate wrote"
        )
    doc = build(data)

    images = []
    for key, png in doc.images.items():
        images.append(atomic_write(files_dir / image_name(key), lambda p, png=png: p.write_bytes(png)))
    if files_dir.is_dir():  # figures of an earlier report that this one no longer has
        keep = {p.name for p in images}
        for old in files_dir.glob("*.png"):
            if old.name not in keep:
                old.unlink(missing_ok=True)
    html = render_html(doc)
    md = render_markdown(doc, files_dir.name if files_dir.parent == md_path.parent else str(files_dir))
    atomic_write(html_path, lambda p: p.write_text(html, encoding="utf-8"))
    atomic_write(md_path, lambda p: p.write_text(md, encoding="utf-8"))
    written_eff = run_dir / "efficiency.json"
    return {
        "html": html_path,
        "md": md_path,
        "images": images,
        "efficiency": written_eff if (not eff_before and written_eff.exists()) else None,
        "missing": dict(data.missing),
        "warnings": [w for _, w in data.warnings],
        "problems": list(data.problems),
    }
