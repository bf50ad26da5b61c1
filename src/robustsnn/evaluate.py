"""``robustsnn.evaluate``: one typed entry point for a robustness evaluation that checks itself.

>>> res = robustsnn.evaluate(model, (x_test, y_test), preset="standard", eps=0.1, n=1000)
>>> res.robust_acc, res.warnings
>>> res.save("result.json")

For every budget it runs a preset's ensemble of (attack x gradient estimator)
members with early exit (:mod:`robustsnn.attacks.ensemble`), records which
member broke each sample, and runs the gradient-masking diagnostics
(:mod:`robustsnn.attacks.diagnostics`). Tripped diagnostics are issued as
:class:`~robustsnn.attacks.base.RobustnessWarning` and stored in the result.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from . import __version__
from . import distributed as D
from .errors import UsageError
from .io import jsonable
from .precision import autocast, check_precision
from .attacks.base import check_eps, check_norm
from .attacks.diagnostics import (
    Diagnostics,
    check_black_box,
    check_eps_monotone,
    check_estimator_gap,
    check_large_eps,
    check_more_steps,
    check_zero_gradients,
    large_eps_for,
    probe_black_box,
)
from .attacks.ensemble import Ensemble, Member, as_member
from .attacks.eot import default_eot, default_votes, is_stochastic, predict
from .attacks.presets import calibrate_estimator, essential_members, get_preset, has_spiking_layers, preset_members
from .attacks.strongest import OrderedEnsemble
from .attacks.transfer import ann_twin

__all__ = ["evaluate", "EvalResult", "EpsResult", "RESULT_FORMAT"]

RESULT_FORMAT = "robustsnn-eval"

Progress = Callable[[str, float, float], None]


@dataclass
class EpsResult:
    """Outcome at one budget.

    Attributes:
        eps: the budget.
        clean_acc, robust_acc: accuracy on clean images and under the whole ensemble.
        members: per member (in order): label, spec, samples attacked, samples it broke
            first, ensemble accuracy after it (``running_acc``), accuracy alone (only without
            early exit), seconds, messages.
        breaker: per sample, -2 wrong on the clean image, -1 robust, k = index of the member
            that broke it.
        calibration: the estimator calibration (presets autoattack/full), else None.
        seconds: wall time of the ensemble.
        margin: per sample, the smallest logit margin z_y - max_{j != y} z_j the attacks reached
            (rounded to 1e-4; None where undefined: wrong on the clean image, stochastic model);
            for a robust sample, how close the attacks came to breaking it.
    """

    eps: float
    clean_acc: float
    robust_acc: float
    members: list[dict]
    breaker: list[int]
    calibration: dict | None = None
    seconds: float = 0.0
    margin: list | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "EpsResult":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class EvalResult:
    """A robustness evaluation: every number, the settings, the diagnostics; serialises to JSON.

    ``robust_acc`` is the accuracy at the first budget; ``at(eps)`` gives any other.
    """

    preset: str
    norm: str
    eps: list[float]
    n: int
    seed: int
    clean_acc: float
    results: list[EpsResult]
    members: list[dict]
    diagnostics: dict
    warnings: list[str]
    settings: dict
    timings: dict
    model: dict | None = None
    dataset: str | None = None
    command: str | None = None
    version: str = __version__
    notes: list[str] = field(default_factory=list)
    environment: dict = field(default_factory=dict)

    @property
    def robust_acc(self) -> float:
        """Ensemble robust accuracy at the first budget."""
        return self.results[0].robust_acc

    def at(self, eps: float) -> EpsResult:
        """The :class:`EpsResult` for budget ``eps``."""
        for r in self.results:
            if abs(r.eps - float(eps)) < 1e-12:
                return r
        raise KeyError(f"eps={eps:g} was not evaluated; budgets: {', '.join(f'{e:g}' for e in self.eps)}")

    @property
    def tripped(self) -> bool:
        """True if any diagnostic tripped."""
        return bool(self.warnings)

    def to_dict(self) -> dict:
        d = {"format": RESULT_FORMAT, "format_version": 1}
        for k in self.__dataclass_fields__:
            v = getattr(self, k)
            d[k] = [r.to_dict() for r in v] if k == "results" else v
        return d

    def to_json(self, indent: int | None = 2) -> str:
        """The result as JSON text."""
        return json.dumps(self.to_dict(), indent=indent, default=jsonable)

    def save(self, path: str | Path) -> Path:
        """Write the JSON to ``path`` atomically (temporary file, then ``os.replace``)."""
        from .io import atomic_write

        text = self.to_json() + "\n"
        return atomic_write(path, lambda p: p.write_text(text))

    @classmethod
    def from_dict(cls, d: dict) -> "EvalResult":
        if d.get("format") != RESULT_FORMAT:
            raise UsageError(f"not a robustsnn evaluation result (format {d.get('format')!r})")
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        kw["results"] = [EpsResult.from_dict(r) for r in d["results"]]
        return cls(**kw)

    @classmethod
    def load(cls, path: str | Path) -> "EvalResult":
        """Read a result written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def summary(self) -> str:
        """A plain-text table: clean, every member's running accuracy, the ensemble, warnings."""
        lines = [f"preset {self.preset}  norm {self.norm}  n={self.n}  seed={self.seed}  clean {self.clean_acc:.2%}"]
        for r in self.results:
            lines.append(f"eps={r.eps:g}")
            for m in r.members:
                lines.append(f"  {m['label']:<44} broke {m['broke']:>5}  -> {m['running_acc']:.2%}")
            lines.append(f"  {'ensemble (worst case)':<44} {'':>11}    {r.robust_acc:.2%}")
        lines += [f"WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


# ---------------------------------------------------------------------------- data
def _margins(margin: torch.Tensor | None) -> list | None:
    """Per-sample margins for JSON: rounded to 1e-4, NaN -> None."""
    if margin is None:
        return None
    return [None if m != m else round(m, 4) for m in margin.tolist()]


def _as_tensors(data, n: int | None, data_dir=None) -> tuple[torch.Tensor, torch.Tensor, str | None]:
    """(x float [N, C, H, W] in [0, 1], y int64 [N], dataset name) from any accepted ``data``."""
    name = None
    if isinstance(data, str):
        from .data import load_dataset

        ds = load_dataset(data, "test", data_dir=data_dir)
        name = ds.info.name
        data = ds
    if hasattr(data, "images") and hasattr(data, "labels"):  # robustsnn ArrayDataset
        name = name or getattr(getattr(data, "info", None), "name", None)
        k = len(data) if n is None else min(int(n), len(data))
        x, y = data.images[:k], data.labels[:k]
    elif isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[0]):
        x, y = data
        if n is not None:
            x, y = x[: int(n)], y[: int(n)]
    else:  # an iterable of (x, y) batches: a DataLoader, robustsnn.data.batches(...)
        xs, ys, count = [], [], 0
        for xb, yb in data:
            xs.append(torch.as_tensor(xb))
            ys.append(torch.as_tensor(yb))
            count += xs[-1].shape[0]
            if n is not None and count >= n:
                break
        if not xs:
            raise UsageError("data is empty")
        x, y = torch.cat(xs), torch.cat(ys)
        if n is not None:
            x, y = x[: int(n)], y[: int(n)]
    x = torch.as_tensor(x)
    if x.dtype == torch.uint8:
        x = x.float().div(255.0)
    x = x.float()
    y = torch.as_tensor(y).long().reshape(-1)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.shape[0] != y.shape[0]:
        raise UsageError(f"{x.shape[0]} images but {y.shape[0]} labels; give one label per image")
    if x.shape[0] == 0:
        raise UsageError("no samples to evaluate (n=0 or empty data); give at least one image")
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        kind = "NaN" if bool(torch.isnan(x).any()) else "Inf"
        raise UsageError(
            f"{int(bad.sum())} pixel(s) are {kind} (first in image {int(bad.flatten(1).any(1).nonzero()[0])}); "
            "images must be finite pixels in [0, 1]"
        )
    if float(x.min()) < 0 or float(x.max()) > 1:
        hint = "; divide by 255" if float(x.max()) > 1.5 else ""
        raise UsageError(
            f"images must be pixels in [0, 1] (normalisation belongs inside the model), "
            f"got [{float(x.min()):.3g}, {float(x.max()):.3g}]{hint}"
        )
    return x, y, name


