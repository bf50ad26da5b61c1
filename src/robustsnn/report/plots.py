"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Every function takes plain numbers (the JSON the evaluation, efficiency and
training steps wrote) and returns the figure as PNG bytes.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, PercentFormatter

__all__ = [
    "accuracy_vs_eps",
    "accuracy_overview",
    "breakdown",
    "spike_rates",
    "sparsity",
    "energy",
    "memory",
    "training_curve",
    "stage_accuracy",
]

DPI = 110
INK = "#1f2933"
ACCENT = "#1565c0"
MUTED = "#9aa5b1"
BAD = "#c62828"
PALETTE = ["#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#00838f", "#ad1457", "#5d4037", "#827717", "#37474f"]


def _fig(w: float, h: float, ncols: int = 1, **kw) -> tuple[Figure, list]:
    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False, **kw)[0]
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(True, axis="y", color="#e4e7eb", linewidth=0.8)
        ax.set_axisbelow(True)
        ax.tick_params(colors=INK, labelsize=8.5)
    return fig, list(axes)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return buf.getvalue()


def _colors(k: int) -> list:
    if k <= len(PALETTE):
        return PALETTE[:k]
    from matplotlib import colormaps

    cmap = colormaps["turbo"]
    return [cmap(0.05 + 0.9 * i / max(k - 1, 1)) for i in range(k)]


def _short(label: str, width: int = 34) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


# ---------------------------------------------------------------------------- robustness
def accuracy_vs_eps(result: dict, title: str) -> bytes:
    """Accuracy against eps: clean at 0, every member's accuracy, the ensemble's worst case.

    ``result`` is an :class:`~robustsnn.evaluate.EvalResult` as a dict. A member's line is its
    accuracy on its own when the run recorded it (no early exit), else the ensemble's accuracy
    after it (cumulative).
    """
    results = sorted(result["results"], key=lambda r: r["eps"])
    eps = [0.0] + [r["eps"] for r in results]
    labels = [m["label"] for m in results[0]["members"]]
    alone = all(m.get("alone_acc") is not None for r in results for m in r["members"])
    many = len(labels) > 6
    fig, (ax,) = _fig(8.4 if many else 5.2, 3.9 if many else 3.4)
    broke = [sum(r["members"][k]["broke"] for r in results if k < len(r["members"])) for k in range(len(labels))]
    # many members: colour the ones that broke samples (at most 10), draw the rest thin and grey
    shown = set(sorted((k for k in range(len(labels)) if broke[k] > 0), key=lambda k: -broke[k])[:10]) if many else set(range(len(labels)))
    colors = dict(zip(sorted(shown), _colors(len(shown))))
    grey_label = None
    for k, label in enumerate(labels):
        ys = [result["clean_acc"]]
        for r in results:
            m = r["members"][k] if k < len(r["members"]) else None
            v = None if m is None or m.get("skipped") else (m["alone_acc"] if alone else m["running_acc"])
            ys.append(math.nan if v is None else v)
        if k in shown:
            ax.plot(eps, ys, color=colors[k], linewidth=1.2, alpha=0.9, marker=".", markersize=4,
                    label=_short(label) + (" (alone)" if alone else "") + (f"  [{broke[k]}]" if many else ""))
        else:
            if grey_label is None:
                rest = len(labels) - len(shown)
                grey_label = f"{rest} other member{'s' if rest > 1 else ''}" + (" (broke none)" if not any(broke[j] for j in range(len(labels)) if j not in shown) else "")
                lab = grey_label
            else:
                lab = None
            ax.plot(eps, ys, color=MUTED, linewidth=0.8, alpha=0.6, label=lab)
    ax.plot(eps, [result["clean_acc"]] + [r["robust_acc"] for r in results], color=INK, linewidth=2.6, marker="o",
            markersize=6, label="ensemble (worst case)", zorder=5)
    for x, y in zip(eps[1:], [r["robust_acc"] for r in results]):
        ax.annotate(f"{y:.1%}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8, color=INK,
                    fontweight="bold")
    ax.set_xlabel(f"eps ({result['norm']})", fontsize=9, color=INK)
    ax.set_ylabel("accuracy", fontsize=9, color=INK)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_ylim(-0.02, 1.05)
    ax.set_xticks(eps)
    ax.set_xticklabels([f"{e:g}" for e in eps])
    ax.set_title(title, fontsize=10, color=INK, loc="left")
    if many:
        handles, names = ax.get_legend_handles_labels()
        order = sorted(range(len(names)), key=lambda i: (names[i] == grey_label, names[i] == "ensemble (worst case)"))
        ax.legend([handles[i] for i in order], [names[i] for i in order], fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                  title="member  [samples it broke]", title_fontsize=7.5)
    else:
        ax.legend(fontsize=7.5, loc="upper right", frameon=False)
    return _png(fig)


