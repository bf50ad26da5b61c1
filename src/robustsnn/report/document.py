"""The report's content as a small tree of blocks, rendered to HTML and to Markdown alike.

:func:`build` turns a :class:`~robustsnn.report.collect.RunData` into a
:class:`Document`: a summary, the diagnostics' warnings, then one section per
topic. Both renderers get the same blocks, so the HTML and the Markdown say the
same things; only the look differs.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import plots
from .collect import PRESET_RANK, RunData

__all__ = ["Para", "Heading", "Warn", "Table", "Image", "Code", "Section", "Document", "build"]


# ---------------------------------------------------------------------------- blocks
@dataclass
class Para:
    """A paragraph. ``kind``: ``text``, ``note`` (something is not available), ``ok`` or ``bad``."""

    text: str
    kind: str = "text"


@dataclass
class Heading:
    text: str
    level: int = 3


@dataclass
class Warn:
    """A prominent red box: a title and one item per warning."""

    title: str
    items: list[str]


@dataclass
class Table:
    """A table of text cells. A cell may be ``(text, kind)`` with kind ``ok``/``bad``/``muted``/``strong``."""

    header: list[str]
    rows: list[list]
    kind: str = "data"  # "data" or "summary"
    align: str = ""  # per column "l"/"r"; default: first left, rest right


@dataclass
class Image:
    """A figure: ``key`` names its PNG in :attr:`Document.images`."""

    key: str
    alt: str
    caption: str = ""


@dataclass
class Code:
    """Preformatted text (a command, a JSON config); ``collapsed`` hides it behind its title in HTML."""

    text: str
    title: str = ""
    collapsed: bool = False


@dataclass
class Grid:
    """Blocks shown side by side where there is room (HTML); one after the other in Markdown."""

    blocks: list


@dataclass
class Section:
    id: str
    title: str
    blocks: list = field(default_factory=list)


@dataclass
class Document:
    title: str
    subtitle: str
    summary: list
    sections: list[Section]
    images: dict[str, bytes]
    footer: str


# ---------------------------------------------------------------------------- formatting
def pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1%}"


def _num(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.2f}{unit}"
    return f"{v:.1f}" if v != int(v) else f"{int(v)}"


def _kib(b) -> str:
    return f"{b / 1024:,.1f} KiB"


def _uj(pj) -> str:
    return f"{pj / 1e6:.4g} µJ"


def _ratio(v) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def _json(obj) -> str:
    return json.dumps(obj, indent=2, default=str)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60] or "x"


VARIANT_NAMES = {"snn": "this SNN", "snn_dense": "dense SNN", "ann": "ANN twin", "ann_dense": "dense ANN"}


# ---------------------------------------------------------------------------- builder
class _Builder:
    def __init__(self, data: RunData):
        self.d = data
        self.images: dict[str, bytes] = {}

    def image(self, key: str, png: bytes, alt: str, caption: str = "") -> Image:
        self.images[key] = png
        return Image(key, alt, caption)

    def missing(self, key: str, fallback: str) -> Para:
        return Para("Not available: " + self.d.missing.get(key, fallback) + ".", "note")

    # ------------------------------------------------------------------ summary
    def summary(self) -> list:
        d = self.d
        rows: list[list] = []
        final = d.final
        if final is not None:
            ds = final.meta.get("dataset")
            rows.append(["Model", final.describe() + (f", trained on {ds}" if ds else "")])
            rows.append(["Final checkpoint", f"{final.rel} ({d.final_reason})"])
        else:
            rows.append(["Model", ("not available", "muted")])
        ev = d.main_eval
        if ev is not None:
            r = ev.result
            rows.append(["Clean accuracy", f"{pct(r.clean_acc)}  ({r.n} test images, {ev.rel})"])
            tripped = bool(r.warnings)
            for er in sorted(r.results, key=lambda x: x.eps):
                members = len(er.members)
                text = (f"{pct(er.robust_acc)}  (preset {r.preset}, {members} member{'s' if members != 1 else ''}"
                        + (", probably an OVERESTIMATE: diagnostics tripped" if tripped else "") + ")")
                rows.append([f"Robust accuracy, eps = {er.eps:g} ({r.norm})", (text, "bad" if tripped else "strong")])
            if r.preset == "quick":
                rows.append(["", ("preset quick is a smoke test, not a robustness number; use standard or full", "muted")])
        else:
            acc = self._last_test_acc()
            rows.append(["Clean accuracy", acc or ("not available", "muted")])
            rows.append(["Robust accuracy", ("not available: no evaluation in the run", "muted")])
        if d.sparsity:
            w = sum(x["weights"] for x in d.sparsity)
            nz = sum(x["nonzero"] for x in d.sparsity)
            rows.append(["Sparsity (conv/linear weights)", f"{1 - nz / w:.1%} zero ({nz:,} of {w:,} weights non-zero)" if w else "n/a"])
        else:
            rows.append(["Sparsity", ("not available", "muted")])
        eff = d.efficiency or {}
        if eff.get("spikes"):
            rows.append(["Spike rate", f"{eff['spikes']['rate']:.4f} spikes per neuron per step (T = {eff.get('time_steps')})"])
        e = eff.get("energy")
        if e:
            sv, var = e["savings"], e["variants"]
            base = "snn" if "snn" in var else "ann"
            rows.append(["Energy per image", f"{_uj(var[base]['energy_pj'])}  ({_num(var[base]['macs'])} MACs, {_num(var[base]['sops'])} SOPs)"])
            if "snn_dense" in sv:
                rows.append(["Energy saving vs dense SNN", (_ratio(sv["snn_dense"]), "strong")])
            if "ann" in sv and base == "snn":
                if sv.get("ann_dense") not in (None, sv["ann"]):
                    text = f"{_ratio(sv['ann'])} vs the ANN twin with the same weights, {_ratio(sv['ann_dense'])} vs a dense ANN"
                else:
                    text = _ratio(sv["ann"])
                rows.append(["Energy saving vs ANN", (text, "strong")])
        else:
            rows.append(["Energy", ("not available", "muted")])
        m = eff.get("memory")
        if m:
            rows.append(["Memory", f"{_kib(m['sparse_bytes'])} stored vs {_kib(m['dense_bytes'])} dense fp32"])
            rows.append(["Memory saving vs dense", (f"{_ratio(m['bytes_ratio'])} fewer bytes, {_ratio(m['weight_ratio'])} fewer weights", "strong")])
        else:
            rows.append(["Memory", ("not available", "muted")])
        n_warn = len(d.warnings)
        if d.evals:
            ran = any(e.result.diagnostics.get("checks") for e in d.evals)
            if n_warn:
                files = list(dict.fromkeys(rel for rel, _ in d.warnings))
                where = "" if ev is not None and ev.rel in files else f" (in {', '.join(files)}, not the evaluation above)"
                rows.append(["Diagnostics", (f"{n_warn} warning{'s' if n_warn > 1 else ''}{where}: see the red box", "bad")])
            elif ran:
                rows.append(["Diagnostics", ("all gradient-masking checks passed", "ok")])
            else:
                rows.append(["Diagnostics", ("not run (--no-diagnostics)", "muted")])
        blocks: list = [Table(["", ""], rows, kind="summary")]
        if e:
            blocks.append(Para("Energy and memory savings: the alternative's cost divided by this model's (higher is better). "
                               "Energy counts operations only (MAC 4.6 pJ, accumulate 0.9 pJ, 45 nm).", "note"))
        if n_warn:
            blocks.append(self.warn_box())
        missing = [k for k in ("checkpoint", "evaluation", "efficiency", "energy") if k in d.missing]
        if missing:
            blocks.append(Para("Missing from this run: " + "; ".join(f"{k}: {d.missing[k]}" for k in missing) + ".", "note"))
        return blocks

    def _last_test_acc(self) -> str | None:
        final = self.d.final
        hist = (final.meta.get("history") if final else None) or []
        for h in reversed(hist):
            if "test_acc" in h:
                return f"{pct(h['test_acc'])}  (training log, {h.get('test_images', '?')} test images, epoch {h.get('epoch')})"
        return None

    def warn_box(self) -> Warn:
        items = [f"{w}  [{rel}]" for rel, w in self.d.warnings]
        files = list(dict.fromkeys(rel for rel, _ in self.d.warnings))
        return Warn(f"Gradient-masking diagnostics tripped: the robust accuracy of {', '.join(files)} is probably an overestimate", items)

    # ------------------------------------------------------------------ robustness
    def robustness(self) -> Section:
        d = self.d
        s = Section("robustness", "Robustness")
        if not d.evals:
            s.blocks.append(self.missing("evaluation", "no evaluation result"))
            return s
        rows = []
        for e in d.evals:
            r = e.result
            rows.append([
                (e.rel + ("  (summary)" if e is d.main_eval else ""), "strong" if e is d.main_eval else ""),
                r.preset, r.norm, str(r.n), pct(r.clean_acc),
                ", ".join(f"{x.eps:g}: {pct(x.robust_acc)}" for x in sorted(r.results, key=lambda x: x.eps)),
                (str(len(r.warnings)), "bad") if r.warnings else ("0", "ok"),
            ])
        s.blocks.append(Table(["evaluation", "preset", "norm", "n", "clean", "robust accuracy at eps", "warnings"], rows,
                              align="llllrll"))
        if len(d.evals) > 1:
            curves = [(f"{e.rel} ({e.result.preset}, n={e.result.n})", e.result.clean_acc,
                       [(x.eps, x.robust_acc) for x in e.result.results]) for e in d.evals]
            norms = {e.result.norm for e in d.evals}
            s.blocks.append(self.image("accuracy-overview", plots.accuracy_overview(curves, "/".join(sorted(norms))),
                                       "robust accuracy against eps, every evaluation"))
        ordered = sorted(d.evals, key=lambda e: (e is not d.main_eval, -PRESET_RANK.get(e.result.preset, 1), e.rel))
        for e in ordered:
            s.blocks += self.one_eval(e)
        return s

    def one_eval(self, e) -> list:
        r = e.result
        rd = r.to_dict()
        key = _slug(e.rel)
        title = f"{e.rel}: preset {r.preset}, {r.norm}, n = {r.n}"
        out: list = [Heading(title)]
        if r.settings.get("preset_description"):
            out.append(Para(f"Preset {r.preset}: {r.settings['preset_description']}."))
        for note in r.notes:
            out.append(Para(f"Note: {note}.", "note"))
        if r.warnings and len(self.d.evals) > 1:
            out.append(Warn("Diagnostics tripped for this evaluation", list(r.warnings)))
        figs = [
            self.image(f"acc-{key}", plots.accuracy_vs_eps(rd, "accuracy against eps"),
                       f"accuracy against eps, {e.rel}",
                       "Thick line: the ensemble's worst case. Thin lines: "
                       + ("each member alone." if all(m.get("alone_acc") is not None for x in r.results for m in x.members)
                          else "the ensemble's accuracy after each member (early exit: later members only attack what earlier ones left).")),
            self.image(f"breakdown-{key}", plots.breakdown(rd, "which member broke how many samples"),
                       f"samples broken per member, {e.rel}",
                       "Samples each member broke first (a sample is counted for the first member that fools the model)."),
        ]
        out += [Grid(figs)] if len(r.results[0].members) <= 6 else figs
        results = sorted(r.results, key=lambda x: x.eps)
        header = ["#", "member"] + [f"eps {x.eps:g}: broke / acc after" for x in results]
        rows = [["", "clean"] + [f"- / {pct(x.clean_acc)}" for x in results]]
        for k, m in enumerate(results[0].members):
            row = [str(k), m["label"]]
            for x in results:
                mm = x.members[k] if k < len(x.members) else None
                if mm is None:
                    row.append("-")
                elif mm.get("skipped"):
                    row.append(("skipped", "muted"))
                else:
                    row.append(f"{mm['broke']} / {pct(mm['running_acc'])}"
                               + (f" (alone {pct(mm['alone_acc'])})" if mm.get("alone_acc") is not None else ""))
            rows.append(row)
        rows.append([("", ""), ("ensemble (worst case)", "strong")] + [(pct(x.robust_acc), "strong") for x in results])
        out.append(Table(header, rows, align="rl" + "r" * len(results)))
        counts = []
        for x in results:
            b = x.breaker
            wrong, robust = sum(1 for v in b if v == -2), sum(1 for v in b if v == -1)
            counts.append(f"eps {x.eps:g}: {len(b)} samples, {wrong} wrong on the clean image, {len(b) - wrong - robust} broken, "
                          f"{robust} robust ({x.seconds:.1f} s)"
                          + (f"; calibrated estimator {x.calibration['estimator']}" if x.calibration else ""))
        out.append(Para(". ".join(counts) + "."))
        return out

    # ------------------------------------------------------------------ pipeline stages
    def stage_accuracy(self) -> Section | None:
        """Clean and robust accuracy after each training stage (pipeline runs only: None otherwise)."""
        d = self.d
        s = Section("stages", "Per-stage accuracy")
        if d.pipeline is None:
            return None
        rows = d.stages
        if not rows:
            s.blocks.append(Para("Not available: pipeline.json records no accuracy for any training stage "
                                 "(no stage finished yet, or it was written by an older robustsnn).", "note"))
            return s
        measured = [r for r in rows if r["robust"] is not None]
        settings = {(r["preset"], r["eps"]) for r in measured}
        same = len(settings) == 1
        preset, eps = next(iter(settings)) if same else (None, None)

        def how(r) -> str:
            bits = [x for x in (r["preset"] and f"preset {r['preset']}", r["eps"] is not None and f"eps {r['eps']:g}") if x]
            return ", ".join(bits)

        robust_head = "robust" + (f" ({how(measured[0])})" if same and how(measured[0]) else "")
        table, prev = [], None
        for r in rows:
            change = ""
            if prev is not None:
                parts = [f"{(r['clean'] - prev['clean']) * 100:+.1f}"]
                if r["robust"] is not None and prev["robust"] is not None:
                    parts.append(f"{(r['robust'] - prev['robust']) * 100:+.1f}")
                change = " / ".join(parts) + " pts"
            robust = pct(r["robust"]) + (f" ({how(r)})" if r["robust"] is not None and not same and how(r) else "")
            table.append([r["label"], (pct(r["clean"]), "strong"), (robust, "strong") if r["robust"] is not None else ("n/a", "muted"),
                          str(r["n"]) if r["n"] else ("?", "muted"), change, (r["source"], "muted")])
            prev = r
        fig = self.image("stage-accuracy", plots.stage_accuracy([(r["label"], r["clean"], r["robust"]) for r in rows], robust_head),
                         "clean and robust accuracy after each pipeline stage",
                         "Blue: clean accuracy; orange: robust accuracy; n/a: not recorded for that stage.")
        same_images = all(r["source"] == "pipeline.json accuracy" for r in rows) and len({r["n"] for r in rows}) == 1
        images = (f"on the same first {rows[0]['n']} test images" if same_images else
                  "on the test images each stage recorded (n; older records: not necessarily the same images)")
        s.blocks.append(Para(f"The model after each stage of the pipeline, {images}: where the route gains or loses "
                             "accuracy. The final model's full evaluation is in the Robustness section."
                             + (" Robust accuracy under preset quick (PGD-10, one surrogate) is for comparing the stages, "
                                "not a robustness number." if preset == "quick" else "")))
        s.blocks.append(Grid([fig, Table(["stage", "clean", robust_head, "n", "change vs previous (clean / robust)", "from"], table,
                                         align="lrrrrl")]))
        missing = [r["label"] for r in rows if r["robust"] is None]
        if missing:
            s.blocks.append(Para(f"No robust accuracy recorded for: {', '.join(missing)} (pipeline.json from an older robustsnn "
                                 "records clean accuracy only; a new run measures both).", "note"))
        return s

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self) -> Section:
        s = Section("diagnostics", "Gradient-masking diagnostics")
        d = self.d
        if not d.evals:
            s.blocks.append(self.missing("evaluation", "no evaluation result"))
            return s
        if d.warnings:
            n = len(d.warnings)
            s.blocks.append(Para(f"{n} check{'s' if n > 1 else ''} tripped (marked TRIPPED below): the robust accuracy "
                                 "of that evaluation is probably an overestimate.", "bad"))
        else:
            s.blocks.append(Para("No diagnostic tripped.", "ok"))
        for e in d.evals:
            checks = e.result.diagnostics.get("checks") or []
            s.blocks.append(Heading(e.rel))
            if not checks:
                s.blocks.append(Para("Not available: the evaluation ran without diagnostics.", "note"))
                continue
            rows = []
            for c in checks:
                status = ("n/a", "muted") if c.get("tripped") is None else (("TRIPPED", "bad") if c["tripped"] else ("ok", "ok"))
                rows.append([c["name"], "" if c.get("eps") is None else f"{c['eps']:g}", status, c.get("message", "")])
            s.blocks.append(Table(["check", "eps", "status", "detail"], rows, align="lrll"))
        return s

    # ------------------------------------------------------------------ efficiency
    def spikes(self) -> Section:
        s = Section("spikes", "Spike activity")
        eff = self.d.efficiency or {}
        sp = eff.get("spikes")
        if not sp or not sp.get("layers"):
            why = self.d.missing.get("spikes") or self.d.missing.get("energy") or self.d.missing.get("efficiency") \
                or "the efficiency measurement recorded no spiking layer"
            s.blocks.append(Para(f"Not available: {why}.", "note"))
            return s
        s.blocks.append(Para(self._measured_on()))
        s.blocks.append(self.image("spike-rates", plots.spike_rates(sp), "spike rate per layer and per time step"))
        rows = [[r["layer"], f"{r['neurons']:,}", f"{r['rate']:.4f}", " ".join(f"{v:.3f}" for v in r.get("rate_per_step", [])),
                 f"{r.get('spikes_per_image', 0):,.1f}"] for r in sp["layers"]]
        rows.append([("whole network", "strong"), f"{sum(r['neurons'] for r in sp['layers']):,}", (f"{sp['rate']:.4f}", "strong"),
                     " ".join(f"{v:.3f}" for v in sp.get("rate_per_step", [])), f"{sp.get('spikes_per_image', 0):,.1f}"])
        s.blocks.append(Table(["spiking layer", "neurons", "rate", "rate per time step", "spikes per image"], rows))
        return s

    def _measured_on(self) -> str:
        d, eff = self.d, self.d.efficiency or {}
        where = d.efficiency_note or (f"from {d.efficiency_rel}" if d.efficiency_rel else "")
        ck = eff.get("checkpoint")
        if ck:
            ck = next((c.rel for c in d.checkpoints if str(c.path) == str(Path(ck).resolve())), ck)
        what = "Measured" + (f" on {ck}" if ck else "")
        if eff.get("images"):
            what += ", " + " ".join(str(x) for x in (eff["images"], eff.get("dataset"), eff.get("split"), "images") if x)
        return what + (f" ({where})." if where else ".")

    def sparsity(self) -> Section:
        s = Section("sparsity", "Sparsity")
        d = self.d
        if not d.sparsity:
            s.blocks.append(self.missing("sparsity" if "sparsity" in d.missing else "checkpoint", "no final model"))
            return s
        w = sum(x["weights"] for x in d.sparsity)
        nz = sum(x["nonzero"] for x in d.sparsity)
        s.blocks.append(Para(f"Final model {d.final.rel}: {1 - nz / w:.1%} of its {w:,} conv/linear weights are zero "
                             f"({nz:,} non-zero)." if w else f"Final model {d.final.rel} has no conv/linear weights."))
        pruning = d.final.meta.get("pruning")
        if isinstance(pruning, dict):
            s.blocks.append(Para("Pruning: " + ", ".join(f"{k} {v}" for k, v in pruning.items() if not isinstance(v, (dict, list))) + "."))
        fig = self.image("sparsity", plots.sparsity(d.sparsity), "sparsity per layer")
        rows = [[r["layer"], f"{r['weights']:,}", f"{r['nonzero']:,}", f"{r['sparsity']:.1%}", "yes" if r.get("masked") else "no"]
                for r in d.sparsity]
        rows.append([("all", "strong"), f"{w:,}", f"{nz:,}", (f"{1 - nz / w:.1%}" if w else "n/a", "strong"), ""])
        s.blocks.append(Grid([fig, Table(["layer", "weights", "non-zero", "sparsity", "masked"], rows, align="lrrrl")]))
        return s

    def energy(self) -> Section:
        s = Section("energy", "Energy and memory")
        d = self.d
        eff = d.efficiency or {}
        if not eff:
            s.blocks.append(self.missing("efficiency", "no efficiency measurement"))
            return s
        s.blocks.append(Para(self._measured_on()))
        e = eff.get("energy")
        if e:
            var, sv = e["variants"], e["savings"]
            order = [k for k in ("snn", "snn_dense", "ann", "ann_dense") if k in var]
            bars = [(VARIANT_NAMES.get(k, k), var[k]["energy_pj"], sv.get(k)) for k in order]
            s.blocks.append(Heading("Energy per image"))
            fig = self.image("energy", plots.energy(bars), "energy per image: this SNN, dense SNN, ANN")
            rows = [[VARIANT_NAMES.get(k, k), _num(var[k]["macs"]), _num(var[k]["sops"]), _uj(var[k]["energy_pj"]),
                     (_ratio(sv.get(k)), "strong" if k != order[0] else "")] for k in order]
            model = e.get("model", {})
            s.blocks.append(Grid([fig, Table(["variant", "MACs", "SOPs", "energy", "x this model"], rows)]))
            s.blocks.append(Para(f"E = {model.get('e_mac_pj', 4.6)} pJ x MACs + {model.get('e_ac_pj', 0.9)} pJ x SOPs per image "
                                 "(45 nm, Horowitz 2014). The dense variants have the same architecture with every weight non-zero; "
                                 "the ANN is the SNN's non-spiking twin.", "note"))
            layers = (eff.get("ops") or {}).get("layers") or []
            if layers:
                snn = eff.get("kind") == "snn"
                header = ["layer", "input", "non-zero / weights", "ANN MACs"] + (["SNN MACs", "SOPs", "SOPs dense"] if snn else [])
                rows = []
                for r in layers:
                    row = [r["layer"], str(r.get("input", "")), f"{r['nonzero']:,} / {r['weights']:,}", _num(r["ann_macs"])]
                    if snn:
                        row += [_num(r["macs"]), _num(r["sops"]), _num(r["sops_dense"])]
                    rows.append(row)
                s.blocks.append(Heading("Operations per image and layer", 4))
                s.blocks.append(Table(header, rows, align="ll" + "r" * (len(header) - 2)))
        else:
            s.blocks.append(self.missing("energy", "no energy measurement"))
        m = eff.get("memory")
        if m:
            s.blocks.append(Heading("Memory"))
            variants = [("this SNN\n(sparse)", m["sparse_bytes"], m["stored_values"]), ("dense SNN\n(fp32)", m["dense_bytes"], m["weights"])]
            if d.ann_memory:
                a = d.ann_memory
                variants.append((f"ANN\n({d.ann_rel})", a["dense_bytes"], a["weights"]))
            s.blocks.append(self.image("memory", plots.memory(variants), "stored bytes and weights: sparse SNN, dense SNN, ANN"))
            rows = [["this SNN, packed sparse", f"{m['nonzero']:,} non-zero ({m['stored_values']:,} values stored)", _kib(m["sparse_bytes"]), ("1.00x", "")],
                    ["dense SNN, fp32", f"{m['weights']:,}", _kib(m["dense_bytes"]), (_ratio(m["bytes_ratio"]), "strong")]]
            if d.ann_memory:
                a = d.ann_memory
                rows.append([f"ANN {d.ann_rel}, fp32", f"{a['weights']:,}", _kib(a["dense_bytes"]),
                             (_ratio(a["dense_bytes"] / m["sparse_bytes"]) if m["sparse_bytes"] else "n/a", "strong")])
            else:
                rows.append(["ANN twin, fp32", ("same conv/linear weights as the dense SNN", "muted"), ("(no ANN checkpoint in the run)", "muted"), ""])
            s.blocks.append(Table(["variant", "weights", "bytes", "x this model"], rows, align="lrrr"))
            s.blocks.append(Para("Bytes are tensor bytes of the checkpoint (CSR or bitmap per weight with int32 indices, whichever is "
                                 "smaller; index overhead counted; file headers not counted).", "note"))
        return s

    # ------------------------------------------------------------------ training
    def training(self) -> Section:
        s = Section("training", "Training")
        d = self.d
        if not d.logs:
            s.blocks.append(self.missing("training", "no training log"))
            return s
        figs, rows = [], []
        for log in d.logs:
            figs.append(self.image(f"train-{_slug(log.stage)}", plots.training_curve(log.history, f"{log.stage}"),
                                   f"training curve of {log.stage}", f"{log.stage} ({log.rel})"))
            last = log.history[-1] if log.history else {}
            rows.append([log.stage, str(last.get("epoch", len(log.history))), f"{last.get('loss', float('nan')):.4f}",
                         pct(last.get("train_acc")), pct(last.get("test_acc")) + (f" ({last['test_images']})" if "test_images" in last else ""),
                         f"{sum(h.get('seconds', 0) for h in log.history):.0f} s",
                         str((log.recipe or {}).get("objective", ""))])
        s.blocks.append(Table(["stage", "epochs", "last loss", "train acc", "test acc (images)", "time", "objective"], rows,
                              align="lrrrrrl"))
        s.blocks.append(Grid(figs))
        return s

    # ------------------------------------------------------------------ commands
    def commands(self) -> Section:
        s = Section("commands", "Commands and configuration")
        d = self.d
        p = d.pipeline
        s.blocks.append(Heading("Pipeline"))
        if p:
            if p.get("command"):
                s.blocks.append(Code(str(p["command"]), "pipeline command"))
            stages = p.get("stages") or []
            if stages:
                known = {"name", "status", "seconds", "command"}

                def details(st: dict) -> str:
                    out = []
                    for k, v in st.items():
                        if k in known or isinstance(v, (dict, list)) or v is None:
                            continue
                        if isinstance(v, float):
                            v = pct(v) if k.endswith("acc") and 0 <= v <= 1 else f"{v:g}"
                        out.append(f"{k} {v}")
                    return ", ".join(out)

                rows = [[str(st.get("name", "")), (str(st.get("status", "")), "ok" if st.get("status") == "done" else "bad"),
                         f"{st['seconds']:.0f} s" if isinstance(st.get("seconds"), (int, float)) else "",
                         str(st.get("command") or details(st))] for st in stages]
                s.blocks.append(Table(["stage", "status", "time", "command / result"], rows, align="llrl"))
            if p.get("config") is not None:
                s.blocks.append(Code(_json(p["config"]), "pipeline configuration (pipeline.json)"))
        else:
            s.blocks.append(Para("Not available: no RUN_DIR/pipeline.json (only a multi-stage pipeline writes one); "
                                 "the commands below come from the checkpoints and results.", "note"))
        s.blocks.append(Heading("Checkpoints"))
        if d.checkpoints:
            rows = []
            for c in d.checkpoints:
                hist = c.meta.get("history") or []
                last = hist[-1] if hist else {}
                rows.append([(c.rel + ("  (final)" if c is d.final else ""), "strong" if c is d.final else ""), c.describe(),
                             str(c.meta.get("dataset", "")), str(c.meta.get("epoch", "")),
                             pct(last.get("test_acc")) if "test_acc" in last else "",
                             time.strftime("%Y-%m-%d %H:%M", time.localtime(c.mtime))])
            s.blocks.append(Table(["checkpoint", "model", "data set", "epochs", "test acc", "written"], rows, align="lllrrl"))
            for c in d.checkpoints:
                cmd = c.meta.get("command")
                s.blocks.append(Code(cmd or "(no command recorded: saved from Python)", f"{c.rel}: command"))
                cfg = {k: c.meta[k] for k in ("recipe", "options", "pruning", "conversion") if c.meta.get(k) is not None}
                cfg["model"] = c.meta.get("model")
                s.blocks.append(Code(_json(cfg), f"{c.rel}: configuration (config.json)", collapsed=True))
        else:
            s.blocks.append(self.missing("checkpoint", "no checkpoint"))
        s.blocks.append(Heading("Evaluations"))
        if d.evals:
            for e in d.evals:
                r = e.result
                s.blocks.append(Code(r.command or "(no command recorded: evaluated from Python)", f"{e.rel}: command"))
                cfg = {"preset": r.preset, "norm": r.norm, "eps": r.eps, "n": r.n, "seed": r.seed, "dataset": r.dataset,
                       "settings": r.settings, "members": [m.get("label") for m in r.members], "timings_s": r.timings,
                       "environment": r.environment, "robustsnn": r.version}
                s.blocks.append(Code(_json(cfg), f"{e.rel}: settings", collapsed=True))
        else:
            s.blocks.append(self.missing("evaluation", "no evaluation"))
        s.blocks.append(Heading("Efficiency"))
        eff = d.efficiency
        if eff and eff.get("command"):
            s.blocks.append(Code(eff["command"], f"{d.efficiency_rel or 'efficiency'}: command"))
        elif eff:
            s.blocks.append(Para(self._measured_on()))
        else:
            s.blocks.append(self.missing("efficiency", "no efficiency measurement"))
        s.blocks.append(Heading("This report"))
        s.blocks.append(Code(f"robustsnn report {d.run_dir}", "regenerate"))
        return s

    def missing_section(self) -> Section | None:
        d = self.d
        if not d.missing and not d.problems:
            return None
        s = Section("missing", "Not available")
        if d.missing:
            s.blocks.append(Table(["what", "why / what to run"], [[k, v] for k, v in d.missing.items()], align="ll"))
        if d.problems:
            s.blocks.append(Heading("Files that could not be read"))
            s.blocks.append(Table(["problem"], [[p] for p in d.problems], align="l"))
        return s


def _guarded(data: RunData, make, sid: str, title: str):
    """``make()``, or a section that says why it could not be built (input files in an unexpected layout)."""
    try:
        return make()
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError) as e:
        msg = f"{title}: could not be built from the files found ({type(e).__name__}: {e}); they may come from another robustsnn version"
        data.problems.append(msg)
        note = Para(f"Not available: {msg}.", "note")
        return [note] if sid == "summary" else Section(sid, title, [note])


def build(data: RunData) -> Document:
    """The report of a run as blocks (and its figures as PNG bytes)."""
    b = _Builder(data)
    summary = _guarded(data, b.summary, "summary", "Summary")
    sections = [
        _guarded(data, make, sid, title)
        for make, sid, title in (
            (b.robustness, "robustness", "Robustness"),
            (b.stage_accuracy, "stages", "Per-stage accuracy"),
            (b.diagnostics, "diagnostics", "Gradient-masking diagnostics"),
            (b.spikes, "spikes", "Spike activity"),
            (b.sparsity, "sparsity", "Sparsity"),
            (b.energy, "energy", "Energy and memory"),
            (b.training, "training", "Training"),
            (b.commands, "commands", "Commands and configuration"),
        )
    ]
    sections = [x for x in sections if x is not None]  # a section that does not apply to this run
    extra = b.missing_section()
    if extra is not None:
        sections.append(extra)
    name = data.run_dir.resolve().name or str(data.run_dir)
    model = data.final.describe() if data.final else "no model"
    return Document(
        title=f"robustsnn report: {name}",
        subtitle=f"{data.run_dir.resolve()}  ·  {model}",
        summary=summary,
        sections=sections,
        images=b.images,
        footer=f"Generated by robustsnn {data.version} on {time.strftime('%Y-%m-%d %H:%M:%S')}. "
               "Self-contained: no network access needed to view it.",
    )