def _number(text: str) -> float:
    """``"0.1"`` or ``"8/255"`` -> float."""
    t = text.strip()
    try:
        if "/" in t:
            a, b = t.split("/", 1)
            return float(a) / float(b)
        return float(t)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"eps {t!r} is not a number; give pixel units like 0.1 or 8/255") from None


def _parse_eps(eps) -> list[float]:
    """One budget, a sequence, or a comma-separated string (``"0.05,8/255"``) -> distinct floats, in order."""
    if isinstance(eps, str):
        eps = [_number(e) for e in eps.split(",") if e.strip()]
    if isinstance(eps, (int, float)):
        eps = [eps]
    out = []
    for e in eps:
        e = float(e)
        if e not in out:
            out.append(e)
    if not out:
        raise UsageError("give at least one eps")
    return out


def _load_source(src, device):
    if src is None or isinstance(src, nn.Module):
        return src, (None if src is None else type(src).__name__)
    from . import checkpoint

    return checkpoint.load(src).to(device).eval(), str(src)


# ---------------------------------------------------------------------------- entry point
def evaluate(
    model: nn.Module,
    data,
    *,
    preset: str = "standard",
    eps: float | Sequence[float] | str = 0.1,
    norm: str = "Linf",
    n: int | None = 1000,
    batch_size: int = 256,
    seed: int = 0,
    members: Sequence | None = None,
    votes: int | None = None,
    eot: int | None = None,
    early_exit: bool = True,
    diagnostics: bool = True,
    calibration_size: int = 64,
    probe_queries: int = 300,
    transfer_from: "nn.Module | str | Path | None" = None,
    data_dir: str | Path | None = None,
    progress: Progress | None = None,
    command: str | None = None,
    dataset: str | None = None,
    warn: bool = True,
    cache_dir: str | Path | None = None,
    distributed: bool | None = None,
    precision: str = "fp32",
) -> EvalResult:
    """Evaluate the adversarial robustness of ``model`` on ``data``.

    Args:
        model: pixels [B, C, H, W] in [0, 1] -> logits [B, K]; an SNN or an ANN, ours or a
            SpikingJelly / snnTorch network (adapted by :func:`robustsnn.interop.wrap`).
        data: ``(x, y)`` tensors (x float in [0, 1] or uint8), a robustsnn ``ArrayDataset``,
            an iterable of ``(x, y)`` batches, or a data set name (its test split).
        preset: ``"quick"``, ``"pgd-ens"``, ``"standard"``, ``"autoattack"``, ``"full"`` or ``"strongest"``
            (:mod:`robustsnn.attacks.presets`); ignored when ``members`` is given.
        eps: one budget or several (a list or ``"0.05,0.1"``), pixel units.
        norm: ``"Linf"`` or ``"L2"``.
        n: evaluate the first ``n`` samples (None: all).
        batch_size: samples per attack call.
        seed: fixes all attack randomness (and the Poisson encoder's).
        members: a custom member list (:class:`~robustsnn.attacks.ensemble.Member`,
            ``(attack, estimator[, params])`` tuples or built attacks at a single eps).
        votes: forward passes per verdict (default 9 for Poisson models, else 1).
        eot: gradient samples per step (default 8 for Poisson models, else 1).
        early_exit: members only attack samples not yet broken (False: every member attacks
            every sample and each member's accuracy alone is recorded; same verdicts, slower).
        diagnostics: run the gradient-masking checks.
        calibration_size: samples for estimator calibration and the diagnostics' extra runs.
        probe_queries: Square queries of the black-box probe (presets without black-box members).
        transfer_from: source model or checkpoint for transfer members (default: the ANN twin).
        data_dir: where to look for a named data set.
        progress: ``fn(description, completed, total)``, called as work advances.
        command: the command line, stored in the result.
        dataset: data set name stored in the result (found automatically for named/ArrayDataset data).
        warn: issue tripped diagnostics as :class:`~robustsnn.attacks.base.RobustnessWarning`.
        cache_dir: keep every finished member here; a killed evaluation resumes after its
            last finished member, and a later one whose members start with the same ones
            (``standard`` after ``pgd-ens``) on the same model, data and settings reuses them
            (:mod:`robustsnn.attacks.cache`). None: no cache.
        distributed: under torchrun (default: whenever a process group of several ranks is
            open), every rank calls this with the same arguments and the ensemble's attacks
            are split across the ranks (:class:`~robustsnn.attacks.ensemble.Ensemble`); the
            per-sample verdicts and breaker records equal one process's, and every rank
            returns the full result (let rank 0 save it). Calibration and diagnostics, on
            ``calibration_size`` samples, run on every rank.
        precision: ``"fp32"`` or ``"bf16"`` (autocast of every forward pass,
            :mod:`robustsnn.precision`; its members are cached apart from fp32 ones).
    Returns:
        :class:`EvalResult` (``.robust_acc``, ``.results``, ``.warnings``, ``.save(path)``).
    """
    if check_precision(precision) != "fp32":
        args = {k: v for k, v in locals().items() if k != "args"}
        args["precision"] = "fp32"
        if cache_dir is not None:
            args["cache_dir"] = Path(cache_dir) / precision
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with autocast(precision, device):
            res = evaluate(**args)
        res.notes.append(f"precision {precision}: forward passes under autocast (neurons integrate in float32)")
        res.settings["precision"] = precision
        return res
    t_all = time.perf_counter()
    from .estimators import Estimator
    from .interop import SLOT_REFUSES, supports, wrap

    model = wrap(model)  # SpikingJelly / snnTorch networks: neurons as estimator modes, state reset per call
    norm = check_norm(norm)
    eps_list = _parse_eps(eps)
    for e in eps_list:
        check_eps(e, norm)
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    if n is not None and int(n) < 1:
        raise UsageError(f"n must be >= 1, got {n}")
    custom = members is not None
    if custom:
        members = [as_member(m) for m in members]
        if len(eps_list) > 1 and any(not isinstance(m, Member) for m in members):
            raise UsageError("built attack objects fix one eps; pass Member specs to evaluate several budgets")
        preset_name = "custom"
    else:
        preset_obj = get_preset(preset)
        preset_name = preset_obj.name

    x, y, found_name = _as_tensors(data, n, data_dir)
    classes = getattr(getattr(model, "config", None), "num_classes", None)
    if classes is not None and not 0 <= int(y.min()) <= int(y.max()) < classes:
        raise UsageError(f"labels span {int(y.min())}..{int(y.max())} but the model has {classes} classes; give labels 0..{classes - 1}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x, y = x.to(device), y.to(device)
    n_eff = int(x.shape[0])
    votes = int(votes) if votes else default_votes(model)
    eot = int(eot) if eot else default_eot(model)
    stochastic = is_stochastic(model)
    spiking = has_spiking_layers(model)
    source, source_name = _load_source(transfer_from, device)
    notes: list[str] = []
    if source is None:
        source = ann_twin(model)
        source_name = "ann-twin" if source is not None else None
    if stochastic:
        notes.append(f"stochastic model: gradients averaged over {eot} passes (EOT), verdicts by majority of {votes} passes")
    if not spiking:
        notes.append("no spiking layers: gradient estimators do not apply; members differing only by estimator were merged")

    sharded = D.active() if distributed is None else bool(distributed) and D.active()
    if sharded:
        notes.append(f"attacks split across {D.world_size()} ranks (torchrun); per-sample results as one process")
    cal_n = min(int(calibration_size), n_eff)
    x_cal, y_cal = x[:cal_n], y[:cal_n]

    # progress bookkeeping: units = per eps (calibration + members + diagnostics) + clean + large eps
    def member_list(cal_est):
        if custom:
            return list(members)
        ms = preset_members(preset_name, model, cal_est)
        # hart and rga attacks bring their own estimator (same name)
        kept = [m for m in ms if supports(model, m.estimator or (Estimator(m.attack) if m.attack in SLOT_REFUSES else None))]
        if len(kept) < len(ms):
            note = (f"{len(ms) - len(kept)} members dropped: their estimators ({', '.join(SLOT_REFUSES)}) need a layer's "
                    "whole spike train, which this network's single-step neurons do not expose")
            if note not in notes:
                notes.append(note)
            ms = kept
        if source is None and any(m.attack == "transfer" for m in ms):
            ms = [m for m in ms if m.attack != "transfer"]
            if "transfer: no source model (an ANN target has no twin); pass transfer_from" not in notes:
                notes.append("transfer: no source model (an ANN target has no twin); pass transfer_from")
        return ms

    needs_cal = (not custom) and preset_obj.needs_calibration and spiking
    from .estimators import SEED_ESTIMATORS

    m_count = len(member_list(list(SEED_ESTIMATORS[:2]) if needs_cal else None))
    total = 1.0 + len(eps_list) * (m_count + (1 if needs_cal else 0) + (1 if diagnostics else 0)) + (1 if diagnostics else 0)
    done = 0.0

    def tick(desc: str, adv: float) -> None:
        nonlocal done
        done = min(total, done + adv)
        if progress:
            progress(desc, done, total)

    torch.manual_seed(seed)
    saved_modes = [(m, m.training) for m in model.modules()]
    model.eval()
    diag = Diagnostics()
    timings: dict = {}
    results: list[EpsResult] = []
    first_members: list[Member] = []
    try:
        t0 = time.perf_counter()
        clean_correct = predict(model, x, votes, batch_size) == y
        clean_acc = float(clean_correct.float().mean())
        timings["clean"] = time.perf_counter() - t0
        tick("clean accuracy", 1.0)

        for i, e in enumerate(eps_list):
            t_eps = time.perf_counter()
            calibration = None
            cal_est = None
            if needs_cal:
                tick(f"eps={e:g}: calibrating the estimator on {cal_n} samples", 0.0)
                cands = [est for est in SEED_ESTIMATORS if supports(model, est)]
                k = max(1, int(round(cal_n * preset_obj.calibration_fraction)))
                cal = calibrate_estimator(model, x_cal[:k], y_cal[:k], e, norm, estimators=cands,
                                          steps=preset_obj.calibration_steps, seed=seed, votes=votes, eot=eot)
                cal_est, calibration = cal.ranking, cal.to_dict()
                tick(f"eps={e:g}: calibrated estimator {calibration['estimator']}", 1.0)
            ms = member_list(cal_est)
            if i == 0:
                first_members = [m for m in ms if isinstance(m, Member)]
            ordered = not custom and preset_name == "strongest" and early_exit
            ens = (OrderedEnsemble if ordered else Ensemble)(
                model, ms, eps=e, norm=norm, seed=seed, votes=votes, eot=eot, early_exit=early_exit,
                batch_size=batch_size, transfer_source=source, transfer_source_name=source_name,
                on_progress=lambda d, a, e=e: tick(f"eps={e:g}  {d}", a), cache_dir=cache_dir,
                distributed=sharded,
                **({"calibration_size": max(1, cal_n // 2), "essential": essential_members(ms)} if ordered else {}),
            )
            res = ens.run(x, y)
            reused = sum(r.cached for r in res.members)
            if reused:
                notes.append(f"eps={e:g}: {reused} of {len(res.members)} members taken from the cache in {cache_dir} "
                             "(same model, data and settings; their seconds are the original run's)")
            results.append(
                EpsResult(
                    eps=e, clean_acc=res.clean_acc, robust_acc=res.robust_acc,
                    members=[r.to_dict() for r in res.members], breaker=res.breaker.tolist(),
                    calibration=calibration, seconds=res.seconds, margin=_margins(res.margin),
                )
            )
            timings[f"eps={e:g}"] = time.perf_counter() - t_eps
            if diagnostics:
                t_d = time.perf_counter()
                tick(f"eps={e:g}: diagnostics", 0.0)
                bb = check_black_box(res)
                if bb is None:
                    bb = probe_black_box(model, x, y, res, queries=probe_queries, max_samples=cal_n,
                                         seed=seed, votes=votes, batch_size=batch_size)
                diag.add(bb)
                diag.add(check_estimator_gap(res))
                white = [m for m in ms if m.white_box]
                first = white[0] if white else None
                est = first.estimator if first is not None else None
                steps = 20
                if isinstance(first, Member) and first.attack == "pgd":
                    steps = int(first.params.get("steps", 10))
                elif first is not None and type(first).__name__ == "PGD":
                    steps = first.steps
                diag.add(check_more_steps(model, x_cal, y_cal, est, e, norm, steps=steps, seed=seed, votes=votes,
                                          batch_size=batch_size))
                timings[f"diagnostics eps={e:g}"] = time.perf_counter() - t_d
                tick(f"eps={e:g}: diagnostics done", 1.0)

        if diagnostics:
            t_d = time.perf_counter()
            ests = []
            src_members = first_members or [m for m in (members or []) if isinstance(m, Member)]
            for m in src_members:
                if m.white_box and all((m.estimator != o) for o in ests):
                    ests.append(m.estimator)
            if not ests or not spiking:
                ests = [None]
            tick("diagnostics: zero gradients", 0.0)
            diag.checks.insert(0, check_zero_gradients(model, x_cal, y_cal, ests, eot=eot))
            big = large_eps_for(eps_list, norm, x[0].numel())
            tick(f"diagnostics: large eps={big:g}", 0.0)
            lg = check_large_eps(model, x_cal, y_cal, src_members or [Member("pgd", None, {"steps": 20})], big, norm,
                                 seed=seed, votes=votes, batch_size=batch_size)
            diag.add(lg)
            if len(eps_list) > 1:
                diag.add(check_eps_monotone([(r.eps, r.robust_acc) for r in results], n_eff, where=f"all {n_eff} samples"))
            cal_pts = [(r.eps, sum(1 for b in r.breaker[:cal_n] if b == -1) / max(cal_n, 1)) for r in results]
            cal_pts.append((big, lg.value))
            diag.add(check_eps_monotone(cal_pts, cal_n, where=f"first {cal_n} samples, with the large-eps run"))
            timings["diagnostics"] = time.perf_counter() - t_d
            tick("diagnostics done", 1.0)
    finally:
        for m, t in saved_modes:
            m.training = t

    if warn:
        diag.emit()
    timings["total"] = time.perf_counter() - t_all
    cfg = getattr(model, "config", None)
    model_dict = cfg.to_dict() if hasattr(cfg, "to_dict") else None
    member_dicts = [m.to_dict() if isinstance(m, Member) else {"label": m.label()} for m in (first_members or members or [])]
    if custom and not first_members:
        member_dicts = [{"label": r["label"]} for r in results[0].members]
    return EvalResult(
        preset=preset_name,
        norm=norm,
        eps=eps_list,
        n=n_eff,
        seed=int(seed),
        clean_acc=clean_acc,
        results=results,
        members=member_dicts,
        diagnostics=diag.to_dict(),
        warnings=diag.warnings,
        settings={
            "batch_size": int(batch_size),
            "votes": votes,
            "eot": eot,
            "early_exit": bool(early_exit),
            "stochastic": stochastic,
            "spiking": spiking,
            "calibration_size": cal_n,
            "probe_queries": int(probe_queries),
            "transfer_source": source_name,
            "preset_description": None if custom else preset_obj.description,
        },
        timings=timings,
        model=model_dict,
        dataset=dataset or found_name,
        command=command,
        notes=notes,
        environment={"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
                     "ranks": D.world_size() if sharded else 1},
    )
