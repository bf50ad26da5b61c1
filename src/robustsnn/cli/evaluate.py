"""``robustsnn evaluate CKPT``: robust accuracy under an attack ensemble, with self-checks.

    robustsnn evaluate runs/train/model --preset standard --eps 0.1 --n 1000
    robustsnn evaluate runs/train/model --eps 0.05,0.1 --eps 0.2 --out result.json

Prints a table per budget (clean, each member's running accuracy, the
ensemble's worst case), the diagnostics, and writes every number to a JSON file.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import UsageError

__all__ = ["register", "print_result", "default_out"]


def default_out(ckpt: Path, preset: str) -> Path:
    """``runs/x/model`` -> ``runs/x/eval-<preset>.json`` (next to the checkpoint, in its run directory)."""
    ckpt = Path(ckpt)
    base = ckpt.parent if ckpt.name == "model" or ckpt.is_dir() else ckpt.parent.parent
    return base / f"eval-{preset}.json"


def _eps_values(values: list[str]) -> list[float]:
    from ..evaluate import _parse_eps

    try:
        return _parse_eps(",".join(str(v) for v in values))
    except ValueError as e:
        raise UsageError(f"--eps: {e}") from None


def print_result(res, console: Console) -> None:
    """The per-budget tables and the diagnostics of an :class:`~robustsnn.evaluate.EvalResult`."""
    for r in res.results:
        title = f"eps = {r.eps:g} ({res.norm}), {res.n} samples, preset {res.preset}"
        if r.calibration:
            title += f", calibrated estimator {r.calibration['estimator']}"
        t = Table(title=title, title_justify="left")
        t.add_column("#", justify="right")
        t.add_column("member", overflow="fold")
        t.add_column("attacked", justify="right")
        t.add_column("broke", justify="right")
        t.add_column("accuracy after", justify="right")
        if any(m.get("alone_acc") is not None for m in r.members):
            t.add_column("alone", justify="right")
        t.add_column("seconds", justify="right")
        alone = any(m.get("alone_acc") is not None for m in r.members)
        t.add_row("", "clean", "", "", f"{r.clean_acc:.2%}", *([""] if alone else []), "")
        for m in r.members:
            row = [str(m["index"]), m["label"], str(m["attacked"]), str(m["broke"]),
                   "skipped" if m["skipped"] else f"{m['running_acc']:.2%}"]
            if alone:
                row.append(f"{m['alone_acc']:.2%}" if m.get("alone_acc") is not None else "")
            row.append(f"{m['seconds']:.1f}")
            t.add_row(*row)
        t.add_row("", "[bold]ensemble (worst case)[/]", "", "", f"[bold]{r.robust_acc:.2%}[/]", *([""] if alone else []),
                  f"{r.seconds:.1f}")
        console.print(t)
    checks = res.diagnostics.get("checks", [])
    if checks:
        t = Table(title="diagnostics (gradient masking)", title_justify="left")
        t.add_column("check")
        t.add_column("eps", justify="right")
        t.add_column("status")
        t.add_column("detail")
        for c in checks:
            status = "n/a" if c["tripped"] is None else ("[bold red]TRIPPED[/]" if c["tripped"] else "[green]ok[/]")
            detail = c["message"].split(": ")[0] + " (see warning)" if c["tripped"] else c["message"]
            t.add_row(c["name"], "" if c.get("eps") is None else f"{c['eps']:g}", status, detail)
        console.print(t)
    for note in res.notes:
        console.print(f"note: {note}")
    for w in res.warnings:
        console.print(f"[bold yellow]WARNING[/]: {w}")


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to ``app``."""

    @app.command("evaluate")
    def evaluate_cmd(
        ckpt: Path = typer.Argument(..., help="Checkpoint directory (or a run directory holding model/)."),
        preset: str = typer.Option("standard", "--preset", "-p", help="quick, pgd-ens, standard, autoattack or full (see robustsnn.attacks.presets)."),
        eps: List[str] = typer.Option(["0.1"], "--eps", "-e", help="Budget(s) in pixel units; repeat or comma-separate: --eps 0.05,0.1 (8/255 works)."),
        norm: str = typer.Option("Linf", help="Linf or L2."),
        n: int = typer.Option(1000, "--n", "-n", help="Evaluate the first N test images."),
        batch_size: int = typer.Option(256, help="Samples per attack call."),
        data: Optional[str] = typer.Option(None, "--data", help="Data set (default: the checkpoint's)."),
        data_dir: Optional[str] = typer.Option(None, help="Folder holding the data set files."),
        seed: int = typer.Option(0, help="Seed of all attack randomness."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="JSON result file (default: eval-PRESET.json next to the checkpoint)."),
        transfer_from: Optional[Path] = typer.Option(None, help="Source checkpoint of the transfer attack (preset full; default: the ANN twin)."),
        votes: Optional[int] = typer.Option(None, help="Forward passes per verdict (default: 9 for Poisson models, else 1)."),
        eot: Optional[int] = typer.Option(None, help="EOT gradient samples (default: 8 for Poisson models, else 1)."),
        early_exit: bool = typer.Option(True, "--early-exit/--no-early-exit", help="Attack only samples not yet broken (same verdicts, faster)."),
        diagnostics: bool = typer.Option(True, "--diagnostics/--no-diagnostics", help="Gradient-masking checks."),
        calibration_size: int = typer.Option(64, help="Samples for estimator calibration and diagnostics."),
        device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N or auto (default cpu; under torchrun: each rank's GPU)."),
        precision: str = typer.Option("fp32", help="fp32 (default) or bf16 (autocast; neurons stay fp32)."),
        cache: Optional[Path] = typer.Option(None, "--cache", help="Keep finished members here so a killed run resumes and a longer preset reuses them (default: eval-cache/ next to --out)."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the member cache."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No live progress bar."),
    ):
        """Robust accuracy of a checkpoint under an attack ensemble; prints tables, writes JSON."""

        from .. import checkpoint
        from .. import distributed as D
        from ..attacks.cache import CACHE_DIRNAME
        from ..attacks.presets import get_preset
        from ..data import dataset_info
        from ..evaluate import evaluate
        from ..precision import check_precision

        dev = D.setup(device or "cpu")  # under torchrun: join the group; the attacks are split across the ranks
        console = Console(quiet=not D.is_main())
        command = "robustsnn " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        try:
            get_preset(preset)
        except ValueError as e:
            raise UsageError(str(e)) from None
        check_precision(precision)
        eps_list = _eps_values(eps)
        if n < 1 or batch_size < 1:
            raise UsageError(f"--n and --batch-size must be >= 1, got {n} and {batch_size}")
        meta = checkpoint.read_meta(ckpt)
        model = checkpoint.load(ckpt)
        if device:
            try:
                model = model.to(dev)
            except (RuntimeError, AssertionError) as e:
                raise UsageError(f"--device {device}: {e}") from None
        name = data or meta.get("dataset") or "fashion-mnist"
        info = dataset_info(name)
        cfg = model.config
        if (info.num_classes, info.in_channels, info.image_size) != (cfg.num_classes, cfg.in_channels, cfg.image_size):
            raise UsageError(
                f"the checkpoint expects {cfg.in_channels}x{cfg.image_size}x{cfg.image_size} images and "
                f"{cfg.num_classes} classes, {info.name} has {info.in_channels}x{info.image_size}x{info.image_size} "
                f"and {info.num_classes}; pass the --data it was trained on ({meta.get('dataset')})"
            )
        from ..data import load_dataset

        test = load_dataset(info.name, "test", data_dir=data_dir)
        out_path = out or default_out(ckpt, preset)
        console.print(
            f"evaluating {cfg.kind.upper()} [bold]{cfg.name}[/] ({ckpt}) on {info.name}: first {min(n, len(test))} test images, "
            f"preset [bold]{preset}[/], eps {', '.join(f'{e:g}' for e in eps_list)} ({norm}), seed {seed}"
        )
        kwargs = dict(
            preset=preset, eps=eps_list, norm=norm, n=n, batch_size=batch_size, seed=seed, votes=votes, eot=eot,
            early_exit=early_exit, diagnostics=diagnostics, calibration_size=calibration_size,
            transfer_from=transfer_from, command=command, dataset=info.name, warn=False,
            cache_dir=None if no_cache else (cache or out_path.parent / CACHE_DIRNAME), precision=precision,
        )
        try:
            if no_progress or not D.is_main():
                res = evaluate(model, test, **kwargs)
            else:
                with Progress(
                    TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True,
                ) as bar:
                    task = bar.add_task("starting", total=1)

                    def on_progress(desc: str, done: float, total: float) -> None:
                        bar.update(task, description=desc[:70], completed=round(done, 2), total=round(total, 2))

                    res = evaluate(model, test, progress=on_progress, **kwargs)
        except ValueError as e:
            if isinstance(e, UsageError):
                raise
            raise UsageError(str(e.args[0] if e.args else e)) from None
        res.model = res.model or meta.get("model")
        print_result(res, console)
        path = res.save(out_path) if D.is_main() else out_path
        D.barrier()
        best = ", ".join(f"eps={r.eps:g}: {r.robust_acc:.2%}" for r in res.results)
        console.print(f"[bold green]robust accuracy[/] ({res.preset}, n={res.n}): {best}   clean {res.clean_acc:.2%}")
        console.print(f"result: {path}  ({res.timings['total']:.0f} s)")
