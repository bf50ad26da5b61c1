"""Build the tables of docs/results.md from the run directories (nothing typed by hand).

    python scripts/results_table.py [--runs runs]
    scripts/collect_results.sh && python scripts/results_table.py --runs results   # the committed copies

Robust-stable matrix: every ``runs/fmnist/<name>/`` with ``model/``, ``log.json`` and
``eval-{fgsm,quick,pgd-ens}.json`` (written by ``robustsnn train --config
configs/fmnist/<name>.yaml``) and, where it was run, ``eval-standard.json`` (``robustsnn
evaluate RUN/model --preset standard``). Sparse conversion: every ``runs/pipeline/<name>/`` with
``pipeline.json``, ``eval-*.json`` and ``efficiency.json``. A missing number is shown
as "-" (the run has not reached that stage).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _robust(ev) -> tuple[float | None, int | None]:
    if not ev:
        return None, None
    return ev["results"][0]["robust_acc"], ev["n"]


def matrix_rows(root: Path) -> list[str]:
    """One Markdown row per robust-stable training run."""
    rows = [
        "| run | neuron | objective | rho (MPPD) | Parseval | clean, full test set | FGSM | PGD-10 | PGD_ens (19 estimators) | standard | strongest | n attacked | diagnostics tripped | command |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    presets = ("fgsm", "quick", "pgd-ens", "standard", "strongest")
    for run in sorted(p for p in root.glob("*") if (p / "model" / "config.json").exists()):
        meta = _load(run / "model" / "config.json") or {}
        opts = meta.get("options") or {}
        hist = meta.get("history") or []
        clean = hist[-1].get("test_acc") if hist and hist[-1].get("test_images") == 10000 else None
        evs = {p: _load(run / f"eval-{p}.json") for p in presets}
        # benchmarks/eval_cost.py --save-dir results/eval_cost/fmnist_<run> keeps its presets apart from the run's own
        evs["strongest"] = evs["strongest"] or _load(root.parent / "eval_cost" / f"{root.name}_{run.name}" / "eval-strongest.json")
        (fgsm, _), (pgd, n), (ens, _), (std, n_std), (strong, n_strong) = (_robust(evs[p]) for p in presets)
        tripped = [f"{p} ({len(e['warnings'])})" for p, e in evs.items() if e and e.get("warnings")]
        warn = ", ".join(tripped) or "none"
        cmd = f"`robustsnn train --config configs/{root.name}/{run.name}.yaml`"
        planned = (meta.get("recipe") or opts).get("epochs")
        if planned and len(hist) < planned:  # a run stopped between epochs: its numbers are not the row's yet
            cmd += f" (unfinished: epoch {len(hist)} of {planned}; `--resume` continues it)"
            clean = fgsm = pgd = ens = std = strong = n = None
            evs = {}
        std_cell = "-" if std is None else f"{_pct(std)} (n={n_std})"
        strong_cell = "-" if strong is None else f"{_se(strong, n_strong)} (n={n_strong})"
        rows.append(
            f"| {run.name} | {opts.get('neuron', '-')} | {opts.get('objective', '-')} | {opts.get('mppd') or 0} | "
            f"{opts.get('parseval') or 0} | {_pct(clean)} | {_pct(fgsm)} | {_pct(pgd)} | {_pct(ens)} | {std_cell} | "
            f"{strong_cell} | "
            f"{n if n else '-'} | {warn if any(evs.values()) else '-'} | {cmd} |"
        )
    return rows


def pipeline_rows(root: Path) -> list[str]:
    """One Markdown row per pipeline run (conversion or baseline)."""
    rows = [
        "| run | route | pruning | sparsity | clean | PGD_ens (19 estimators) | n | standard | stored weights | bytes vs dense fp32 | energy vs dense SNN | energy vs ANN twin | training epochs | command |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in sorted(p for p in root.glob("*") if (p / "pipeline.json").exists() and "_t8_" not in p.name):
        state = _load(run / "pipeline.json") or {}
        cfg = state.get("config", {})
        done = {s["name"] for s in state.get("stages", [])}
        ev = _load(run / "eval-pgd-ens.json")
        ens, n = _robust(ev)
        clean = ev["clean_acc"] if ev else None
        std_ev = _load(run / "eval-standard.json")
        std, n_std = _robust(std_ev)
        std_cell = "-" if std is None else f"{_pct(std)} (n={n_std}, clean {_pct(std_ev['clean_acc'])})"
        eff = _load(run / "efficiency.json") or {}
        mem, energy = eff.get("memory") or {}, (eff.get("energy") or {}).get("savings") or {}
        route = _baseline_route(cfg) if cfg.get("baseline") else "conversion"
        epochs = cfg.get("baseline_epochs") or _epochs(cfg)
        recorded = (state.get("command") or "").replace(" --no-progress", "")
        cmd = f"`{recorded}`" if recorded else f"`scripts/run_pipelines.sh configs/pipeline/{run.name}.yaml`"
        stored = _stored(mem)
        rows.append(
            f"| {run.name} | {route} | {_pruning(cfg)} | {cfg.get('sparsity')} | "
            f"{_pct(clean)} | {_pct(ens)}{' (diagnostics tripped: likely overestimate)' if ev and ev.get('warnings') else ''} | {n or '-'} | {std_cell} | {stored} | "
            f"{'%.1fx' % mem['bytes_ratio'] if mem else '-'} | "
            f"{'%.1fx' % energy['snn_dense'] if energy else '-'} | {'%.1fx' % energy['ann'] if energy else '-'} | "
            f"{epochs} | {cmd}{'' if 'evaluate' in done else ' (unfinished)'} |"
        )
    return rows


def _se(p, n) -> str:
    """Accuracy in % with its binomial standard error, e.g. '61.2 ± 1.5'."""
    if p is None or not n:
        return "-"
    return f"{100 * p:.1f} ± {100 * (p * (1 - p) / n) ** 0.5:.1f}"


STAGE_LABELS = (("ann", "ANN"), ("prune", "pruned ANN"), ("convert", "converted SNN"), ("finetune", "finetuned SNN"),
                ("baseline", "end-to-end SNN"))


def sweep_rows(root: Path) -> list[str]:
    """The T = 8 sweep (configs/pipeline/t8): budgets, per-stage accuracy, final clean / PGD_ens / standard."""
    rows = [
        "| run | route | pruning | sparsity | image-passes (ANN + prune + SNN) | per-stage clean / PGD-10 (n) | "
        "clean, full test set | PGD_ens | standard | training wall-s (1 thread each, machine shared) | stored weights | "
        "energy vs dense SNN | command |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in sorted(p for p in root.glob("*_t8_*") if (p / "pipeline.json").exists()):
        state = _load(run / "pipeline.json") or {}
        cfg = state.get("config", {})
        stages = {s["name"]: s for s in state.get("stages", [])}
        passes = state.get("image_passes") or {}
        if cfg.get("baseline"):
            b = passes.get("baseline") or {}
            budget = f"{b.get('total', 0):,} (SNN {b.get('epochs', '-')} x {b.get('per_epoch', 0):,})"
        else:
            c = passes.get("conversion") or {}
            budget = f"{c.get('total', 0):,} ({c.get('ann', 0):,} + {c.get('prune', 0):,} + {c.get('finetune', 0):,})"
        per_stage = []
        for key, label in STAGE_LABELS:
            acc = (stages.get(key) or {}).get("accuracy")
            if acc:
                per_stage.append(f"{label} {_pct(acc['clean'])} / {_pct(acc['robust'])}")
        n_stage = next((s["accuracy"]["n"] for s in stages.values() if s.get("accuracy")), None)
        ev = stages.get("evaluate") or {}
        full, full_n = ev.get("full_test_acc"), ev.get("full_test_n")
        ens_ev = _load(run / "eval-pgd-ens.json")
        ens, n = _robust(ens_ev)
        std_ev = _load(run / "eval-standard.json")
        std, n_std = _robust(std_ev)
        eff = _load(run / "efficiency.json") or {}
        mem, energy = eff.get("memory") or {}, (eff.get("energy") or {}).get("savings") or {}
        route = _baseline_route(cfg) if cfg.get("baseline") else f"conversion ({cfg.get('conversion_recipe')})"
        recorded = (state.get("command") or "").replace(" --no-progress", "")
        rows.append(
            f"| {run.name} | {route} | {_pruning(cfg)} | {cfg.get('sparsity')} | {budget} | "
            f"{'; '.join(per_stage) or '-'}{f' ({n_stage})' if n_stage else ''} | {_se(full, full_n)} | "
            f"{_se(ens, n)}{f' (n={n})' if n else ''} | {_se(std, n_std)}{f' (n={n_std})' if n_std else ''}{_rerun(run) if std_ev else ''} | "
            f"{_train_seconds(stages)} | {_stored(mem)} | "
            f"{'%.1fx' % energy['snn_dense'] if energy else '-'} | `{recorded}`{'' if 'evaluate' in stages else ' (unfinished)'} |"
        )
    return rows


def _paired(a: list[int], b: list[int], key) -> str:
    """Mean of key(a_i) - key(b_i) over the samples both results attacked, in points, with its paired s.e."""
    d = [float(key(i)) - float(key(j)) for i, j in zip(a, b)]
    n = len(d)
    if n < 2:
        return "-"
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1)
    return f"{100 * mean:+.1f} ± {100 * (var / n) ** 0.5:.1f}"


def _paired_robust(ev: dict | None, other: dict | None) -> str:
    """Paired robust-accuracy difference of two evaluations of the same test images (e.g. both
    rows' ``standard``), with its n; '-' when either is missing or they attacked different n."""
    if not ev or not other or ev["n"] != other["n"]:
        return "-"
    return _paired(ev["results"][0]["breaker"], other["results"][0]["breaker"], lambda k: k == -1) + f" (n={ev['n']})"


def verdict_rows(root: Path) -> list[str]:
    """Conversion against end-to-end training at equal budget, per sparsity of the T = 8 sweep: the
    differences in clean and PGD_ens accuracy on the same test images (paired standard errors)."""
    rows = ["| sparsity | conversion row | end-to-end row | image-passes (conversion / end-to-end) | n | "
            "clean: conversion - end-to-end (points) | PGD_ens: conversion - end-to-end (points) | "
            "standard: conversion - end-to-end (points) |",
            "|---|---|---|---|---|---|---|---|"]
    runs, passes = {}, {}
    for run in sorted(p for p in root.glob("*_t8_*") if (p / "eval-pgd-ens.json").exists()):
        state = _load(run / "pipeline.json") or {}
        cfg = state.get("config", {})
        runs[run.name] = (cfg, _load(run / "eval-pgd-ens.json"), _load(run / "eval-standard.json"))
        route = (state.get("image_passes") or {}).get("baseline" if cfg.get("baseline") else "conversion") or {}
        passes[run.name] = route.get("total")
    for name, (cfg, ev, std) in runs.items():
        if cfg.get("baseline"):
            continue
        for other, (ocfg, oev, ostd) in runs.items():
            if not ocfg.get("baseline") or ocfg.get("sparsity") != cfg.get("sparsity") or oev["n"] != ev["n"]:
                continue
            if ocfg.get("baseline") == "ann-mask" and ocfg.get("pruning") != cfg.get("pruning"):
                continue  # an ann-mask baseline is the same-mask control of its own pruner's row only
            if passes[other] != passes[name] and any(
                    k != other and c2.get("baseline") == ocfg.get("baseline") and c2.get("sparsity") == cfg.get("sparsity")
                    and passes[k] == passes[name] and e2["n"] == ev["n"] for k, (c2, e2, _) in runs.items()):
                continue  # an equal-budget baseline of the same kind exists: compare with that one only
            a, b = ev["results"][0]["breaker"], oev["results"][0]["breaker"]
            std_cell = _paired_robust(std, ostd)
            std_cell += _rerun(root / name) if std_cell != "-" else ""
            budget = f"{passes[name] or 0:,} / {passes[other] or 0:,}" + (
                "" if passes[name] == passes[other] else " (not equal: HYDRA's score epoch)" if cfg.get("pruning") == "hydra"
                else " (not equal)")
            rows.append(f"| {cfg.get('sparsity')} | {name} | {other} | {budget} | {ev['n']} | {_paired(a, b, lambda k: k != -2)} | "
                        f"{_paired(a, b, lambda k: k == -1)} | {std_cell} |")
    return rows


def _full_runs(root: Path) -> dict:
    """The finished 60 000 x 3 runs (seeds included): name -> ((neuron, Parseval, rho, grad clip), seed,
    PGD_ens evaluation, standard evaluation or None)."""
    runs = {}
    for run in sorted(p for p in root.glob("*_60k3*") if (p / "eval-pgd-ens.json").exists()):
        meta = _load(run / "model" / "config.json") or {}
        opts, hist = meta.get("options") or {}, meta.get("history") or []
        if len(hist) < (meta.get("recipe") or opts).get("epochs", 0):
            continue  # unfinished
        key = (opts.get("neuron"), bool(opts.get("parseval")), float(opts.get("mppd") or 0),
               float(opts.get("grad_clip") or 0))
        runs[run.name] = (key, int(opts.get("seed") or 0), _load(run / "eval-pgd-ens.json"),
                          _load(run / "eval-standard.json"))
    return runs


def regulariser_rows(root: Path) -> list[str]:
    """The 60 000 x 3 rows against each other on the same test images (paired): MPPD rho = 1 against
    rho = 0 with the same neuron, Parseval setting and seed, and Parseval against none at rho = 0."""
    rows = ["| comparison | row | against | n | clean: row - against (points) | PGD_ens: row - against (points) | "
            "standard: row - against (points) |",
            "|---|---|---|---|---|---|---|"]
    runs = _full_runs(root)
    for name, ((neuron, parseval, rho, _), seed, ev, std) in runs.items():
        for other, ((oneuron, oparseval, orho, _), oseed, oev, ostd) in runs.items():
            if seed != oseed:
                continue
            mppd = rho > 0 and orho == 0 and (oneuron, oparseval) == (neuron, parseval)
            pars = rho == orho == 0 and parseval and not oparseval and oneuron == neuron
            if not (mppd or pars) or oev["n"] != ev["n"]:
                continue
            a, b = ev["results"][0]["breaker"], oev["results"][0]["breaker"]
            what = f"MPPD rho = {rho:g} against 0" if mppd else "Parseval against none"
            rows.append(f"| {what} | {name} | {other} | {ev['n']} | {_paired(a, b, lambda k: k != -2)} | "
                        f"{_paired(a, b, lambda k: k == -1)} | {_paired_robust(std, ostd)} |")
    return rows


def seed_rows(root: Path) -> list[str]:
    """Run-to-run spread at 60 000 x 3: every setting trained with more than one seed, each seed's
    clean and PGD_ens accuracy, and the paired difference between two seeds on the same test images
    (its s.e. is test sampling only: the spread between runs is what the difference itself shows)."""
    rows = ["| setting (neuron, Parseval, rho) | runs (seed) | clean on the attacked images | PGD_ens | n | "
            "seed b - seed a: clean (points) | seed b - seed a: PGD_ens (points) |",
            "|---|---|---|---|---|---|---|"]
    by_setting: dict = {}
    for name, (key, seed, ev, _) in _full_runs(root).items():
        if not key[3]:  # the clipped runs are a different setting, one seed each
            by_setting.setdefault(key[:3], []).append((seed, name, ev))
    for (neuron, parseval, rho), found in sorted(by_setting.items()):
        if len(found) < 2:
            continue
        found.sort()
        (_, _, first), rest = found[0], found[1:]
        for _, _, ev in rest:
            if ev["n"] != first["n"]:
                break
        else:
            clean = " / ".join(_pct(e["clean_acc"]) for _, _, e in found)
            ens = " / ".join(_pct(e["results"][0]["robust_acc"]) for _, _, e in found)
            a, b = first["results"][0]["breaker"], found[1][2]["results"][0]["breaker"]
            rows.append(f"| {neuron}, {'Parseval' if parseval else 'none'}, {rho:g} | "
                        f"{', '.join(f'{n} ({s})' for s, n, _ in found)} | {clean} | {ens} | {first['n']} | "
                        f"{_paired(b, a, lambda k: k != -2)} | {_paired(b, a, lambda k: k == -1)} |")
    return rows


def _rerun(run: Path) -> str:
    """A note for a `standard` result measured on a rerun of the row's pipeline (its checkpoint was
    not kept; ``pipeline-rerun.json`` records the rerun's own per-stage accuracy)."""
    return " on a rerun of the pipeline (pipeline-rerun.json)" if (run / "pipeline-rerun.json").exists() else ""


def _train_seconds(stages: dict) -> str:
    """Seconds spent training the route: ANN (its log, also when shared via --ann) + prune + convert
    + finetune, or the end-to-end baseline; '-' while a stage is missing."""
    if "baseline" in stages:
        return f"{stages['baseline'].get('seconds', 0):,.0f}"
    parts = []
    ann = stages.get("ann") or {}
    src = Path(ann["source"]).parent if ann.get("source") else None
    log = _load(src / "log.json") if src else None
    if log is None:
        return "-"
    parts.append(sum(h.get("seconds", 0) for h in log.get("history", [])))
    for key in ("prune", "convert", "finetune"):
        if key not in stages:
            return "-"
        parts.append(stages[key].get("seconds", 0))
    return f"{sum(parts):,.0f} ({' + '.join(f'{p:,.0f}' for p in parts)})"


def conversion_rows(path: Path) -> list[str]:
    """The table of benchmarks/conversion_loss.py: SNN accuracy before finetuning per recipe and T."""
    data = _load(path) or {}
    rows_in = data.get("rows", [])
    steps = sorted({r["T"] for r in rows_in})
    n = data.get("eval_n")
    order = ["seed", "seed-soft", "rate", "rate-calib", "qcfs", "qcfs-calib"]
    rows = [f"| ANN | sparsity | recipe | ANN clean | {' | '.join(f'T = {t}' for t in steps)} |",
            "|---|---|---|---|" + "---|" * len(steps)]
    keys = sorted({(r["ann"], r["sparsity"], r["recipe"]) for r in rows_in},
                  key=lambda k: (k[0] != "relu", k[1], order.index(k[2]) if k[2] in order else 99))
    for act, sp, name in keys:
        cells = {r["T"]: r for r in rows_in if (r["ann"], r["sparsity"], r["recipe"]) == (act, sp, name)}
        ann_acc = next(iter(cells.values()))["ann_acc"]
        vals = [f"{100 * cells[t]['snn_acc']:.1f} ({-cells[t]['gap_points']:+.1f})" if t in cells else "-" for t in steps]
        rows.append(f"| {act} | {round(100 * sp)} % | {name} | {_se(ann_acc, n)} | {' | '.join(vals)} |")
    return rows


#: Members of ``strongest`` that the seeds did not have (issue 14), by label prefix.
NEW_ATTACKS = (("sa-pgd", "ASSG + SA-PGD"), ("hart", "HART"), ("rga", "RGA"), ("pgd-20@bptt:pdsg", "PGD under PDSG"))


def strongest_rows(roots: list[Path]) -> list[str]:
    """Per checkpoint with eval-strongest.json: robust accuracy, against PGD_ens / standard / autoattack on the
    same images (when evaluated there, from benchmarks/eval_cost.py --save-dir), and the points each new
    attack took first (samples it broke that no member before it in the calibrated order had broken)."""
    rows = [
        "| checkpoint | n | PGD_ens | standard | AutoAttack alone | strongest | "
        + " | ".join(f"{label} broke first" for _, label in NEW_ATTACKS) + " | closers (APGD-DLR, APGD-T, Square) broke first | seconds (strongest / PGD_ens, one run) |",
        "|---|---|---|---|---|---|" + "---|" * (len(NEW_ATTACKS) + 2),
    ]
    for path in sorted(p for root in roots for p in root.rglob("eval-strongest.json")):
        ev = _load(path)
        if not ev:
            continue
        n = ev["n"]
        res = ev["results"][0]
        same = {}
        for p in ("pgd-ens", "standard", "autoattack"):
            other = _load(path.parent / f"eval-{p}.json")
            same[p] = other if other and other["n"] == n and other["eps"] == ev["eps"] else None
        cells = [f"{_pct(_robust(same[p])[0])}" if same[p] else "-" for p in same]
        members = res["members"]

        def pts(prefix):
            k = sum(m["broke"] for m in members if m["label"].startswith(prefix))
            return f"{k} ({100 * k / n:.1f} pts)"

        closing = sum(m["broke"] for m in members if m["label"].startswith(("apgd-dlr", "apgd-t", "square")))
        ens_sec = (same["pgd-ens"] or {}).get("results", [{}])[0].get("seconds")
        sec = f"{res.get('seconds', 0):.0f} / {ens_sec:.0f}" if ens_sec else f"{res.get('seconds', 0):.0f} / -"
        summary = _load(path.parent.with_suffix(".json")) or {}
        timed = {r["preset"]: r["seconds"] for r in summary.get("rows", []) if not r.get("reused")}
        if "strongest" in timed and "pgd-ens" in timed:  # the benchmark's own timing: both presets in one run
            unit = "CPU s" if summary.get("clock") == "cpu" else "s"
            sec = f"{timed['strongest']:.0f} / {timed['pgd-ens']:.0f} {unit} ({timed['strongest'] / timed['pgd-ens']:.2f}x)"
        rows.append(
            f"| `{summary.get('source', path.parent)}` | {n} | {' | '.join(cells[:1])} | {cells[1]} | {cells[2]} | {_se(res['robust_acc'], n)} | "
            + " | ".join(pts(pre) for pre, _ in NEW_ATTACKS) + f" | {closing} ({100 * closing / n:.1f} pts) | {sec} |"
        )
    return rows


def _stored(mem: dict) -> str:
    return f"{mem['nonzero']:,} / {mem['weights']:,}" if mem else "-"


def _baseline_route(cfg: dict) -> str:
    """The end-to-end baseline's label: which mask it trained with."""
    return "baseline (ANN's mask)" if cfg.get("baseline") == "ann-mask" else f"baseline ({cfg.get('baseline')} mask)"


def _pruning(cfg: dict) -> str:
    """How the run chose its mask: none (dense), random (baseline), or the pruning method."""
    if not cfg.get("sparsity"):
        return "none (dense)"
    baseline = cfg.get("baseline")
    method = "random" if baseline == "random" else cfg.get("pruning", "-")
    dense = [name for name, key in (("first conv", "prune_first"), ("readout", "prune_last")) if cfg.get(key) is False]
    return f"{method}, {' and '.join(dense)} dense" if dense else method


def _epochs(cfg: dict) -> int:
    prune = cfg["hydra_epochs"] + cfg["prune_finetune_epochs"] if cfg.get("pruning") == "hydra" else cfg.get("prune_finetune_epochs", 0)
    return cfg.get("ann_epochs", 0) + (prune if cfg.get("sparsity", 0) > 0 else 0) + cfg.get("snn_epochs", 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    args = ap.parse_args()
    print("### Robust stable SNNs (configs/fmnist), eps = 0.1, accuracy in %\n")
    print("\n".join(matrix_rows(args.runs / "fmnist")))
    full = [p for p in (args.runs / "fmnist_full").glob("*_60k3") if (p / "model" / "config.json").exists()]
    if full:
        print("\n### Robust stable SNNs on all 60 000 training images x 3 epochs (configs/fmnist_full), eps = 0.1, "
              "accuracy in %\n")
        print("\n".join(r for r in matrix_rows(args.runs / "fmnist_full") if "_60k3" in r or r.startswith("|-") or r.startswith("| run")))
        pairs = regulariser_rows(args.runs / "fmnist_full")
        if len(pairs) > 2:
            print("\n### The regulariser and Parseval at 60 000 x 3: differences on the same test images "
                  "(paired, ± s.e.; clean on the attacked images)\n")
            print("\n".join(pairs))
        seeds = seed_rows(args.runs / "fmnist_full")
        if len(seeds) > 2:
            print("\n### Run-to-run spread at 60 000 x 3: the same setting trained with two seeds, on the same "
                  "test images (paired, ± s.e. of test sampling)\n")
            print("\n".join(seeds))
    print("\n### Sparse robust SNNs by conversion (configs/pipeline), eps = 0.1, accuracy in %\n")
    print("\n".join(pipeline_rows(args.runs / "pipeline")))
    conv = args.runs / "conversion_loss" / "conversion_loss.json"
    if conv.exists():
        n = (_load(conv) or {}).get("eval_n")
        print(f"\n### Conversion loss before finetuning (benchmarks/conversion_loss.py), clean accuracy in % on the "
              f"first {n} test images, in brackets the points against the ANN\n")
        print("\n".join(conversion_rows(conv)))
    strong = strongest_rows([args.runs / "eval_cost"])
    if len(strong) > 2:
        print("\n### The `strongest` preset on the committed checkpoints (benchmarks/eval_cost.py), eps = 0.1, "
              "robust accuracy in % on the first n test images\n")
        print("\n".join(strong))
    if any((args.runs / "pipeline").glob("*_t8_*")):
        print("\n### Sparsity sweep at T = 8 with equal image-pass budgets (configs/pipeline/t8), eps = 0.1, accuracy in % ± s.e.\n")
        print("\n".join(sweep_rows(args.runs / "pipeline")))
        verdict = verdict_rows(args.runs / "pipeline")
        if len(verdict) > 2:
            print("\n### Does conversion beat end-to-end training at T = 8? Differences on the same test images "
                  "(paired, ± s.e.; positive: conversion is better)\n")
            print("\n".join(verdict))


if __name__ == "__main__":
    main()
