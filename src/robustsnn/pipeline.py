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
ANN's mask (``baseline="ann-mask"``), for the same training budget: the number of
image-passes (training images seen, summed over every training stage, ANN and SNN
alike) of the conversion route, recorded as ``image_passes`` in pipeline.json.

Every training stage (and ``convert``) records the clean and robust accuracy of its
model on the first ``stage_eval_n`` test images under ``stage_eval_preset`` (PGD-10),
so the report shows where the accuracy is lost.

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
from . import distributed as D
from .data import batches, dataset_info, load_dataset
from .errors import UsageError, refuse_unknown_fields
from .attacks.cache import CACHE_DIRNAME
from .io import atomic_write_json, read_json
from .models import build
from .train import TrainConfig, fit

__all__ = ["PipelineConfig", "run_pipeline", "STAGES"]

STAGES = ("ann", "prune", "convert", "finetune", "evaluate", "efficiency", "report")
BASELINE_STAGES = ("ann", "prune", "baseline", "evaluate", "efficiency", "report")
PRUNING = ("lwm", "lwm-global", "hydra", "random")
#: The model each training stage (and convert) leaves, relative to the run directory.
STAGE_MODELS = {"ann": "ann/model", "prune": "prune/model", "convert": "snn/model", "finetune": "finetune/model",
                "baseline": "baseline/model"}


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
    eps: float = 0.1  # training budget (and evaluation budget unless eval_eps is set)
    eval_eps: float | None = None  # evaluation budget (None: eps); the papers train at 2/255, test at 8/255
    augment: bool = False  # random crop / flip as the data set defines, in every training stage
    device: str = "cpu"  # "auto" takes a GPU when there is one
    # 1. robust ANN
    ann_checkpoint: str | None = None
    ann_objective: str = "trades"
    ann_beta: float = 6.0
    ann_attack_steps: int = 5
    ann_epochs: int = 2
    ann_lr: float = 0.1
    ann_activation: str = "qcfs"  # the ANN twin's activation: qcfs (clip-floor-shift) or relu
    ann_levels: int | None = None  # QCFS levels L (None: time_steps)
    # 2. pruning
    sparsity: float = 0.9
    pruning: str = "hydra"
    prune_first: bool = True  # False keeps the first conv (the SNN's encoder) dense
    prune_last: bool = True  # False keeps the readout layer dense
    hydra_epochs: int = 1
    prune_finetune_epochs: int = 1
    prune_lr: float = 0.01
    # 3. conversion (recipe fields left None take the recipe's value; see robustsnn.convert.RECIPES)
    time_steps: int = 8
    conversion_recipe: str = "auto"
    reset: str | None = None
    percentile: float | None = None
    calib_time_steps: int | None = None
    calib_batches: int = 10
    calib_batch_size: int = 32
    threshold_scale: float | None = None
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
    stage_eval_n: int = 500  # per-stage clean / robust accuracy (0: off)
    stage_eval_preset: str = "quick"

    def __post_init__(self) -> None:
        if not 0 <= self.sparsity < 1:
            raise UsageError(f"sparsity must be in [0, 1) (0.9 keeps 10 % of the weights), got {self.sparsity}")
        if self.pruning not in PRUNING:
            raise UsageError(f"unknown pruning {self.pruning!r}; choose one of {', '.join(PRUNING)}")
        if self.baseline not in (None, "random", "ann-mask"):
            raise UsageError(f"baseline must be 'random' or 'ann-mask', got {self.baseline!r}")
        if self.ann_activation not in ("qcfs", "relu"):
            raise UsageError(f"ann_activation must be 'qcfs' or 'relu', got {self.ann_activation!r}")
        from .convert import RECIPE_NAMES

        if self.conversion_recipe not in RECIPE_NAMES:
            raise UsageError(f"unknown conversion_recipe {self.conversion_recipe!r}; choose one of {', '.join(RECIPE_NAMES)}")
        if self.stage_eval_n < 0 or self.eval_n < 1 or self.efficiency_n < 1:
            raise UsageError("eval_n and efficiency_n must be >= 1 and stage_eval_n >= 0")
        if self.eval_eps is not None and not 0 <= self.eval_eps <= 1:
            raise UsageError(f"eval_eps={self.eval_eps:g} is outside [0, 1]: budgets are in pixel units; "
                             f"did you mean {self.eval_eps:g}/255?")
        if not 0 <= self.eps <= 1:
            raise UsageError(f"eps={self.eps:g} is outside [0, 1]: budgets are in pixel units; did you mean {self.eps:g}/255?")

    @classmethod
    def from_dict(cls, d: dict) -> "PipelineConfig":
        refuse_unknown_fields(cls, d, "pipeline option")
        return cls(**d)

    @property
    def test_eps(self) -> float:
        """The evaluation budget."""
        return self.eps if self.eval_eps is None else self.eval_eps

    def stages(self) -> tuple[str, ...]:
        return BASELINE_STAGES if self.baseline else STAGES

    @property
    def prune_ends(self) -> dict:
        """``first`` / ``last`` keyword arguments of the pruning functions."""
        return {"first": self.prune_first, "last": self.prune_last}

    @property
    def total_epochs(self) -> int:
        """Training epochs of the conversion route."""
        prune = self.hydra_epochs + self.prune_finetune_epochs if self.pruning == "hydra" else self.prune_finetune_epochs
        return self.ann_epochs + (prune if self.sparsity > 0 else 0) + self.snn_epochs

    def image_passes(self, n_train: int) -> dict:
        """Training images seen by each stage of the conversion route, and their total.

        Args:
            n_train: size of the training split (the subsets are capped by it).
        """
        ann_n = min(self.train_subset or n_train, n_train)
        snn_n = min(self.snn_train_subset or n_train, n_train)
        prune = (self.hydra_epochs if self.pruning == "hydra" else 0) + self.prune_finetune_epochs
        out = {"ann": self.ann_epochs * ann_n, "prune": (prune if self.sparsity > 0 else 0) * ann_n,
               "finetune": self.snn_epochs * snn_n}
        out["total"] = sum(out.values())
        return out

    def baseline_schedule(self, n_train: int) -> tuple[int, int]:
        """(epochs, images per epoch) of the end-to-end baseline: the conversion route's image-passes."""
        n = min(self.snn_train_subset or n_train, n_train)
        if self.baseline_epochs:
            return self.baseline_epochs, n
        total = self.image_passes(n_train)["total"]
        epochs = max(1, round(total / n))
        return epochs, n


