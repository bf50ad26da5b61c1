"""A small finished run directory for the report tests (built once per test session).

Layout, as ``robustsnn train --out RUN`` + ``evaluate`` + ``efficiency`` leave it::

    RUN/snn/model/         checkpoint (tiny CNN SNN, T=2, 1 epoch on 128 synthetic images)
    RUN/snn/log.json       training history
    RUN/eval-quick.json    robustsnn.evaluate(preset="quick", eps=[0.05, 0.1], n=64)
    RUN/efficiency.json    robustsnn.metrics.efficiency on 64 images
"""

from __future__ import annotations

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
