"""Gradient-masking diagnostics: an evaluation checks itself (after AutoAttack's checks.py).

SNNs look more robust than they are when the surrogate gradient vanishes or
points the wrong way. Every evaluation runs these checks and stores them in its
result; a check that trips is a warning that the robust accuracy is probably an
overestimate.

========================  ===============================================================
zero_gradients            share of samples whose input gradient (CW margin loss, which does
                          not saturate) is exactly zero under *every* estimator in use
black_box                 black-box members (Square, transfer, noise) still break samples
                          that every white-box member failed on; a short Square probe
                          stands in when the preset has no black-box member
large_eps                 the white-box members at a large budget (L-inf 0.5) do not drive
                          accuracy to ~0
more_steps                PGD with 4x the steps gives a *higher* accuracy than with k steps
eps_monotone              accuracy rises with a larger eps
estimator_gap             the white-box members after the first break more than a quarter of
                          what the first left robust: the model masks that member's gradient,
                          so a single-attack number (PGD-10 in a training log) overstates it
========================  ===============================================================
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from ..estimators import Estimator, parse_estimator
from .base import LOSSES, RobustnessWarning, attack_mode
from .eot import default_eot
from .ensemble import Ensemble, EnsembleResult, Member

__all__ = [
    "Check",
    "Diagnostics",
    "zero_gradient_share",
    "check_zero_gradients",
    "check_black_box",
    "probe_black_box",
    "check_large_eps",
    "check_more_steps",
    "check_eps_monotone",
    "check_estimator_gap",
    "large_eps_for",
]


@dataclass
class Check:
    """One diagnostic. ``tripped`` is None when the check could not run (``message`` says why)."""

    name: str
    tripped: bool | None
    message: str
    value: float | None = None
    threshold: float | None = None
    eps: float | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Diagnostics:
    """All checks of one evaluation."""

    checks: list[Check] = field(default_factory=list)

    def add(self, check: Check | None) -> None:
        if check is not None:
            self.checks.append(check)

    @property
    def tripped(self) -> bool:
        """True if any check tripped."""
        return any(c.tripped for c in self.checks)

    @property
    def warnings(self) -> list[str]:
        """Messages of the tripped checks."""
        return [c.message for c in self.checks if c.tripped]

    def by_name(self, name: str) -> list[Check]:
        return [c for c in self.checks if c.name == name]

    def emit(self) -> None:
        """Issue each tripped check as a :class:`~robustsnn.attacks.base.RobustnessWarning`."""
        for msg in self.warnings:
            warnings.warn(msg, RobustnessWarning, stacklevel=3)

    def to_dict(self) -> dict:
        return {"tripped": self.tripped, "warnings": self.warnings, "checks": [c.to_dict() for c in self.checks]}


def _at_least(n: int, share: float) -> float:
    """A tolerance in accuracy units: ``share``, but never less than one sample."""
    return max(share, 1.0 / max(n, 1)) + 1e-9


# ------------------------------------------------------------------ zero gradients
def zero_gradient_share(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    estimators: Sequence[Estimator | None],
    eot: int | None = None,
) -> tuple[float, dict[str, float]]:
    """(share of samples with an all-zero input gradient under every estimator, share per estimator).

    The loss is the CW margin (``max_{j != y} z_j - z_y``), whose gradient does not vanish
    when the softmax saturates, so a zero gradient means the model hides it.
    """
    eot = eot or default_eot(model)
    zero_all = torch.ones(x.shape[0], dtype=torch.bool)
    per: dict[str, float] = {}
    for est in estimators:
        est = parse_estimator(est) if isinstance(est, str) else est
        with attack_mode(model, est):
            g = torch.zeros_like(x)
            for _ in range(eot):
                xr = x.detach().clone().requires_grad_(True)
                with torch.enable_grad():
                    loss = LOSSES["margin"](model(xr), y, None).sum()
                if loss.requires_grad:  # a model that detaches its input has no gradient at all
                    gi = torch.autograd.grad(loss, xr, allow_unused=True)[0]
                    if gi is not None:
                        g += gi
        zero = (g.reshape(g.shape[0], -1).abs().amax(1) == 0).cpu()
        per[est.label() if est is not None else "default"] = float(zero.float().mean())
        zero_all &= zero
    return float(zero_all.float().mean()), per


def check_zero_gradients(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    estimators: Sequence[Estimator | None],
    threshold: float = 0.01,
    eot: int | None = None,
) -> Check:
    """Trips if more than ``threshold`` of the samples have a zero gradient under every estimator."""
    share, per = zero_gradient_share(model, x, y, estimators, eot)
    tripped = share > threshold
    msg = (
        f"{share:.1%} of input gradients are exactly zero under every gradient estimator in use: "
        "gradient attacks cannot move these samples, the robust accuracy is probably overestimated (gradient masking)"
        if tripped
        else f"zero input gradients: {share:.1%} of samples (threshold {threshold:.0%})"
    )
    return Check("zero_gradients", tripped, msg, share, threshold, None, {"per_estimator": per, "n": int(x.shape[0])})


# ------------------------------------------------------------------ black box vs white box
def check_black_box(result: EnsembleResult, threshold: float = 0.002) -> Check | None:
    """Trips if black-box members that run after every white-box member break > ``threshold`` of the samples.

    Returns None when the ensemble has no black-box member after its white-box ones.
    """
    recs = result.members
    last_white = max((r.index for r in recs if r.white_box), default=-1)
    late_black = [r for r in recs if not r.white_box and r.index > last_white]
    if not late_black or last_white < 0:
        return None
    broke = sum(r.broke for r in late_black)
    share = broke / max(result.n, 1)
    tripped = broke > 0 and share > threshold
    labels = ", ".join(r.label for r in late_black)
    msg = (
        f"black-box attacks ({labels}) broke {broke} samples ({share:.1%}) that every white-box attack missed: "
        "the white-box attacks are too weak for this model or its gradients are masked; the number holds only "
        "with the black-box members in it, and stronger white-box members should find these too"
        if tripped
        else f"black-box attacks broke {broke} samples the white-box attacks missed ({share:.1%})"
    )
    return Check("black_box", tripped, msg, share, threshold, result.eps,
                 {"broke": broke, "members": [r.label for r in late_black], "probe": False})


def check_estimator_gap(result: EnsembleResult, share: float = 0.25, floor: float = 0.02,
                        min_samples: int = 3) -> Check | None:
    """Trips if the later white-box members lower the accuracy the first one left by more than
    ``share`` of it (and by more than ``floor``, in accuracy units, and by at least ``min_samples``
    images: on a few dozen images a difference of one or two is noise, not masking).

    A model that keeps 48 % against its own surrogate's PGD and 4 % against the other estimators
    masks that surrogate's gradient; the ensemble's number stands, a single-attack number does not.
    Returns None with fewer than two white-box members.
    """
    white = [r for r in result.members if r.white_box and not r.skipped]
    if len(white) < 2:
        return None
    # only what white-box members broke: a black-box member may run between them (strongest's Square)
    n = max(result.n, 1)
    first_left = round(white[0].running_acc * n)  # samples (running_acc is a count over n)
    first, after = first_left / n, (first_left - sum(r.broke for r in white[1:])) / n
    gap = first - after
    limit = max(share * first, floor)
    tripped = gap > limit and round(gap * n) >= min_samples
    msg = (
        f"{white[0].label} alone left {first:.1%}, the other white-box members {after:.1%}: this model masks that "
        f"member's gradient, so a single-attack number (e.g. PGD-10 in a training log) overstates its robustness by "
        f"{100 * gap:.1f} points; trust the ensemble, and train or tune against the estimators that broke it"
        if tripped
        else f"the white-box members after the first lowered accuracy by {100 * gap:.1f} points (from {first:.1%})"
    )
    return Check("estimator_gap", tripped, msg, gap, limit, result.eps,
                 {"first": white[0].label, "first_acc": first, "white_box_acc": after})


def probe_black_box(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    result: EnsembleResult,
    queries: int = 300,
    max_samples: int = 64,
    threshold: float = 0.002,
    seed: int = 0,
    votes: int | None = None,
    batch_size: int = 256,
) -> Check:
    """A short Square attack plus Gaussian noise on (up to ``max_samples``) samples the ensemble left robust.

    Trips if the estimated share of all samples they break exceeds ``threshold``.
    """
    survivors = result.robust.nonzero().squeeze(1)
    if survivors.numel() == 0:
        return Check("black_box", False, "black-box probe: no robust sample left to probe", 0.0, threshold, result.eps,
                     {"probe": True, "probed": 0, "broke": 0})
    idx = survivors[:max_samples]
    ens = Ensemble(
        model,
        [Member("noise", None, {"draws": 4}), Member("square", None, {"n_queries": queries})],
        eps=result.eps, norm=result.norm, seed=seed, votes=votes, batch_size=batch_size,
    )
    dev = x.device
    probe = ens.run(x[idx.to(dev)], y[idx.to(dev)])
    broke = int((probe.clean_correct & ~probe.robust).sum())
    share = broke / idx.numel() * survivors.numel() / max(result.n, 1)
    tripped = broke > 0 and share > threshold
    msg = (
        f"a short black-box probe (Gaussian noise, Square-{queries}) broke {broke} of {idx.numel()} samples that "
        f"every white-box attack missed (about {share:.1%} of all samples): the white-box attacks are too weak for "
        "this model or its gradients are masked; the robust accuracy is an overestimate; use more estimators and "
        "black-box members (preset 'standard' or 'full')"
        if tripped
        else f"black-box probe broke {broke} of {idx.numel()} robust samples"
    )
    return Check("black_box", tripped, msg, share, threshold, result.eps,
                 {"probe": True, "probed": int(idx.numel()), "broke": broke, "queries": queries})


# ------------------------------------------------------------------ large eps
def large_eps_for(eps: float | Sequence[float], norm: str, dim: int) -> float:
    """The 'large' budget of :func:`check_large_eps`: L-inf max(0.5, 2 eps) (<= 1); L2 max(5 eps, sqrt(d)/4)."""
    e = max(eps) if isinstance(eps, (list, tuple)) else float(eps)
    if norm == "Linf":
        return min(1.0, max(0.5, 2 * e))
    return max(5 * e, math.sqrt(dim) / 4)


def check_large_eps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    members: Sequence[Member],
    eps: float,
    norm: str = "Linf",
    threshold: float = 0.05,
    seed: int = 0,
    votes: int | None = None,
    batch_size: int = 256,
) -> Check:
    """Trips if the white-box members at the large budget ``eps`` leave accuracy above ``threshold``."""
    white = [m for m in members if m.white_box] or [Member("pgd", None, {"steps": 20})]
    res = Ensemble(model, white, eps=eps, norm=norm, seed=seed, votes=votes, batch_size=batch_size).run(x, y)
    acc = res.robust_acc
    tripped = acc > threshold
    msg = (
        f"at a large budget eps={eps:g} the white-box attacks still leave {acc:.1%} accuracy "
        f"(clean {res.clean_acc:.1%}): they cannot follow the gradient; expected ~0 (gradient masking)"
        if tripped
        else f"accuracy at large eps={eps:g}: {acc:.1%}"
    )
    return Check("large_eps", tripped, msg, acc, threshold, eps,
                 {"clean_acc": res.clean_acc, "n": res.n, "members": [r.label for r in res.members]})


# ------------------------------------------------------------------ more steps
def check_more_steps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    estimator: Estimator | None,
    eps: float,
    norm: str = "Linf",
    steps: int = 20,
    factor: int = 4,
    tolerance: float = 0.02,
    seed: int = 0,
    votes: int | None = None,
    batch_size: int = 256,
) -> Check:
    """Trips if PGD with ``factor * steps`` steps leaves a higher accuracy than PGD with ``steps``."""
    accs = {}
    for k in (steps, steps * factor):
        m = Member("pgd", estimator, {"steps": k})
        accs[k] = Ensemble(model, [m], eps=eps, norm=norm, seed=seed, votes=votes, batch_size=batch_size).run(x, y).robust_acc
    rise = accs[steps * factor] - accs[steps]
    tol = _at_least(x.shape[0], tolerance)
    tripped = rise > tol
    label = estimator.label() if estimator else "default"
    msg = (
        f"PGD-{steps * factor} leaves a higher accuracy ({accs[steps * factor]:.1%}) than PGD-{steps} "
        f"({accs[steps]:.1%}) under {label}: more steps should never help the model; the gradient is noisy or misleading"
        if tripped
        else f"PGD-{steps}: {accs[steps]:.1%}, PGD-{steps * factor}: {accs[steps * factor]:.1%} ({label})"
    )
    return Check("more_steps", tripped, msg, rise, tol, eps,
                 {"steps": {str(k): v for k, v in accs.items()}, "estimator": label, "n": int(x.shape[0])})


# ------------------------------------------------------------------ eps monotone
def check_eps_monotone(points: Sequence[tuple[float, float]], n: int, tolerance: float = 0.01, where: str = "") -> Check | None:
    """Trips if accuracy rises with eps by more than ``tolerance`` (and one sample) between any two budgets.

    ``points`` are (eps, accuracy) on the same ``n`` samples. None with fewer than two points.
    """
    pts = sorted((float(e), float(a)) for e, a in points)
    if len(pts) < 2:
        return None
    tol = _at_least(n, tolerance)
    worst = 0.0
    pair = None
    for i in range(len(pts)):
        for j in range(i + 1, len(pts)):
            rise = pts[j][1] - pts[i][1]
            if pts[j][0] > pts[i][0] and rise > worst:
                worst, pair = rise, (pts[i], pts[j])
    tripped = worst > tol
    where = f" ({where})" if where else ""
    msg = (
        f"accuracy rises with a larger budget{where}: {pair[0][1]:.1%} at eps={pair[0][0]:g} but {pair[1][1]:.1%} "
        f"at eps={pair[1][0]:g}; a working attack can only do better with more budget"
        if tripped
        else f"accuracy falls with eps{where}: " + ", ".join(f"{e:g}: {a:.1%}" for e, a in pts)
    )
    return Check("eps_monotone", tripped, msg, worst, tol, None, {"points": pts, "n": n, "where": where.strip(" ()")})
