"""Find and read everything a run directory holds: checkpoints, evaluations, efficiency, logs.

Nothing here is required: a missing or unreadable input becomes an entry in
:attr:`RunData.missing` (why a section is empty and what to run) or
:attr:`RunData.problems` (a file that exists but could not be read), never an
exception. The only errors are about the run directory itself.

What is recognised (anywhere below ``RUN_DIR`` unless said otherwise):

=======================  ==================================================================
checkpoint               a directory holding ``config.json`` (``"format":
                         "robustsnn-checkpoint"``) and ``weights.safetensors``
final model              ``RUN_DIR/final`` (a symlink or a directory), else the SNN
                         checkpoint written last, else the checkpoint written last
evaluation               a ``*.json`` whose top-level ``"format"`` is ``"robustsnn-eval"``
efficiency               ``RUN_DIR/efficiency.json`` (``robustsnn efficiency --json``), else
                         another ``*.json`` with ``energy``, ``memory`` and ``ops``; computed
                         for the final SNN (and saved) when absent
training log             ``*/log.json`` with a ``history`` (else a checkpoint's history)
pipeline                 ``RUN_DIR/pipeline.json``: ``{"stages": [...], "config": {...}}``
stage accuracy           each training stage's ``"accuracy"`` in pipeline.json (clean and
                         robust on the first n test images), else its older ``test_acc`` /
                         ``test_acc_1000``, else the last ``test_acc`` of that stage's log
=======================  ==================================================================
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..checkpoint import CONFIG, FORMAT as CHECKPOINT_FORMAT, WEIGHTS
from ..errors import RobustSNNError, UsageError
from ..evaluate import RESULT_FORMAT, EvalResult

__all__ = ["Checkpoint", "EvalFile", "TrainLog", "RunData", "collect", "stage_accuracies", "PRESET_RANK", "STAGE_LABELS"]

#: How much an evaluation preset says about robustness (higher: stronger).
PRESET_RANK = {"quick": 0, "custom": 1, "standard": 2, "autoattack": 3, "full": 4}

#: The pipeline's training stages in the order they run, and what the model after each one is.
STAGE_LABELS = {
    "ann": "robust ANN",
    "prune": "pruned ANN",
    "convert": "converted SNN (before finetuning)",
    "finetune": "finetuned SNN",
    "baseline": "end-to-end SNN",
}

MAX_FILES = 20000  # stop walking a directory tree this large (not a run directory)
MAX_JSON_BYTES = 64 * 2**20
SKIP_DIRS = {"__pycache__", "node_modules"}


@dataclass
class Checkpoint:
    """A checkpoint directory found in the run."""

    path: Path
    rel: str
    meta: dict
    mtime: float

    @property
    def kind(self) -> str:
        return str((self.meta.get("model") or {}).get("kind", "?"))

    @property
    def stage(self) -> str:
        """The run (stage) directory it belongs to: ``snn`` for ``snn/model``."""
        p = Path(self.rel)
        return str(p.parent) if p.name == "model" else str(p)

    def describe(self) -> str:
        """``cnn SNN, T=4, lif neurons, width 0.5`` from the model config."""
        m = self.meta.get("model") or {}
        parts = [f"{m.get('name', '?')} {self.kind.upper()}"]
        if self.kind == "snn":
            parts.append(f"T={m.get('time_steps')}")
            neuron = (m.get("neuron") or {}).get("kind")
            if neuron:
                parts.append(f"{neuron.upper()} neurons")
            if m.get("encoding") and m.get("encoding") != "direct":
                parts.append(f"{m['encoding']} encoding")
        if m.get("width") not in (None, 1, 1.0):
            parts.append(f"width {m['width']:g}")
        return ", ".join(parts)


@dataclass
class EvalFile:
    """An evaluation result file."""

    path: Path
    rel: str
    result: EvalResult
    mtime: float


@dataclass
class TrainLog:
    """The per-epoch history of one training stage."""

    stage: str
    rel: str
    history: list[dict]
    recipe: dict | None = None


@dataclass
class RunData:
    """Everything :func:`collect` found, plus why the rest is missing."""

    run_dir: Path
    pipeline: dict | None = None
    checkpoints: list[Checkpoint] = field(default_factory=list)
    final: Checkpoint | None = None
    final_reason: str = ""
    sparsity: list[dict] | None = None
    evals: list[EvalFile] = field(default_factory=list)
    main_eval: EvalFile | None = None
    efficiency: dict | None = None
    efficiency_rel: str | None = None
    efficiency_note: str | None = None
    ann_memory: dict | None = None
    ann_rel: str | None = None
    logs: list[TrainLog] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    version: str = __version__

    @property
    def warnings(self) -> list[tuple[str, str]]:
        """(evaluation file, message) of every tripped diagnostic, main evaluation first."""
        ordered = ([self.main_eval] if self.main_eval else []) + [e for e in self.evals if e is not self.main_eval]
        return [(e.rel, w) for e in ordered for w in e.result.warnings]

    @property
    def empty(self) -> bool:
        return not (self.pipeline or self.checkpoints or self.evals or self.efficiency or self.logs)


# ---------------------------------------------------------------------------- helpers
def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


def _read_json(path: Path, problems: list[str], root: Path):
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            problems.append(f"{_rel(path, root)}: larger than {MAX_JSON_BYTES >> 20} MiB, skipped")
            return None
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"{_rel(path, root)}: unreadable JSON ({str(e).splitlines()[0]})")
        return None


def _checkpoint_at(path: Path, root: Path, problems: list[str]) -> Checkpoint | None:
    """A :class:`Checkpoint` if ``path`` (or ``path/model``) is a robustsnn checkpoint."""
    for p in (path, path / "model"):
        if (p / CONFIG).is_file() and (p / WEIGHTS).is_file():
            meta = _read_json(p / CONFIG, problems, root)
            if isinstance(meta, dict) and meta.get("format") == CHECKPOINT_FORMAT:
                mtime = max((p / CONFIG).stat().st_mtime, (p / WEIGHTS).stat().st_mtime)
                return Checkpoint(path=p.resolve(), rel=_rel(p, root), meta=meta, mtime=mtime)
    return None


def _is_efficiency(d) -> bool:
    return isinstance(d, dict) and all(k in d for k in ("energy", "memory", "ops"))


def _command_paths(command: str | None, run_dir: Path) -> set[Path]:
    """Existing paths named in a command line (relative ones tried from the cwd and the run's parents)."""
    out: set[Path] = set()
    if not command:
        return out
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = command.split()
    bases = [Path.cwd(), run_dir, run_dir.parent, run_dir.parent.parent]
    for tok in tokens:
        if tok.startswith("-"):
            continue
        cands = [Path(tok)] if os.path.isabs(tok) else [b / tok for b in bases]
        for c in cands:
            try:
                if c.exists():
                    out.add(c.resolve())
                    if (c / "model" / CONFIG).exists():
                        out.add((c / "model").resolve())
            except OSError:
                pass
    return out


# ---------------------------------------------------------------------------- walk
def _walk(run_dir: Path, data: RunData, skip: set[Path]) -> tuple[list[tuple[Path, object]], dict[str, TrainLog]]:
    """Checkpoints into ``data``; returns the other JSON files (path, parsed) and the logs by stage."""
    jsons: list[tuple[Path, object]] = []
    logs: dict[str, TrainLog] = {}
    seen_ckpt: set[Path] = set()
    files = 0
    for dirpath, dirnames, filenames in os.walk(run_dir, followlinks=False):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and n not in SKIP_DIRS and (d / n).resolve() not in skip)
        files += len(filenames)
        if files > MAX_FILES:
            data.problems.append(f"more than {MAX_FILES} files below {run_dir}: stopped looking (is this a run directory?)")
            break
        names = set(filenames)
        if CONFIG in names and WEIGHTS in names:
            ck = _checkpoint_at(d, run_dir, data.problems)
            if ck is not None:
                if ck.path not in seen_ckpt:
                    seen_ckpt.add(ck.path)
                    data.checkpoints.append(ck)
                continue  # config.json / optimizer.json of a checkpoint are not results
        for name in sorted(names):
            if not name.endswith(".json") or name.startswith("."):
                continue
            path = d / name
            obj = _read_json(path, data.problems, run_dir)
            if obj is None:
                continue
            if name == "log.json" and isinstance(obj, dict) and isinstance(obj.get("history"), list):
                stage = _rel(d, run_dir)
                hist = [h for h in obj["history"] if isinstance(h, dict)]
                recipe = obj.get("recipe") if isinstance(obj.get("recipe"), dict) else None
                if hist:
                    logs[stage] = TrainLog(stage=stage, rel=_rel(path, run_dir), history=hist, recipe=recipe)
            else:
                jsons.append((path, obj))
    return jsons, logs


