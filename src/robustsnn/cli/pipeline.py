"""``robustsnn pipeline``: robust ANN -> prune -> convert -> SNN finetune -> evaluate -> report."""

from __future__ import annotations

import shlex
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .. import distributed as D
from ..pipeline import PipelineConfig, run_pipeline
from .config_file import merge_options, read_config

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``pipeline`` command to ``app``."""

    @app.command("pipeline")
    def pipeline_cmd(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML/TOML file of pipeline options; flags override it."),
        out: Path = typer.Option(Path("runs/pipeline"), "--out", "-o", help="Run directory (re-running continues it)."),
        sparsity: Optional[float] = typer.Option(None, help="Target sparsity in [0, 1): 0.9 keeps 10 % of the weights."),
        pruning: Optional[str] = typer.Option(None, help="hydra, lwm, lwm-global or random."),
        prune_first: Optional[bool] = typer.Option(None, "--prune-first/--keep-first", help="Prune the first conv (the SNN's encoder) too (default) or keep it dense."),
        prune_last: Optional[bool] = typer.Option(None, "--prune-last/--keep-last", help="Prune the readout layer too (default) or keep it dense."),
        baseline: Optional[str] = typer.Option(None, help="Instead of conversion: end-to-end sparse AT of the SNN with a 'random' or the 'ann-mask' mask."),
        ann: Optional[str] = typer.Option(None, "--ann", help="Reuse this robust ANN checkpoint instead of pretraining."),
        dataset: Optional[str] = typer.Option(None),
        data_dir: Optional[str] = typer.Option(None),
        model: Optional[str] = typer.Option(None, help="Architecture (default cnn)."),
        eps: Optional[float] = typer.Option(None, help="Training and evaluation budget (pixel units)."),
        time_steps: Optional[int] = typer.Option(None, "--time-steps", "-T", help="T of the SNN (seed: 8)."),
        conversion_recipe: Optional[str] = typer.Option(None, "--recipe", help="Conversion recipe: auto (default), seed, seed-soft, rate, rate-calib, qcfs, qcfs-calib."),
        ann_activation: Optional[str] = typer.Option(None, "--ann-activation", help="ANN twin's activation: qcfs (default) or relu."),
        stage_eval_n: Optional[int] = typer.Option(None, help="Test images of the per-stage clean/robust accuracy (0 = off)."),
        ann_epochs: Optional[int] = typer.Option(None),
        snn_epochs: Optional[int] = typer.Option(None),
        train_subset: Optional[int] = typer.Option(None, help="Training images of the ANN stages."),
        eval_preset: Optional[str] = typer.Option(None, help="Evaluation preset (default standard); changing it on a finished run re-runs only the evaluation."),
        eval_n: Optional[int] = typer.Option(None, help="Test images of the evaluation."),
        efficiency_n: Optional[int] = typer.Option(None, help="Test images of the spike-rate / energy measurement."),
        seed: Optional[int] = typer.Option(None),
        device: Optional[str] = typer.Option(None, help="cpu (default), cuda, cuda:N or auto; under torchrun each rank's GPU."),
        restart: bool = typer.Option(False, "--restart", help="Delete the run directory first."),
        no_progress: bool = typer.Option(False, "--no-progress"),
    ):
        """Sparse robust SNN by conversion, as resumable stages in one folder (re-run to continue)."""
        flags = {k: v for k, v in locals().items() if k not in ("config", "out", "restart", "no_progress", "ann")}
        flags["ann_checkpoint"] = ann
        opts = merge_options(asdict(PipelineConfig()), read_config(config), flags)
        cfg = PipelineConfig.from_dict(opts)
        D.setup(cfg.device)  # under torchrun every rank runs the stages, rank 0 writes
        if restart and out.exists() and D.is_main():
            shutil.rmtree(out)
        D.barrier()
        command = "robustsnn " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        console = Console(quiet=not D.is_main())
        state = run_pipeline(cfg, out, command=command, progress=not no_progress, console=console)
        for s in state["stages"]:
            extra = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items()
                              if k not in ("name", "status", "seconds", "layers", "recipe", "accuracy"))
            if "accuracy" in s:
                a = s["accuracy"]
                extra = f"clean {a['clean']:.1%}, robust {a['robust']:.1%} (n={a['n']}) " + extra
            console.print(f"  {s['name']:<10} {s['seconds']:>7.0f} s  {extra}")
        console.print(f"[bold green]pipeline finished[/]: {out}")
