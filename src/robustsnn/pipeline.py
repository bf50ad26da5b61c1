"""Sparse robust SNNs by conversion, end to end, as resumable stages in one run directory.

Stages (DESIGN.md section 6; Schmolli et al. 2025, Özdenizci & Legenstein 2024)::

    ann        robust ANN pretraining (TRADES / PGD / MART)      RUN/ann/model
    prune      LWM / HYDRA / random to the target sparsity,       RUN/prune/model
               then ANN finetuning with the mask fixed
    convert    ANN -> SNN: weight copy, threshold balancing,      RUN/snn/model
               BN adaptation (masks carried over)
    finetune   adversarial finetuning of the sparse SNN           RUN/finetune/model
               (R+FGSM with a KL inner loss, TRADES beta = 2)
    evaluate   attack ensemble on the final SNN                  RUN/eval-PRESET.json
    efficiency spike rates, SOPs, energy, memory                  RUN/efficiency.json
    report     HTML + Markdown report                             RUN/report.html, RUN/report.md

``baseline`` replaces ann..finetune by end-to-end sparse adversarial training of
the SNN from scratch with a random mask (``baseline="random"``) or the pruned
ANN's mask (``baseline="ann-mask"``), for the same number of epochs.

``RUN/pipeline.json`` records the configuration and each finished stage; a
finished stage is never run again, an interrupted training stage resumes from
its last finished epoch. Running the same command again continues the run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import torch
from rich.console import Console

from . import checkpoint
from .data import batches, dataset_info, load_dataset
from .errors import UsageError
from .attacks.cache import CACHE_DIRNAME
from . import distributed as D
from .io import atomic_write_json, read_json
from .models import build
from .train import TrainConfig, fit

__all__ = ["PipelineConfig", "run_pipeline", "STAGES"]

STAGES = ("ann", "prune", "convert", "finetune", "evaluate", "efficiency", "report")
BASELINE_STAGES = ("ann", "prune", "baseline", "evaluate", "efficiency", "report")
PRUNING = ("lwm", "lwm-global", "hydra", "random")


@dataclass
class PipelineConfig:
    """All settings of a pipeline run; defaults are the Fashion-MNIST CPU scale of the seed recipe."""

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    model: str = "cnn"
    width: float = 1.0
    seed: int = 0
    train_subset: int | None = 20000
    batch_size: int = 64
    eps: float = 0.1
    # 1. robust ANN
    ann_checkpoint: str | None = None
    ann_objective: str = "trades"
    ann_beta: float = 6.0
    ann_attack_steps: int = 5
    ann_epochs: int = 2
    ann_lr: float = 0.1
    # 2. pruning
    sparsity: float = 0.9
    pruning: str = "hydra"
    prune_first: bool = True  # False keeps the first conv (the SNN's encoder) dense
    prune_last: bool = True  # False keeps the readout layer dense
    hydra_epochs: int = 1
    prune_finetune_epochs: int = 1
    prune_lr: float = 0.01
    # 3. conversion
    time_steps: int = 8
    reset: str = "hard"
    percentile: float = 99.7
    calib_time_steps: int = 100
    calib_batches: int = 10
    calib_batch_size: int = 32
    threshold_scale: float = 0.3
    # 4. SNN finetuning (seed: RFGSM with KL inner loss, TRADES beta 2, lr 1e-3, wd 1e-3, cosine)
    snn_epochs: int = 1
    snn_lr: float = 1e-3
    snn_weight_decay: float = 1e-3
    snn_beta: float = 2.0
    snn_train_subset: int | None = 10000
    # baseline instead of ann..finetune
    baseline: str | None = None
    baseline_epochs: int | None = None
    baseline_lr: float = 0.1
    # 5. evaluation
    eval_preset: str = "standard"
    eval_n: int = 1000
    efficiency_n: int = 1000
    # where the training and evaluation stages run: cpu, cuda, cuda:N or auto (not a recipe setting)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not 0 <= self.sparsity < 1:
            raise UsageError(f"sparsity must be in [0, 1) (0.9 keeps 10 % of the weights), got {self.sparsity}")
        if self.pruning not in PRUNING:
            raise UsageError(f"unknown pruning {self.pruning!r}; choose one of {', '.join(PRUNING)}")
        if self.baseline not in (None, "random", "ann-mask"):
            raise UsageError(f"baseline must be 'random' or 'ann-mask', got {self.baseline!r}")
        if not 0 <= self.eps <= 1:
            raise UsageError(f"eps={self.eps:g} is outside [0, 1]: budgets are in pixel units; did you mean {self.eps:g}/255?")

    @classmethod
    def from_dict(cls, d: dict) -> "PipelineConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UsageError(f"unknown pipeline option(s): {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**d)

    def stages(self) -> tuple[str, ...]:
        return BASELINE_STAGES if self.baseline else STAGES

    @property
    def prune_ends(self) -> dict:
        """``first`` / ``last`` keyword arguments of the pruning functions."""
        return {"first": self.prune_first, "last": self.prune_last}

    @property
    def total_epochs(self) -> int:
        """Training epochs of the conversion route (the baseline gets the same budget)."""
        prune = self.hydra_epochs + self.prune_finetune_epochs if self.pruning == "hydra" else self.prune_finetune_epochs
        return self.ann_epochs + (prune if self.sparsity > 0 else 0) + self.snn_epochs


#: Settings that only change what is measured, and the stages that changing one re-runs (no training).
MEASUREMENT_SETTINGS = {
    "eval_preset": ("evaluate", "report"),
    "eval_n": ("evaluate", "report"),
    "efficiency_n": ("efficiency", "report"),
    "device": (),
}


class _State:
    """pipeline.json: the configuration and the finished stages (written atomically).

    A run continued with other training settings is refused (its stages would mix two
    recipes); one continued with other measurement settings (``MEASUREMENT_SETTINGS``)
    keeps its trained models and re-runs only the stages that measure.
    """

    def __init__(self, run: Path, config: PipelineConfig, command: str | None):
        self.path = run / "pipeline.json"
        if self.path.exists():
            data = read_json(self.path)
            # a setting added after the run was started had its default then
            old = {**asdict(PipelineConfig()), **data.get("config", {})}
            changed = sorted(k for k, v in asdict(config).items() if old.get(k) != v)
            training = [k for k in changed if k not in MEASUREMENT_SETTINGS]
            if training:
                raise UsageError(
                    f"{run} holds a pipeline run with other settings ({', '.join(training)}); "
                    "use another --out or --restart to start over"
                )
            self.data = data
            if changed:
                redo = {s for k in changed for s in MEASUREMENT_SETTINGS[k]}
                data["stages"] = [s for s in data.get("stages", []) if s["name"] not in redo]
                data.setdefault("changes", []).append({k: [old.get(k), getattr(config, k)] for k in changed})
                data["config"] = asdict(config)
                self.save()
        else:
            self.data = {"format": "robustsnn-pipeline", "config": asdict(config), "command": command, "stages": []}
            self.save()

    def done(self, stage: str) -> bool:
        return any(s["name"] == stage and s["status"] == "done" for s in self.data["stages"])

    def finish(self, stage: str, seconds: float, **info) -> None:
        self.data["stages"] = [s for s in self.data["stages"] if s["name"] != stage]
        self.data["stages"].append({"name": stage, "status": "done", "seconds": round(seconds, 1), **info})
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)


def _train_cfg(c: PipelineConfig, *, epochs, lr, objective, params, weight_decay=5e-4, subset=None) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=c.batch_size, lr=lr, weight_decay=weight_decay, seed=c.seed,
                       train_subset=subset if subset is not None else c.train_subset, test_subset=1000,
                       objective=objective, objective_params=params, device=c.device, sync_bn=True)


def _ann_objective(c: PipelineConfig) -> tuple[str, dict]:
    params = {"eps": c.eps, "steps": c.ann_attack_steps}
    if c.ann_objective in ("trades", "mart"):
        params["beta"] = c.ann_beta
    return c.ann_objective, params


def _snn_objective(c: PipelineConfig) -> tuple[str, dict]:
    # seed: R+FGSM with a KL inner loss, TRADES outer loss, beta = 2
    return "trades", {"eps": c.eps, "beta": c.snn_beta, "inner": "rfgsm"}


def run_pipeline(config: PipelineConfig, out: str | Path, *, command: str | None = None, progress: bool = True,
                 console: Console | None = None, stop_after: str | None = None) -> dict:
    """Run (or continue) the pipeline in ``out``; returns pipeline.json's content.

    Args:
        config: the settings.
        out: run directory (created; an existing one with the same settings is continued).
        command: the command line, stored for the report.
        progress: live progress bars.
        stop_after: end after this stage (used to test interruption).
    """
    D.setup(config.device)  # under torchrun: all ranks train and evaluate, rank 0 writes (robustsnn.io)
    console = console or Console(quiet=not D.is_main())
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    state = _State(run, config, command)
    D.barrier()
    info = dataset_info(config.dataset)
    train_set = load_dataset(info.name, "train", data_dir=config.data_dir)
    test_set = load_dataset(info.name, "test", data_dir=config.data_dir)
    meta = {"dataset": info.name, "command": command}
    c = config

    def ann_stage() -> dict:
        if c.ann_checkpoint:
            model = checkpoint.load(c.ann_checkpoint)
            if model.config.kind != "ann":
                raise UsageError(f"--ann {c.ann_checkpoint} is an {model.config.kind.upper()}; give an ANN checkpoint")
            src = checkpoint.read_meta(c.ann_checkpoint)
            checkpoint.save(run / "ann" / "model", model, dataset=src.get("dataset"), recipe=src.get("recipe"),
                            history=src.get("history"), source=str(c.ann_checkpoint))
            return {"source": str(c.ann_checkpoint)}
        torch.manual_seed(c.seed)
        model = build(c.model, kind="ann", num_classes=info.num_classes, in_channels=info.in_channels,
                      image_size=info.image_size, mean=info.mean, std=info.std, width=c.width)
        name, params = _ann_objective(c)
        hist = fit(model, train_set, test_set, _train_cfg(c, epochs=c.ann_epochs, lr=c.ann_lr, objective=name, params=params),
                   run / "ann", resume=(run / "ann" / "model" / checkpoint.CONFIG).exists(), progress=progress, meta=meta)
        return {"test_acc": hist[-1].get("test_acc") if hist else None}

    def prune_stage() -> dict:
        from .sparsity.hydra import prune_hydra
        from .sparsity.prune import prune_lwm, prune_random

        model = checkpoint.load(run / "ann" / "model")
        if c.sparsity == 0:
            checkpoint.save(run / "prune" / "model", model, **meta, pruning={"method": "none", "sparsity": 0.0})
            return {"sparsity": 0.0}
        name, params = _ann_objective(c)
        ft = _train_cfg(c, epochs=c.prune_finetune_epochs, lr=c.prune_lr, objective=name, params=params)
        ends = c.prune_ends
        record = {"method": c.pruning, "sparsity": c.sparsity, **ends}
        if c.pruning == "hydra":
            score = _train_cfg(c, epochs=c.hydra_epochs, lr=0.1, objective=name, params=params, weight_decay=0.0)
            result = prune_hydra(model, c.sparsity, train_set, test_set, score, run / "prune", finetune_config=ft,
                                 progress=progress, **ends, meta={**meta, "pruning": record})
            return {"layers": result["sparsity"]}
        if c.pruning == "random":
            reached = prune_random(model, c.sparsity, torch.Generator().manual_seed(c.seed), **ends)
        else:
            reached = prune_lwm(model, c.sparsity, scope="global" if c.pruning == "lwm-global" else "layer", **ends)
        fit(model, train_set, test_set, ft, run / "prune", resume=(run / "prune" / "model" / checkpoint.CONFIG).exists(),
            progress=progress, meta={**meta, "pruning": {**record, "layers": reached}})
        return {"layers": reached}

    def convert_stage() -> dict:
        from .convert import convert

        ann = checkpoint.load(run / "prune" / "model")
        calib = batches(train_set, c.calib_batch_size, shuffle=True, seed=c.seed)
        snn = convert(ann, calib, time_steps=c.time_steps, reset=c.reset, percentile=c.percentile,
                      calib_time_steps=c.calib_time_steps, n_calib_batches=c.calib_batches, scale=c.threshold_scale,
                      log=lambda line: console.print(f"  {line}"))
        from .train import accuracy

        acc = accuracy(snn, test_set.subset(1000))
        checkpoint.save(run / "snn" / "model", snn, **meta, conversion={"test_acc_1000": acc})
        return {"test_acc_1000": acc}

    def finetune_stage() -> dict:
        snn = checkpoint.load(run / "snn" / "model")
        name, params = _snn_objective(c)
        cfg = _train_cfg(c, epochs=c.snn_epochs, lr=c.snn_lr, objective=name, params=params,
                         weight_decay=c.snn_weight_decay, subset=c.snn_train_subset)
        hist = fit(snn, train_set, test_set, cfg, run / "finetune", progress=progress, meta=meta,
                   resume=(run / "finetune" / "model" / checkpoint.CONFIG).exists())
        return {"test_acc": hist[-1].get("test_acc") if hist else None}

    def baseline_stage() -> dict:
        from .sparsity import set_mask
        from .sparsity.prune import prunable_layers, prune_random

        torch.manual_seed(c.seed)
        snn = build(c.model, kind="snn", neuron="if", time_steps=c.time_steps, reset=c.reset, num_classes=info.num_classes,
                    in_channels=info.in_channels, image_size=info.image_size, mean=info.mean, std=info.std, width=c.width)
        if c.sparsity > 0:
            if c.baseline == "random":
                prune_random(snn, c.sparsity, torch.Generator().manual_seed(c.seed), **c.prune_ends)
            else:
                pruned = checkpoint.load(run / "prune" / "model")
                masks = dict(pruned.named_modules())
                for name, module in prunable_layers(snn):
                    set_mask(module, masks[name].weight_mask if hasattr(masks[name], "weight_mask") else torch.ones_like(module.weight))
        name, params = _snn_objective(c)
        epochs = c.baseline_epochs or c.total_epochs
        cfg = _train_cfg(c, epochs=epochs, lr=c.baseline_lr, objective=name, params=params, subset=c.snn_train_subset)
        hist = fit(snn, train_set, test_set, cfg, run / "baseline", progress=progress, meta=meta,
                   resume=(run / "baseline" / "model" / checkpoint.CONFIG).exists())
        return {"epochs": epochs, "test_acc": hist[-1].get("test_acc") if hist else None}

    def final_model_dir() -> Path:
        return run / ("baseline" if c.baseline else "finetune") / "model"

    def evaluate_stage() -> dict:
        from .cli.evaluate import print_result
        from .evaluate import evaluate

        model = checkpoint.load(final_model_dir()).to(D.resolve_device(c.device))
        res = evaluate(model, test_set, preset=c.eval_preset, eps=c.eps, n=c.eval_n, seed=c.seed,
                       command=command, dataset=info.name, warn=False, cache_dir=run / CACHE_DIRNAME)
        print_result(res, console)
        path = res.save(run / f"eval-{c.eval_preset}.json")
        final = run / "final"
        if D.is_main() and not final.exists():
            final.symlink_to(final_model_dir().relative_to(run), target_is_directory=True)
        return {"clean_acc": res.clean_acc, "robust_acc": res.results[0].robust_acc, "result": str(path)}

    def efficiency_stage() -> dict:
        from .metrics import efficiency

        model = checkpoint.load(final_model_dir())
        eff = efficiency(model, test_set, n=c.efficiency_n)
        cmd = f"robustsnn efficiency {final_model_dir()} --n {c.efficiency_n} --json {run / 'efficiency.json'}"
        atomic_write_json(run / "efficiency.json", {"command": cmd, "checkpoint": str(final_model_dir()), **eff})
        return {"result": str(run / "efficiency.json")}

    def report_stage() -> dict:
        from .report import write_report

        paths = write_report(run)
        return {"html": str(paths["html"]), "md": str(paths["md"])}

    runners: dict[str, Callable[[], dict]] = {
        "ann": ann_stage, "prune": prune_stage, "convert": convert_stage, "finetune": finetune_stage,
        "baseline": baseline_stage, "evaluate": evaluate_stage, "efficiency": efficiency_stage, "report": report_stage,
    }
    stages = list(c.stages())
    if c.baseline == "random" and c.sparsity >= 0:
        stages = [s for s in stages if s not in ("ann", "prune")]
    for stage in stages:
        if state.done(stage):
            console.print(f"[dim]stage {stage}: done earlier, skipped[/]")
            continue
        console.print(f"[bold]stage {stage}[/]")
        t0 = time.perf_counter()
        result = runners[stage]()
        state.finish(stage, time.perf_counter() - t0, **(result or {}))
        D.barrier()  # the next stage reads what rank 0 wrote
        if stop_after == stage:
            break
    return state.data