def accuracy_overview(curves: Sequence[tuple[str, float, list[tuple[float, float]]]], norm: str) -> bytes:
    """Ensemble robust accuracy against eps, one line per evaluation: (label, clean, [(eps, acc)])."""
    fig, (ax,) = _fig(6.8, 3.6)
    for (label, clean, pts), c in zip(curves, _colors(len(curves))):
        pts = sorted(pts)
        ax.plot([0.0] + [p[0] for p in pts], [clean] + [p[1] for p in pts], marker="o", color=c, linewidth=1.8,
                markersize=5, label=_short(label, 48))
    ax.set_xlabel(f"eps ({norm})", fontsize=9, color=INK)
    ax.set_ylabel("robust accuracy", fontsize=9, color=INK)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_ylim(-0.02, 1.05)
    ax.legend(fontsize=7.5, frameon=False)
    ax.set_title("ensemble robust accuracy, every evaluation", fontsize=10, color=INK, loc="left")
    return _png(fig)


def breakdown(result: dict, title: str) -> bytes:
    """Samples broken first by each member, one bar group per eps (horizontal bars)."""
    results = sorted(result["results"], key=lambda r: r["eps"])
    labels = [m["label"] for m in results[0]["members"]]
    k, g = len(labels), len(results)
    fig, (ax,) = _fig(5.0 if k <= 6 else 7.4, max(1.8, 0.9 + (0.2 if k <= 6 else 0.12) * k * min(g, 3)))
    ax.grid(False)
    ax.grid(True, axis="x", color="#e4e7eb", linewidth=0.8)
    h = 0.8 / g
    colors = _colors(g) if g > 1 else [ACCENT]
    for j, (r, c) in enumerate(zip(results, colors)):
        vals = [(r["members"][i]["broke"] if i < len(r["members"]) else 0) for i in range(k)]
        ys = [i - 0.4 + h * (j + 0.5) for i in range(k)]
        bars = ax.barh(ys, vals, height=h * 0.92, color=c, label=f"eps={r['eps']:g}")
        for b, v in zip(bars, vals):
            if v:
                ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {v}", va="center", fontsize=7, color=INK)
    most = max([m["broke"] for r in results for m in r["members"]] + [0])
    ax.set_xlim(0, max(1, most) * 1.15)
    ax.set_yticks(range(k))
    ax.set_yticklabels([_short(l, 40) for l in labels], fontsize=7.5 if k > 8 else 8.5)
    ax.invert_yaxis()
    ax.set_xlabel("samples broken first by this member", fontsize=9, color=INK)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title, fontsize=10, color=INK, loc="left")
    if g > 1:
        ax.legend(fontsize=7.5, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="budget",
                  title_fontsize=7.5)
    return _png(fig)