def _fraction(v) -> float | None:
    """``v`` if it is an accuracy (a number in [0, 1]), else None."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 else None


def stage_accuracies(pipeline: dict | None, logs: list[TrainLog] = (), problems: list[str] | None = None) -> list[dict]:
    """Clean and robust accuracy of the model after each training stage of a pipeline run.

    Args:
        pipeline: pipeline.json's content (None: not a pipeline run).
        logs: the run's training logs; a stage whose record has no accuracy (an older
            pipeline.json) falls back to the last ``test_acc`` of the log of the same name.
        problems: where an ``"accuracy"`` record in an unexpected layout is named.
    Returns:
        One dict per finished stage of :data:`STAGE_LABELS`, in that order: ``stage``, ``label``,
        ``clean`` (fraction or None), ``robust`` (fraction or None: not measured), ``n`` (test
        images or None: unknown), ``preset`` and ``eps`` of the robust number (or None) and
        ``source`` (where the numbers come from). Stages with no number at all are left out.
    """
    if not pipeline:
        return []
    records = {st.get("name"): st for st in pipeline.get("stages") or [] if isinstance(st, dict) and st.get("status", "done") == "done"}
    by_stage = {log.stage: log for log in logs}
    rows = []
    for stage, label in STAGE_LABELS.items():
        st = records.get(stage)
        if st is None:
            continue
        row = {"stage": stage, "label": label, "clean": None, "robust": None, "n": None, "preset": None, "eps": None, "source": None}
        acc = st.get("accuracy")
        if acc is not None:
            clean = _fraction(acc.get("clean")) if isinstance(acc, dict) else None
            if clean is None:
                if problems is not None:
                    problems.append(f"pipeline.json: stage {stage}: \"accuracy\" in an unexpected layout ({str(acc)[:80]}), ignored")
            else:
                n, eps = acc.get("n"), acc.get("eps")
                row.update(clean=clean, robust=_fraction(acc.get("robust")), source="pipeline.json accuracy",
                           n=n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None,
                           preset=str(acc["preset"]) if acc.get("preset") is not None else None,
                           eps=float(eps) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else None)
        if row["clean"] is None:
            log = by_stage.get(stage)
            last = log.history[-1] if log and log.history else {}
            n_log = last.get("test_images") if isinstance(last.get("test_images"), int) else None
            if _fraction(st.get("test_acc_1000")) is not None:
                row.update(clean=_fraction(st["test_acc_1000"]), n=1000, source="pipeline.json test_acc_1000")
            elif _fraction(st.get("test_acc")) is not None:
                row.update(clean=_fraction(st["test_acc"]), n=n_log, source="pipeline.json test_acc")
            elif _fraction(last.get("test_acc")) is not None:
                row.update(clean=_fraction(last["test_acc"]), n=n_log, source=f"training log {log.rel}")
        if row["clean"] is not None:
            rows.append(row)
    return rows


def _pick_final(run_dir: Path, data: RunData) -> None:
    final = run_dir / "final"
    if final.exists():
        ck = _checkpoint_at(final, run_dir, data.problems)
        if ck is not None:
            known = next((c for c in data.checkpoints if c.path == ck.path), None)
            if known is None:
                data.checkpoints.append(ck)
            data.final = known or ck
            target = f" -> {_rel(ck.path, run_dir.resolve())}" if final.is_symlink() else ""
            data.final_reason = f"RUN_DIR/final{target}"
            return
        data.problems.append(f"{_rel(final, run_dir)} exists but is not a checkpoint (it needs {CONFIG} and {WEIGHTS})")
    snns = [c for c in data.checkpoints if c.kind == "snn"]
    if snns:
        data.final = max(snns, key=lambda c: c.mtime)
        data.final_reason = "the SNN checkpoint written last" if len(snns) > 1 else "the only SNN checkpoint"
    elif data.checkpoints:
        data.final = max(data.checkpoints, key=lambda c: c.mtime)
        data.final_reason = "no SNN checkpoint in the run: the checkpoint written last"


def _pick_main_eval(run_dir: Path, data: RunData) -> None:
    if not data.evals:
        return
    final = data.final

    def score(e: EvalFile):
        r = e.result
        refers = 0
        if final is not None:
            paths = _command_paths(r.command, run_dir)
            stage_dir = final.path.parent if final.path.name == "model" else final.path
            if final.path in paths or e.path.parent.resolve() == stage_dir:
                refers = 2
            elif r.model and r.model == final.meta.get("model"):
                refers = 1
        return (refers, PRESET_RANK.get(r.preset, 1), r.n, e.mtime)

    data.main_eval = max(data.evals, key=score)


def _load_final(data: RunData):
    """The final model (None and a note in ``missing`` when it cannot be loaded)."""
    from ..checkpoint import load

    try:
        return load(data.final.path)
    except (RobustSNNError, OSError, ValueError, KeyError, RuntimeError) as e:
        data.problems.append(f"{data.final.rel}: cannot load the final model ({str(e).splitlines()[0]})")
        return None


def _efficiency_now(data: RunData, model, n: int, save: bool) -> None:
    """Compute (and save) efficiency.json for the final model; memory only without its data set."""
    from ..data import load_dataset
    from ..metrics import efficiency, memory_report

    final = data.final
    name = final.meta.get("dataset")
    command = f"robustsnn efficiency {shlex.quote(str(final.path))} --n {n} --json {shlex.quote(str(data.run_dir / 'efficiency.json'))}"
    try:
        if not name:
            raise UsageError(f"{final.rel}/{CONFIG} does not record its data set")
        test_set = load_dataset(name, "test", download=False)
        report = efficiency(model, test_set, n=n)
    except (RobustSNNError, OSError, ValueError, RuntimeError) as e:
        data.efficiency = {"checkpoint": str(final.path), "memory": memory_report(model)}
        data.efficiency_note = "memory only, computed now from the final model"
        data.missing["energy"] = (
            f"no efficiency.json in the run and the test images are not available ({str(e).splitlines()[0]}); "
            f"run `robustsnn efficiency {final.rel} --json efficiency.json` where the data set is"
        )
        return
    result = {"command": command, "computed_by": "robustsnn report", "checkpoint": str(final.path), "dataset": name,
              "split": "test", "model": final.meta.get("model"), "version": __version__, **report}
    data.efficiency = result
    data.efficiency_note = "computed by robustsnn report"
    if save:
        from ..io import atomic_write_json

        try:
            atomic_write_json(data.run_dir / "efficiency.json", result)
            data.efficiency_rel = "efficiency.json"
            data.efficiency_note += ", saved as efficiency.json"
        except OSError as e:
            data.problems.append(f"could not save efficiency.json ({e}); the report uses the numbers anyway")


# ---------------------------------------------------------------------------- entry point
def collect(run_dir: str | Path, *, n: int = 256, compute: bool = True, skip: list[Path] | None = None) -> RunData:
    """Read a run directory.

    Args:
        run_dir: the directory a pipeline, ``robustsnn train --out`` or the like wrote.
        n: test images for the efficiency measurement when it has to be computed.
        compute: measure the final SNN's efficiency when the run has none (and save it as
            ``RUN_DIR/efficiency.json``); False: read only.
        skip: directories not to look into (the report's own image folder).
    Raises:
        UsageError: ``run_dir`` is missing or not a directory, or ``n`` < 1.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UsageError(f"run directory {run_dir} does not exist; give the directory a robustsnn run wrote (e.g. runs/demo)")
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} is a file, not a run directory; give the directory that holds it ({run_dir.parent})")
    if n < 1:
        raise UsageError(f"--n must be >= 1 (test images for the efficiency measurement), got {n}")
    data = RunData(run_dir=run_dir)
    jsons, logs = _walk(run_dir, data, {p.resolve() for p in (skip or [])})
    root = run_dir.resolve()
    effs: list[tuple[Path, dict]] = []
    for path, obj in jsons:
        if not isinstance(obj, dict):
            continue
        if obj.get("format") == RESULT_FORMAT:
            try:
                res = EvalResult.from_dict(obj)
                _ = res.results[0].robust_acc
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
                data.problems.append(f"{_rel(path, run_dir)}: evaluation result in an unexpected layout ({e})")
                continue
            data.evals.append(EvalFile(path=path, rel=_rel(path, run_dir), result=res, mtime=path.stat().st_mtime))
        elif path.parent.resolve() == root and path.name == "pipeline.json":
            stages = obj.get("stages")
            obj = dict(obj, stages=[st for st in stages if isinstance(st, dict)] if isinstance(stages, list) else [])
            data.pipeline = obj
        elif _is_efficiency(obj):
            effs.append((path, obj))
    data.evals.sort(key=lambda e: e.rel)

    _pick_final(run_dir, data)
    data.checkpoints.sort(key=lambda c: c.rel)

    # training logs: log.json per stage, else the history a checkpoint carries
    for ck in data.checkpoints:
        hist = [h for h in (ck.meta.get("history") or []) if isinstance(h, dict)]
        recipe = ck.meta.get("recipe") if isinstance(ck.meta.get("recipe"), dict) else None
        if ck.stage not in logs and hist:
            logs[ck.stage] = TrainLog(stage=ck.stage, rel=f"{ck.rel}/{CONFIG}", history=hist, recipe=recipe)
    for log in logs.values():  # a plain `robustsnn train --out RUN_DIR`: the stage is the run itself
        if log.stage == ".":
            log.stage = run_dir.resolve().name or "training"
    def written(log: TrainLog) -> float:
        try:
            return (run_dir / log.rel).stat().st_mtime
        except OSError:
            return 0.0

    data.logs = sorted(logs.values(), key=lambda g: (written(g), g.stage))  # in the order the stages ran

    _pick_main_eval(run_dir, data)
    data.stages = stage_accuracies(data.pipeline, data.logs, data.problems)

    # efficiency: RUN_DIR/efficiency.json, else one measured on the final model, else the newest
    if effs:
        top = [e for e in effs if e[0].parent.resolve() == root and e[0].name == "efficiency.json"]
        on_final = [e for e in effs if data.final is not None and _command_paths(str(e[1].get("checkpoint", "")), run_dir) & {data.final.path}]
        path, obj = (top or on_final or sorted(effs, key=lambda e: e[0].stat().st_mtime))[-1]
        data.efficiency, data.efficiency_rel = obj, _rel(path, run_dir)

    model = None
    if data.final is not None:
        model = _load_final(data)
        if model is not None:
            from ..sparsity import sparsity_report

            data.sparsity = sparsity_report(model)
    if data.efficiency is None and model is not None:
        if data.final.kind == "snn" and compute:
            _efficiency_now(data, model, n, save=True)
        else:
            from ..metrics import memory_report

            data.efficiency = {"checkpoint": str(data.final.path), "memory": memory_report(model)}
            data.efficiency_note = "memory only, computed now from the final model"
            why = "the final model is not an SNN" if data.final.kind != "snn" else "computing it was turned off"
            data.missing["energy"] = f"no efficiency.json in the run and {why}; run `robustsnn efficiency CKPT --json RUN_DIR/efficiency.json`"

    # the ANN of the run (dense memory to compare with)
    anns = [c for c in data.checkpoints if c.kind == "ann" and c is not data.final]
    if anns:
        from ..checkpoint import load
        from ..metrics import memory_report

        ann = max(anns, key=lambda c: c.mtime)
        try:
            data.ann_memory, data.ann_rel = memory_report(load(ann.path)), ann.rel
        except (RobustSNNError, OSError, ValueError, KeyError, RuntimeError) as e:
            data.problems.append(f"{ann.rel}: cannot load the ANN ({str(e).splitlines()[0]})")

    # what is missing, and what to run
    if not data.checkpoints:
        data.missing["checkpoint"] = "no checkpoint (a directory with config.json + weights.safetensors) under RUN_DIR; train one with `robustsnn train --out RUN_DIR`"
    elif data.sparsity is None:
        data.missing["sparsity"] = f"the final model {data.final.rel} could not be loaded"
    if not data.evals:
        data.missing["evaluation"] = "no evaluation result (*.json with \"format\": \"robustsnn-eval\") under RUN_DIR; run `robustsnn evaluate CKPT --out RUN_DIR/eval.json`"
    if data.efficiency is None:
        data.missing["efficiency"] = "no efficiency.json and no final model to measure; run `robustsnn efficiency CKPT --json RUN_DIR/efficiency.json`"
    elif not data.efficiency.get("spikes") and "energy" in data.efficiency and data.efficiency.get("kind") == "ann":
        data.missing["spikes"] = "the measured model is an ANN: it has no spikes"
    if not data.logs:
        data.missing["training"] = "no training log (log.json) and no checkpoint history under RUN_DIR"
    return data
