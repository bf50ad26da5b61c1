"""A small finished run directory for the report tests (built once per test session).

Layout, as ``robustsnn train --out RUN`` + ``evaluate`` + ``efficiency`` leave it::

    RUN/snn/model/         checkpoint (tiny CNN SNN, T=2, 1 epoch on 128 synthetic images)
    RUN/snn/log.json       training history
    RUN/eval-quick.json    robustsnn.evaluate(preset="quick", eps=[0.05, 0.1], n=64)
    RUN/efficiency.json    robustsnn.metrics.efficiency on 64 images

:func:`write_pipeline` adds a ``RUN/pipeline.json`` with per-stage accuracy records, in the
current layout (``"accuracy"``) or in the older one (``test_acc`` / ``test_acc_1000`` only).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers import synthetic_fmnist, tiny_snn

from robustsnn.evaluate import evaluate
from robustsnn.io import atomic_write_json
from robustsnn.metrics import efficiency
from robustsnn.train import TrainConfig, fit

TRAIN_COMMAND = "robustsnn train --model cnn --width 0.25 --time-steps 2 --epochs 1 --out RUN"
EVAL_COMMAND = "robustsnn evaluate RUN/snn/model --preset quick --eps 0.05,0.1 --n 64"


def build_run(run: Path) -> Path:
    """Train, evaluate and measure a tiny SNN into ``run`` (about 10 s on one core)."""
    run.mkdir(parents=True, exist_ok=True)
    train, test = synthetic_fmnist(128, seed=0), synthetic_fmnist(64, seed=1)
    model = tiny_snn(time_steps=2)
    meta = {"dataset": "fashion-mnist", "command": TRAIN_COMMAND, "options": {"model": "cnn", "width": 0.25, "time_steps": 2}}
    fit(model, train, test, TrainConfig(epochs=1, batch_size=32, lr=0.05), run / "snn", progress=False, meta=meta)
    res = evaluate(model, test, preset="quick", eps=[0.05, 0.1], n=64, calibration_size=32, probe_queries=100,
                   command=EVAL_COMMAND, warn=False)
    res.save(run / "eval-quick.json")
    eff = efficiency(model, test, n=64)
    atomic_write_json(run / "efficiency.json",
                      {"command": "robustsnn efficiency RUN/snn/model --n 64 --json RUN/efficiency.json",
                       "checkpoint": str(run / "snn" / "model"), "dataset": "fashion-mnist", "split": "test", **eff})
    return run


def cached_run(tmp_path_factory) -> Path:
    """The session's run directory, built on first use."""
    base = tmp_path_factory.getbasetemp() / "report-run"
    done = base / ".complete"
    if not done.exists():
        shutil.rmtree(base, ignore_errors=True)
        build_run(base)
        done.write_text("ok\n")
    return base


def copy_run(src: Path, dst: Path) -> Path:
    """A private copy of a run directory (tests that modify it)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".complete", "report*"))
    return dst


def _acc(clean, robust, n=200, eps=0.1):
    return {"clean": clean, "robust": robust, "n": n, "preset": "quick", "eps": eps}


#: Stage records as the pipeline writes them now: clean and robust accuracy of every training stage.
NEW_STAGES = [
    {"name": "ann", "status": "done", "seconds": 10.0, "test_acc": 0.81, "accuracy": _acc(0.815, 0.62)},
    {"name": "prune", "status": "done", "seconds": 5.0, "accuracy": _acc(0.79, 0.585)},
    {"name": "convert", "status": "done", "seconds": 2.0, "test_acc_1000": 0.47, "accuracy": _acc(0.47, 0.305)},
    {"name": "finetune", "status": "done", "seconds": 8.0, "test_acc": 0.59, "accuracy": _acc(0.605, 0.44)},
    {"name": "evaluate", "status": "done", "seconds": 3.0, "clean_acc": 0.61, "robust_acc": 0.4},
]

#: The same stages as a pipeline.json written before per-stage accuracy existed (clean only, some stages silent).
OLD_STAGES = [
    {"name": "ann", "status": "done", "seconds": 10.0, "test_acc": 0.762},
    {"name": "prune", "status": "done", "seconds": 5.0},
    {"name": "convert", "status": "done", "seconds": 2.0, "test_acc_1000": 0.454},
    {"name": "finetune", "status": "done", "seconds": 8.0, "test_acc": 0.644},
    {"name": "evaluate", "status": "done", "seconds": 3.0, "clean_acc": 0.618, "robust_acc": 0.348},
]


def write_pipeline(run: Path, stages: list[dict]) -> Path:
    """Write ``run/pipeline.json`` with these stage records (and a small configuration)."""
    path = run / "pipeline.json"
    path.write_text(json.dumps({"format": "robustsnn-pipeline", "command": "robustsnn pipeline --out RUN",
                                "config": {"sparsity": 0.9, "pruning": "lwm", "time_steps": 2}, "stages": stages}))
    return path