# ---------------------------------------------------------------------------- efficiency
def spike_rates(spikes: dict) -> bytes:
    """Rate per spiking layer (bars) and, when T > 1, the rate at each time step (lines)."""
    layers = spikes["layers"]
    names = [r["layer"] for r in layers]
    per_step = any(len(r.get("rate_per_step") or []) > 1 for r in layers)
    fig, axes = _fig(8.0 if per_step else 5.0, 3.0, ncols=2 if per_step else 1)
    ax = axes[0]
    bars = ax.bar(range(len(names)), [r["rate"] for r in layers], color=ACCENT, width=0.65)
    for b, r in zip(bars, layers):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{r['rate']:.3f}", ha="center", va="bottom", fontsize=7.5,
                color=INK)
    ax.axhline(spikes["rate"], color=BAD, linestyle="--", linewidth=1, label=f"whole network {spikes['rate']:.3f}")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center", fontsize=8)
    ax.set_ylabel("spikes per neuron per step", fontsize=9, color=INK)
    ax.set_title("spike rate per layer", fontsize=10, color=INK, loc="left")
    ax.legend(fontsize=7.5, frameon=False)
    if per_step:
        ax = axes[1]
        for r, c in zip(layers, _colors(len(layers))):
            steps = r["rate_per_step"]
            ax.plot(range(1, len(steps) + 1), steps, marker="o", markersize=4, color=c, label=r["layer"], linewidth=1.3)
        total = spikes.get("rate_per_step") or []
        if total:
            ax.plot(range(1, len(total) + 1), total, color=INK, linewidth=2.4, marker="o", markersize=5, label="whole network")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("time step", fontsize=9, color=INK)
        ax.set_xticks(range(1, max(len(r["rate_per_step"]) for r in layers) + 1))
        ax.set_title("spike rate per time step", fontsize=10, color=INK, loc="left")
        ax.legend(fontsize=7, frameon=False, ncol=2 if len(layers) > 6 else 1)
    return _png(fig)


def sparsity(rows: list[dict]) -> bytes:
    """Share of zero weights per conv/linear layer, with non-zero / total on each bar."""
    fig, (ax,) = _fig(min(9.0, max(4.6, 1.0 + 0.7 * len(rows))), 3.0)
    names = [r["layer"] for r in rows]
    vals = [r["sparsity"] for r in rows]
    bars = ax.bar(range(len(rows)), vals, color=[ACCENT if r.get("masked") else MUTED for r in rows], width=0.65)
    for b, r in zip(bars, rows):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{r['sparsity']:.0%}\n{r['nonzero']:,}/{r['weights']:,}",
                ha="center", va="bottom", fontsize=7, color=INK)
    ax.set_ylim(0, 1.2)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, rotation=30 if len(rows) > 5 else 0, ha="right" if len(rows) > 5 else "center", fontsize=8)
    ax.set_ylabel("weights that are zero", fontsize=9, color=INK)
    ax.set_title("sparsity per layer (blue: masked, grey: no mask)", fontsize=10, color=INK, loc="left")
    return _png(fig)


def energy(variants: list[tuple[str, float, float | None]]) -> bytes:
    """Energy per image (µJ) of each variant: (label, pJ, ratio to the sparse SNN)."""
    fig, (ax,) = _fig(5.2, 3.0)
    names = [v[0] for v in variants]
    uj = [v[1] / 1e6 for v in variants]
    colors = [ACCENT] + [MUTED] * (len(variants) - 1)
    bars = ax.bar(range(len(variants)), uj, color=colors, width=0.6)
    for b, (_, _, ratio) in zip(bars, variants):
        txt = f"{b.get_height():.3g} µJ" + (f"\n{ratio:.2f}x" if ratio is not None else "")
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(), txt, ha="center", va="bottom", fontsize=7.5, color=INK)
    ax.set_ylim(0, max(uj + [1e-12]) * 1.3)
    ax.set_xticks(range(len(variants)))
    ax.set_xticklabels(names, fontsize=8.5)
    ax.set_ylabel("energy per image (µJ)", fontsize=9, color=INK)
    ax.set_title("energy per image (x = times the sparse SNN)", fontsize=10, color=INK, loc="left")
    return _png(fig)


