"""``robustsnn train``: build a twin model, train it on a data set, checkpoint every epoch."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.console import Console

from .. import distributed as D
from ..checkpoint import refuse_to_replace
from ..data import dataset_info, load_dataset
from ..errors import UsageError
from ..models import build
from ..precision import check_precision
from ..train import TrainConfig, accuracy, fit, make_objective
from .config_file import merge_options, read_config

__all__ = ["TRAIN_DEFAULTS", "train_from_options", "register"]

#: Every option of ``robustsnn train`` with its default; config files use the same keys.
TRAIN_DEFAULTS: dict = {
    "model": "cnn",
    "kind": "snn",
    "activation": "relu",
    "levels": None,
    "dataset": "fashion-mnist",
    "data_dir": None,
    "neuron": "lif",
    "time_steps": 4,
    "encoding": "direct",
    "threshold": 1.0,
    "reset": "hard",
    "leak": None,
    "surrogate": "triangle",
    "surrogate_width": 1.0,
    "learn_threshold": False,
    "width": 1.0,
    "epochs": 1,
    "batch_size": 64,
    "lr": 0.1,
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "seed": 0,
    "augment": None,
    "train_subset": None,
    "test_subset": None,
    "objective": "natural",
    "eps": None,
    "sigma": None,
    "attack_steps": None,
    "step_size": None,
    "beta": None,
    "inner": None,
    "train_estimator": None,
    "clean_weight": None,
    "mppd": None,
    "mppd_layers": None,
    "objective_params": {},
    "parseval": 0.0,
    "device": "cpu",
    "sync_bn": False,
    "precision": "fp32",
    "grad_clip": 0.0,
    "eval_preset": None,
    "eval_eps": "0.1",
    "eval_n": 1000,
    "out": "runs/train",
}


#: flat option name -> objective parameter name
OBJECTIVE_OPTIONS = {
    "eps": "eps", "sigma": "sigma", "attack_steps": "steps", "step_size": "step_size", "beta": "beta",
    "inner": "inner", "train_estimator": "estimator", "clean_weight": "clean_weight", "mppd": "mppd",
    "mppd_layers": "mppd_layers",
}


def objective_params(o: dict) -> dict:
    """Objective parameters from the flat options (given ones only) merged over ``objective_params``."""
    params = dict(o.get("objective_params") or {})
    params.update({OBJECTIVE_OPTIONS[k]: o[k] for k in OBJECTIVE_OPTIONS if o.get(k) is not None})
    for key in ("eps", "sigma"):
        v = params.get(key)
        if v is not None and not 0 <= float(v) <= 1:
            raise UsageError(f"{key}={v} is outside [0, 1]: budgets are in pixel units; did you mean {v}/255?")
    return params


def _check_ranges(o: dict) -> None:
    if int(o["time_steps"]) < 1:
        raise UsageError(f"time_steps must be >= 1, got {o['time_steps']}")
    check_precision(o.get("precision") or "fp32")


def train_from_options(o: dict, *, resume: bool = False, progress: bool = True, command: str | None = None, console: Console | None = None) -> dict:
    """Run a training job described by a merged option dict (see :data:`TRAIN_DEFAULTS`).

    Returns a summary dict: out directory, history and the final full-test-set accuracy.
    """
    D.setup(o["device"])  # under torchrun: join the process group before anything prints
    console = console or Console(quiet=not D.is_main())
    _check_ranges(o)
    refuse_to_replace(Path(o["out"]) / "model")  # before any work: --out must be a place to write
    info = dataset_info(o["dataset"])
    train_set = load_dataset(o["dataset"], "train", data_dir=o["data_dir"])
    test_set = load_dataset(o["dataset"], "test", data_dir=o["data_dir"])
    torch.manual_seed(int(o["seed"]))
    model = build(
        o["model"],
        kind=o["kind"],
        neuron=o["neuron"],
        time_steps=int(o["time_steps"]),
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        image_size=info.image_size,
        mean=info.mean,
        std=info.std,
        encoding=o["encoding"],
        width=float(o["width"]),
        activation=o["activation"],
        levels=int(o["levels"]) if o["levels"] else None,
        threshold=float(o["threshold"]),
        reset=o["reset"],
        leak=o["leak"],
        surrogate=f"{o['surrogate']}:{o['surrogate_width']}",
        learn_threshold=bool(o["learn_threshold"]),
    )
    augment = o["augment"] if o["augment"] is not None else info.name not in ("fashion-mnist", "mnist")
    config = TrainConfig(
        epochs=int(o["epochs"]),
        batch_size=int(o["batch_size"]),
        lr=float(o["lr"]),
        optimizer=o["optimizer"],
        momentum=float(o["momentum"]),
        weight_decay=float(o["weight_decay"]),
        seed=int(o["seed"]),
        augment=bool(augment),
        train_subset=o["train_subset"],
        test_subset=o["test_subset"],
        objective=o["objective"],
        objective_params=objective_params(o),
        parseval=float(o["parseval"] or 0.0),
        device=o["device"],
        sync_bn=bool(o.get("sync_bn")),
        precision=o["precision"],
        grad_clip=float(o.get("grad_clip") or 0.0),
    )
    make_objective(config.objective, **config.objective_params)  # fail fast on a bad option
    out = Path(o["out"])
    n_params = sum(p.numel() for p in model.parameters())
    console.print(
        f"training {o['kind'].upper()} [bold]{o['model']}[/] ({n_params / 1e6:.2f}M parameters"
        + (f", {o['neuron']} neurons, T={o['time_steps']}" if o["kind"] == "snn" else "")
        + f") on {info.name}: {config.train_subset or len(train_set)} images x {config.epochs} epoch(s), "
        f"objective {config.objective} -> {out}"
    )
    meta = {"dataset": info.name, "command": command, "options": {k: v for k, v in o.items()}}
    history = fit(model, train_set, test_set, config, out, resume=resume, progress=progress, meta=meta, log_epochs=True)
    final = history[-1] if history else {}
    test_acc = final.get("test_acc")
    if test_acc is None or final.get("test_images") != len(test_set):
        test_acc = accuracy(model, test_set)
    console.print(f"[bold green]test accuracy[/]: {test_acc:.2%} on the full {info.name} test set ({len(test_set)} images)")
    console.print(f"checkpoint: {out / 'model'}   (python: robustsnn.load('{out / 'model'}'))")
    summary = {"out": str(out), "history": history, "test_acc": test_acc}
    if o.get("eval_preset"):
        summary["eval"] = _evaluate_after_training(model, test_set, o, out, command, console)
    return summary


def _evaluate_after_training(model, test_set, o: dict, out: Path, command: str | None, console: Console) -> list[str]:
    """Evaluate the trained model with each preset of ``eval_preset`` (comma-separated; ``fgsm`` is a
    one-member pseudo-preset); write OUT/eval-NAME.json and print the tables. Diagnostics run with the
    last (strongest) preset only."""
    from ..attacks.cache import CACHE_DIRNAME
    from ..attacks.ensemble import Member
    from ..evaluate import evaluate
    from .evaluate import _eps_values, print_result

    eps = _eps_values([str(o["eval_eps"])])
    names = [p.strip() for p in str(o["eval_preset"]).split(",") if p.strip()]
    paths = []
    for i, name in enumerate(names):
        console.print(f"evaluating: {name}, eps {', '.join(f'{e:g}' for e in eps)}, first {o['eval_n']} test images")
        kwargs = dict(eps=eps, n=int(o["eval_n"]), seed=int(o["seed"]), command=command,
                      dataset=test_set.info.name, warn=False, diagnostics=i == len(names) - 1,
                      cache_dir=out / CACHE_DIRNAME, precision=o["precision"])
        if name == "fgsm":
            res = evaluate(model.eval(), test_set, members=[Member("fgsm")], **kwargs)
        else:
            res = evaluate(model.eval(), test_set, preset=name, **kwargs)
        print_result(res, console)
        path = res.save(out / f"eval-{name}.json")
        best = ", ".join(f"eps={r.eps:g}: {r.robust_acc:.2%}" for r in res.results)
        console.print(f"[bold green]robust accuracy[/] ({name}, n={res.n}): {best}   clean {res.clean_acc:.2%}   -> {path}")
        paths.append(str(path))
    return paths


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to ``app``."""

    @app.command("train")
    def train_cmd(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML/TOML file of options; flags override it."),
        model: Optional[str] = typer.Option(None, help="Architecture: cnn, vgg5, vgg11, vgg16, resnet19, resnet20, wrn16_4, wrn28_4."),
        kind: Optional[str] = typer.Option(None, help="snn or ann."),
        activation: Optional[str] = typer.Option(None, help="ANN activation: relu (default) or qcfs (clip-floor-shift, for near-lossless conversion)."),
        levels: Optional[int] = typer.Option(None, help="QCFS quantisation levels L (default: --time-steps, the SNN's T after conversion)."),
        dataset: Optional[str] = typer.Option(None, help="fashion-mnist (default), mnist, cifar10, cifar100, svhn, tiny-imagenet."),
        data_dir: Optional[str] = typer.Option(None, help="Folder holding the data set files."),
        neuron: Optional[str] = typer.Option(None, help="if, lif or dlif."),
        time_steps: Optional[int] = typer.Option(None, "--time-steps", "-T", help="Simulation steps T."),
        encoding: Optional[str] = typer.Option(None, help="direct or poisson."),
        threshold: Optional[float] = typer.Option(None, help="Initial firing threshold."),
        reset: Optional[str] = typer.Option(None, help="hard or soft."),
        leak: Optional[float] = typer.Option(None, help="Leak lambda in [0,1] (default: 0.99 LIF/DLIF, 1 IF)."),
        surrogate: Optional[str] = typer.Option(None, help="triangle, exp, exp-d, rectangle, ste, sigmoid, atan, pdsg."),
        surrogate_width: Optional[float] = typer.Option(None, help="Surrogate width gamma."),
        learn_threshold: Optional[bool] = typer.Option(None, "--learn-threshold/--fixed-threshold"),
        width: Optional[float] = typer.Option(None, help="Channel multiplier."),
        epochs: Optional[int] = typer.Option(None),
        batch_size: Optional[int] = typer.Option(None),
        lr: Optional[float] = typer.Option(None),
        optimizer: Optional[str] = typer.Option(None, help="sgd or adam."),
        momentum: Optional[float] = typer.Option(None),
        weight_decay: Optional[float] = typer.Option(None),
        seed: Optional[int] = typer.Option(None),
        augment: Optional[bool] = typer.Option(None, "--augment/--no-augment"),
        train_subset: Optional[int] = typer.Option(None, help="Train on this many images (seeded subset)."),
        test_subset: Optional[int] = typer.Option(None, help="Per-epoch test on this many images (the final line always uses all)."),
        objective: Optional[str] = typer.Option(None, help="natural, gaussian, fgsm, rfgsm, rfgsm-stable, pgd, trades, mart."),
        eps: Optional[float] = typer.Option(None, help="Attack budget in pixel units (L-inf), e.g. 0.1."),
        sigma: Optional[float] = typer.Option(None, help="Gaussian objective: noise std in pixel units."),
        attack_steps: Optional[int] = typer.Option(None, help="Inner attack steps (pgd, trades, mart)."),
        step_size: Optional[float] = typer.Option(None, help="Inner attack step size (default 2.5*eps/steps)."),
        beta: Optional[float] = typer.Option(None, help="TRADES (6) / MART (4) weight."),
        inner: Optional[str] = typer.Option(None, help="TRADES inner attack: pgd or rfgsm."),
        train_estimator: Optional[str] = typer.Option(None, help="Gradient estimator of the training attack (default: the neuron's surrogate)."),
        clean_weight: Optional[float] = typer.Option(None, help="chi: weight of the clean CE next to the perturbed CE."),
        mppd: Optional[float] = typer.Option(None, help="rho: weight of the MPPD regulariser (0 = off)."),
        mppd_layers: Optional[str] = typer.Option(None, help="MPPD layers: last (default), all, or indices '0,2'."),
        parseval: Optional[float] = typer.Option(None, help="Parseval retraction beta after each step (0 = off; forces weight decay 0)."),
        device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N or auto (under torchrun: each rank's GPU)."),
        sync_bn: Optional[bool] = typer.Option(None, "--sync-bn/--no-sync-bn", help="Under torchrun: batch norm with the statistics of the global batch."),
        precision: Optional[str] = typer.Option(None, help="fp32 (default) or bf16 (autocast; neurons stay fp32)."),
        grad_clip: Optional[float] = typer.Option(None, help="Clip the global gradient L2 norm to this before each step (0 = off)."),
        eval_preset: Optional[str] = typer.Option(None, help="After training, evaluate with these presets, comma-separated (fgsm, quick, standard, ...)."),
        eval_eps: Optional[str] = typer.Option(None, help="Budgets of that evaluation, e.g. 0.1 or 0.05,0.1."),
        eval_n: Optional[int] = typer.Option(None, help="Test images of that evaluation (first N)."),
        out: Optional[str] = typer.Option(None, "--out", "-o", help="Run directory."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out after its last finished epoch."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No live progress bar."),
    ):
        """Train a model; checkpoint each epoch to OUT/model; print full-test-set accuracy."""
        flags = {k: v for k, v in locals().items() if k not in ("config", "resume", "no_progress")}
        opts = merge_options(TRAIN_DEFAULTS, read_config(config), flags)
        command = "robustsnn " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        train_from_options(opts, resume=resume, progress=not no_progress, command=command)