#: Values that settings added later had in effect before they existed (runs started then continue with them).
LEGACY_SETTINGS = {"ann_activation": "relu", "conversion_recipe": "seed", "reset": "hard", "percentile": 99.7,
                   "calib_time_steps": 100, "threshold_scale": 0.3, "stage_eval_n": 0}

#: Settings that only change what is measured, and the stages that changing one re-runs (no training).
MEASUREMENT_SETTINGS = {
    "eval_preset": ("evaluate", "report"),
    "eval_n": ("evaluate", "report"),
    "efficiency_n": ("efficiency", "report"),
    "stage_eval_n": ("report",),
    "eval_eps": ("evaluate", "report"),
    "device": (),
    "stage_eval_preset": ("report",),
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
            old = {**asdict(PipelineConfig()), **LEGACY_SETTINGS, **data.get("config", {})}
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
                       augment=c.augment, device=c.device,
                       train_subset=subset if subset is not None else c.train_subset, test_subset=1000,
                       objective=objective, objective_params=params, sync_bn=True)


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
    device = D.resolve_device(c.device)  # under torchrun: each rank's own GPU

    def _load(path):
        return checkpoint.load(path).to(device)

    def ann_stage() -> dict:
        if c.ann_checkpoint:
            model = _load(c.ann_checkpoint)
            if model.config.kind != "ann":
                raise UsageError(f"--ann {c.ann_checkpoint} is an {model.config.kind.upper()}; give an ANN checkpoint")
            src = checkpoint.read_meta(c.ann_checkpoint)
            checkpoint.save(run / "ann" / "model", model, dataset=src.get("dataset"), recipe=src.get("recipe"),
                            history=src.get("history"), source=str(c.ann_checkpoint))
            return {"source": str(c.ann_checkpoint)}
        torch.manual_seed(c.seed)
        model = build(c.model, kind="ann", num_classes=info.num_classes, in_channels=info.in_channels,
                      image_size=info.image_size, mean=info.mean, std=info.std, width=c.width,
                      activation=c.ann_activation, levels=c.ann_levels or c.time_steps)
        name, params = _ann_objective(c)
        hist = fit(model, train_set, test_set, _train_cfg(c, epochs=c.ann_epochs, lr=c.ann_lr, objective=name, params=params),
                   run / "ann", resume=(run / "ann" / "model" / checkpoint.CONFIG).exists(), progress=progress, meta=meta)
        return {"test_acc": hist[-1].get("test_acc") if hist else None}

    def prune_stage() -> dict:
        from .sparsity.hydra import prune_hydra
        from .sparsity.prune import prune_lwm, prune_random

        model = _load(run / "ann" / "model")
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
        from .convert import convert, resolve_recipe

        ann = _load(run / "prune" / "model")
        calib = batches(train_set, c.calib_batch_size, shuffle=True, seed=c.seed)
        overrides = dict(reset=c.reset, percentile=c.percentile, calib_time_steps=c.calib_time_steps,
                         scale=c.threshold_scale)
        recipe = resolve_recipe(ann, c.conversion_recipe, **overrides)
        snn = convert(ann, calib, recipe=recipe, time_steps=c.time_steps, n_calib_batches=c.calib_batches,
                      log=lambda line: console.print(f"  {line}"))
        checkpoint.save(run / "snn" / "model", snn, **meta, conversion={"recipe": recipe.to_dict()})
        return {"recipe": recipe.to_dict()}

    def finetune_stage() -> dict:
        snn = _load(run / "snn" / "model")
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
        snn = build(c.model, kind="snn", neuron="if", time_steps=c.time_steps, reset=c.reset or "hard", num_classes=info.num_classes,
                    in_channels=info.in_channels, image_size=info.image_size, mean=info.mean, std=info.std, width=c.width)
        if c.sparsity > 0:
            if c.baseline == "random":
                prune_random(snn, c.sparsity, torch.Generator().manual_seed(c.seed), **c.prune_ends)
            else:
                pruned = _load(run / "prune" / "model")
                masks = dict(pruned.named_modules())
                for name, module in prunable_layers(snn):
                    set_mask(module, masks[name].weight_mask if hasattr(masks[name], "weight_mask") else torch.ones_like(module.weight))
        name, params = _snn_objective(c)
        epochs, per_epoch = c.baseline_schedule(len(train_set))
        cfg = _train_cfg(c, epochs=epochs, lr=c.baseline_lr, objective=name, params=params, subset=per_epoch)
        hist = fit(snn, train_set, test_set, cfg, run / "baseline", progress=progress, meta=meta,
                   resume=(run / "baseline" / "model" / checkpoint.CONFIG).exists())
        return {"epochs": epochs, "image_passes": epochs * per_epoch,
                "test_acc": hist[-1].get("test_acc") if hist else None}

    def stage_accuracy(stage: str) -> dict:
        """Clean and robust accuracy of a stage's model on the first stage_eval_n test images."""
        from .evaluate import evaluate

        model = _load(run / STAGE_MODELS[stage])
        res = evaluate(model, test_set, preset=c.stage_eval_preset, eps=c.test_eps, n=c.stage_eval_n, seed=c.seed,
                       dataset=info.name, warn=False, diagnostics=False, cache_dir=run / CACHE_DIRNAME)
        acc = {"clean": res.clean_acc, "robust": res.results[0].robust_acc, "n": c.stage_eval_n,
               "preset": c.stage_eval_preset, "eps": c.test_eps}
        console.print(f"  {stage}: clean {acc['clean']:.1%}, robust ({c.stage_eval_preset}) {acc['robust']:.1%} "
                      f"on {c.stage_eval_n} test images")
        return acc

    def final_model_dir() -> Path:
        return run / ("baseline" if c.baseline else "finetune") / "model"

    def evaluate_stage() -> dict:
        from .cli.evaluate import print_result
        from .evaluate import evaluate

        model = _load(final_model_dir())
        res = evaluate(model, test_set, preset=c.eval_preset, eps=c.test_eps, n=c.eval_n, seed=c.seed,
                       command=command, dataset=info.name, warn=False, cache_dir=run / CACHE_DIRNAME)
        print_result(res, console)
        path = res.save(run / f"eval-{c.eval_preset}.json")
        final = run / "final"
        if D.is_main() and not final.exists():
            final.symlink_to(final_model_dir().relative_to(run), target_is_directory=True)
        from .train import accuracy

        full = accuracy(model, test_set, batch_size=250)  # clean accuracy on the whole test split
        console.print(f"  clean accuracy on all {len(test_set)} test images: {full:.2%}")
        return {"clean_acc": res.clean_acc, "robust_acc": res.results[0].robust_acc, "result": str(path),
                "full_test_acc": full, "full_test_n": len(test_set)}

    def efficiency_stage() -> dict:
        from .metrics import efficiency

        model = _load(final_model_dir())
        eff = efficiency(model, test_set, n=c.efficiency_n)
        cmd = f"robustsnn efficiency {final_model_dir()} --n {c.efficiency_n} --json {run / 'efficiency.json'}"
        atomic_write_json(run / "efficiency.json", {"command": cmd, "checkpoint": str(final_model_dir()), **eff})
        return {"result": str(run / "efficiency.json")}

    def report_stage() -> dict:
        from .report import write_report

        for stage in STAGE_MODELS:  # stages finished before stage_eval_n was set
            record = next((r for r in state.data["stages"] if r["name"] == stage), None)
            if record is not None and "accuracy" not in record and c.stage_eval_n:
                record["accuracy"] = stage_accuracy(stage)
                state.save()

        paths = write_report(run)
        return {"html": str(paths["html"]), "md": str(paths["md"])}

    runners: dict[str, Callable[[], dict]] = {
        "ann": ann_stage, "prune": prune_stage, "convert": convert_stage, "finetune": finetune_stage,
        "baseline": baseline_stage, "evaluate": evaluate_stage, "efficiency": efficiency_stage, "report": report_stage,
    }
    state.data["image_passes"] = {"conversion": c.image_passes(len(train_set)),
                                  "baseline": (lambda e, n: {"epochs": e, "per_epoch": n, "total": e * n})(
                                      *c.baseline_schedule(len(train_set)))}
    state.save()
    stages = list(c.stages())
    if c.baseline == "random" and c.sparsity >= 0:
        stages = [s for s in stages if s not in ("ann", "prune")]
    for stage in stages:
        if state.done(stage):
            console.print(f"[dim]stage {stage}: done earlier, skipped[/]")
            if stop_after == stage:
                break
            continue
        console.print(f"[bold]stage {stage}[/]")
        t0 = time.perf_counter()
        result = runners[stage]() or {}
        if stage in STAGE_MODELS and c.stage_eval_n:
            result["accuracy"] = stage_accuracy(stage)
        state.finish(stage, time.perf_counter() - t0, **result)
        D.barrier()  # the next stage reads what rank 0 wrote
        if stop_after == stage:
            break
    return state.data