def memory(variants: list[tuple[str, float, int]]) -> bytes:
    """Stored bytes (KiB) and stored weights per variant: (label, bytes, weights)."""
    fig, axes = _fig(7.6, 2.9, ncols=2)
    names = [v[0] for v in variants]
    colors = [ACCENT] + [MUTED] * (len(variants) - 1)
    for ax, vals, unit, title in (
        (axes[0], [v[1] / 1024 for v in variants], "KiB", "stored bytes"),
        (axes[1], [float(v[2]) for v in variants], "", "stored weights (conv/linear)"),
    ):
        bars = ax.bar(range(len(vals)), vals, color=colors, width=0.6)
        base = vals[0] if vals and vals[0] else None
        for b, v in zip(bars, vals):
            txt = (f"{v:,.1f} KiB" if unit else f"{v:,.0f}") + (f"\n{v / base:.2f}x" if base else "")
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), txt, ha="center", va="bottom", fontsize=7.5, color=INK)
        ax.set_ylim(0, max(vals + [1e-12]) * 1.3)
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels(names, fontsize=7.5)
        ax.set_title(title, fontsize=10, color=INK, loc="left")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    return _png(fig)


# ---------------------------------------------------------------------------- training
def training_curve(history: list[dict], title: str) -> bytes:
    """Loss (left axis) and train / test accuracy (right axis) per epoch."""
    fig, (ax,) = _fig(3.35, 2.5)
    ep = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    lines = []
    if any("loss" in h for h in history):
        lines += ax.plot(ep, [h.get("loss", math.nan) for h in history], color=BAD, marker="o", markersize=4, label="loss")
    ax.set_xlabel("epoch", fontsize=9, color=INK)
    ax.set_ylabel("loss", fontsize=9, color=BAD)
    ax.set_xticks(ep if len(ep) <= 12 else ep[:: max(1, len(ep) // 10)])
    acc = ax.twinx()
    acc.spines[["top"]].set_visible(False)
    acc.tick_params(labelsize=8.5)
    for key, c, style in (("train_acc", ACCENT, "--"), ("test_acc", "#2e7d32", "-")):
        if any(key in h for h in history):
            lines += acc.plot(ep, [h.get(key, math.nan) for h in history], color=c, linestyle=style, marker="o",
                              markersize=4, label=key.replace("_acc", " acc"))
    acc.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    acc.set_ylim(0, 1.02)
    acc.set_ylabel("accuracy", fontsize=9, color=INK)
    ax.set_title(title, fontsize=10, color=INK, loc="left")
    if lines:
        ax.legend(lines, [l.get_label() for l in lines], fontsize=7, frameon=False, loc="center right")
    return _png(fig)


# ---------------------------------------------------------------------------- pipeline stages
def stage_accuracy(stages: Sequence[tuple[str, float | None, float | None]], robust_label: str = "robust") -> bytes:
    """Clean and robust accuracy after each pipeline stage, as grouped bars: (label, clean, robust).

    A missing number (None) leaves its bar out and writes ``n/a`` at its place, so an old run
    with clean accuracy only still shows where the clean accuracy was lost.
    """
    from matplotlib.patches import Patch

    k = len(stages)
    fig, (ax,) = _fig(min(9.0, max(4.8, 1.3 + 1.45 * k)), 3.2)
    w = 0.38
    handles = []
    for j, (name, color, idx) in enumerate((("clean", ACCENT, 1), (robust_label, "#ef6c00", 2))):
        xs = [i + (j - 0.5) * w for i in range(k)]
        vals = [st[idx] for st in stages]
        shown = [(x, v) for x, v in zip(xs, vals) if v is not None]
        if shown:
            ax.bar([x for x, _ in shown], [v for _, v in shown], width=w * 0.94, color=color)
        handles.append(Patch(color=color, label=name if shown else f"{name}: not recorded"))
        for x, v in zip(xs, vals):
            ax.text(x, 0.0 if v is None else v, "n/a" if v is None else f"{v:.1%}", ha="center", va="bottom", fontsize=7.5,
                    color=MUTED if v is None else INK)
    ax.set_xlim(-0.7, k - 0.3)
    ax.set_ylim(0, 1.12)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_xticks(range(k))
    ax.set_xticklabels([st[0].replace(" (", "\n(") for st in stages], fontsize=8)
    ax.set_ylabel("test accuracy", fontsize=9, color=INK)
    ax.set_title("accuracy of the model after each stage", fontsize=10, color=INK, loc="left")
    ax.legend(handles=handles, fontsize=7.5, frameon=False, loc="upper right", ncol=2)
    return _png(fig)
