"""``robustsnn convert CKPT``: ANN checkpoint -> SNN checkpoint (threshold balancing + BN adaptation).

    robustsnn convert runs/ann-lwm90/model --out runs/snn-lwm90 --time-steps 8            # recipe auto
    robustsnn convert runs/ann-lwm90/model --out runs/snn-seed --recipe seed --scale 0.3  # the reference method

``--recipe`` names a :data:`robustsnn.convert.RECIPES` entry (``auto``: ``qcfs-calib`` for a
QCFS ANN, ``rate-calib`` for a ReLU ANN); the other conversion flags override its fields.

Calibration uses ``--calib-batches`` shuffled training batches of
``--calib-batch-size`` images (no augmentation), simulated for ``--calib-steps``
steps. The SNN is written to ``OUT/model`` and its clean accuracy on
``--eval-images`` test images is printed next to the ANN's. Finetune it afterwards
(DESIGN.md section 6, step 4) with the trainer.
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
from ..convert import convert, resolve_recipe
from ..data import batches, load_dataset
from ..distributed import resolve_device
from ..errors import UsageError
from ..models import spiking_layers
from ..train import accuracy

__all__ = ["convert_checkpoint", "register"]


def convert_checkpoint(
    ckpt: str | Path,
    out: str | Path,
    *,
    time_steps: int = 8,
    recipe: str = "auto",
    reset: str | None = None,
    percentile: float | None = None,
    calib_steps: int | None = None,
    scale: float | None = None,
    calib_batches: int = 10,
    calib_batch_size: int = 32,
    learn_threshold: bool = True,
    threshold_floor: float = 0.03,
    bn_adapt: bool | None = None,
    bias_correction: bool | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    eval_images: int = 1000,
    command: str | None = None,
    console: Console | None = None,
    device: str = "cpu",
) -> dict:
    """Convert the ANN in ``ckpt`` and write the SNN to ``out/model``; returns a summary dict.

    ``device``: where calibration runs (cpu, cuda, cuda:N or auto)."""
    console = console or Console()
    meta = checkpoint.read_meta(ckpt)
    ann = checkpoint.load(ckpt).to(resolve_device(device))
    if ann.config.kind != "ann":
        raise UsageError(f"{ckpt} holds an SNN; convert takes an ANN checkpoint (robustsnn train --kind ann)")
    if calib_batch_size < 1 or eval_images < 0:
        raise UsageError("--calib-batch-size must be >= 1 and --eval-images >= 0")
    name = data or meta.get("dataset") or "fashion-mnist"
    train_set = load_dataset(name, "train", data_dir=data_dir)
    shape = (ann.config.in_channels, ann.config.image_size, ann.config.image_size)
    if tuple(train_set.images.shape[1:]) != shape:
        raise UsageError(f"{train_set.info.name} images are {tuple(train_set.images.shape[1:])} but the model "
                         f"takes {shape}; pick the data set it was trained on with --data")
    calib = batches(train_set, calib_batch_size, shuffle=True, seed=seed)
    chosen = resolve_recipe(ann, recipe, reset=reset, percentile=percentile, calib_time_steps=calib_steps,
                            scale=scale, bn_adapt=bn_adapt, bias_correction=bias_correction)
    console.print(f"converting {ckpt} to an SNN (IF, recipe {chosen.name}, T={time_steps}) with {calib_batches} x "
                  f"{calib_batch_size} {train_set.info.name} images")
    settings = {"time_steps": time_steps, "neuron": "if", "n_calib_batches": calib_batches,
                "learn_threshold": learn_threshold, "threshold_floor": threshold_floor}
    torch.manual_seed(seed)
    snn = convert(ann, calib, recipe=chosen, log=lambda line: console.print(f"  {line}"), **settings)
    out = Path(out)
    record = {**settings, "recipe": chosen.to_dict(), "calib_batch_size": calib_batch_size, "seed": seed,
              "source": str(ckpt), "thresholds": {n: float(m.threshold.detach()) for n, m in spiking_layers(snn)}}
    kept = {k: meta[k] for k in ("pruning",) if k in meta}
    checkpoint.save(out / "model", snn, dataset=train_set.info.name, command=command, conversion=record,
                    ann_recipe=meta.get("recipe"), **kept)
    summary = {"out": str(out), "thresholds": record["thresholds"]}
    if eval_images:
        test_set = load_dataset(name, "test", data_dir=data_dir).subset(eval_images)
        summary["ann_acc"] = accuracy(ann, test_set)
        summary["snn_acc"] = accuracy(snn, test_set, batch_size=100)
        summary["eval_images"] = len(test_set)
    return summary


def register(app: typer.Typer) -> None:
    """Add the ``convert`` command to ``app``."""

    @app.command("convert")
    def convert_cmd(
        ckpt: Path = typer.Argument(..., help="ANN checkpoint (directory, or a run directory holding model/)."),
        out: Path = typer.Option(..., "--out", "-o", help="Run directory; the SNN goes to OUT/model."),
        time_steps: int = typer.Option(8, "--time-steps", "-T", help="T of the converted SNN."),
        recipe: str = typer.Option("auto", help="auto, seed, seed-soft, rate, rate-calib, qcfs, qcfs-calib (see README)."),
        percentile: Optional[float] = typer.Option(None, help="Percentile that sets each threshold (recipe's: seed 99.7, rate 99.9)."),
        calib_steps: Optional[int] = typer.Option(None, help="Simulation steps while balancing thresholds (seed: 100)."),
        scale: Optional[float] = typer.Option(None, help="Threshold scaling (seed: 0.3 at T=8; others 1)."),
        calib_batches: int = typer.Option(10, help="Calibration batches (training images)."),
        calib_batch_size: int = typer.Option(32, help="Images per calibration batch (memory grows with this x calib-steps)."),
        reset: Optional[str] = typer.Option(None, help="hard (seed) or soft (the other recipes)."),
        learn_threshold: bool = typer.Option(True, "--learn-threshold/--fixed-threshold", help="Thresholds trainable in finetuning."),
        threshold_floor: float = typer.Option(0.03, help="Lower clamp of the thresholds."),
        bn_adapt: Optional[bool] = typer.Option(None, "--bn-adapt/--no-bn-adapt", help="Re-estimate BN statistics from the SNN (seed: on)."),
        bias_correction: Optional[bool] = typer.Option(None, "--bias-correction/--no-bias-correction", help="Rescale biases to the spike-rate scale (seed: on)."),
        data: Optional[str] = typer.Option(None, "--data", "--dataset", help="Calibration data set (default: the checkpoint's)."),
        data_dir: Optional[str] = typer.Option(None, help="Folder holding the data set files."),
        seed: int = typer.Option(0, help="Seed of the calibration batches."),
        eval_images: int = typer.Option(1000, help="Test images for the ANN-vs-SNN accuracy line (0 = skip)."),
        device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
    ):
        """Convert an ANN checkpoint into an SNN: weight copy, threshold balancing, BN adaptation."""
        console = Console()
        command = "robustsnn " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        summary = convert_checkpoint(
            ckpt, out, time_steps=time_steps, recipe=recipe, reset=reset, percentile=percentile, calib_steps=calib_steps,
            scale=scale, calib_batches=calib_batches, calib_batch_size=calib_batch_size,
            learn_threshold=learn_threshold, threshold_floor=threshold_floor, bn_adapt=bn_adapt,
            bias_correction=bias_correction, data=data, data_dir=data_dir, seed=seed, eval_images=eval_images,
            command=command, console=console, device=device,
        )
        t = Table("spiking layer", "threshold")
        for layer, theta in summary["thresholds"].items():
            t.add_row(layer, f"{theta:.4f}")
        console.print(t)
        if "snn_acc" in summary:
            console.print(f"[bold green]clean accuracy[/] on {summary['eval_images']} test images: "
                          f"ANN {summary['ann_acc']:.2%}, SNN (T={time_steps}) {summary['snn_acc']:.2%}")
        console.print(f"checkpoint: {Path(out) / 'model'}")
