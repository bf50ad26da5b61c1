"""Named evaluation presets: which (attack, estimator) members an evaluation runs.

==========  =================================================================
quick       PGD-10 under the triangle surrogate (gamma = 1). A smoke test, not
            a robustness number.
pgd-ens     The conversion paper's PGD_ens exactly: PGD-20 under each of the
            seed's 19 gradient estimators (DESIGN.md section 7), early exit.
            For comparison with published numbers.
standard    pgd-ens, then closing members on the samples it left robust:
            APGD-T (AutoAttack's, 9 targets x 100 steps) under each of the two
            estimators that are strongest on a small calibration batch, and
            Square-5000 (black box, AutoAttack's budget).
autoattack  AutoAttack's standard suite (APGD-CE, APGD-T, FAB-T, Square-5000)
            under the calibrated estimator.
full        pgd-ens + APGD-CE, APGD-DLR, APGD-T, FAB-T (calibrated estimator)
            + Square-5000 + a transfer attack + Gaussian noise.
strongest   per-sample worst case over PGD-20 (triangle, gamma = 1), ASSG +
            SA-PGD-100, HART (gamma 0.5, 1, 2), RGA-20, PGD-20 under PDSG and
            the other 18 PGD_ens members, ordered from a calibration batch
            (members that break nothing there dropped for the other samples),
            then three closers on the quarter of the survivors with the
            smallest logit margin: APGD-DLR-100 under ASSG, APGD-T
            (the 3 highest-ranked targets x 100 steps, under the estimator strongest
            for PGD-5 on half the calibration batch) and Square-5000
            (:class:`~robustsnn.attacks.strongest.OrderedEnsemble`).
==========  =================================================================

Why ``standard`` is more than PGD_ens: on an adversarially trained
Fashion-MNIST SNN (cnn width 0.5, T=4, PGD-AT eps 0.1; 500 test images) the 19
PGD-20 members left 43.8 % robust, and on those survivors APGD-T under the
triangle surrogate (gamma 0.5) still broke 85 of 219 and Square-5000 alone 72;
all together 111: PGD with 19 surrogates overstated robustness by about 22
points. The closing members only run on survivors, so they cost little where
PGD_ens already breaks everything.

White-box members run first, black-box members last, so that a black-box
member that still breaks samples is evidence of gradient masking.

On a model without spiking neurons (an ANN) every estimator gives the same
gradient; members that differ only by estimator collapse into one, and the
collapsed list is what the result records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from ..estimators import SEED_ESTIMATORS, Estimator, parse_estimator
from ..neurons import SpikingNeuron
from .ensemble import Member
from .eot import predict

__all__ = [
    "Preset",
    "PRESETS",
    "available_presets",
    "get_preset",
    "preset_members",
    "has_spiking_layers",
    "essential_members",
    "calibrate_estimator",
    "Calibration",
]


def has_spiking_layers(model: nn.Module) -> bool:
    """True if any module of ``model`` is a :class:`~robustsnn.neurons.SpikingNeuron`."""
    return any(isinstance(m, SpikingNeuron) for m in model.modules())


@dataclass(frozen=True)
class Preset:
    """A named member list. ``calibrated`` marks members whose estimator is chosen per model/eps."""

    name: str
    description: str
    needs_calibration: bool = False
    #: PGD steps per candidate estimator, and the share of ``calibration_size`` samples it uses
    calibration_steps: int = 10
    calibration_fraction: float = 1.0

    def members(self, calibrated: "Estimator | Sequence[Estimator] | None" = None) -> list[Member]:
        """The member specs.

        ``calibrated``: the calibrated estimator, or the calibration's ranking (strongest
        first; ``standard`` uses the top two). None: each neuron's own surrogate.
        """
        return _MEMBERS[self.name](_ranked(calibrated))


def _ranked(cal) -> list:
    if cal is None:
        return [None]
    if isinstance(cal, (Estimator, str)):
        return [parse_estimator(cal)]
    out = [parse_estimator(c) if c is not None else None for c in cal]
    return out or [None]


def _quick(cal):
    return [Member("pgd", parse_estimator("triangle:1"), {"steps": 10})]


def _autoattack(cal):
    return [
        Member("apgd-ce", cal[0]),
        Member("apgd-t", cal[0]),
        Member("fab-t", cal[0]),
        Member("square", None, {"n_queries": 5000}),
    ]


def _pgd_ens(cal):
    return [Member("pgd", e, {"steps": 20}) for e in SEED_ESTIMATORS]


def _standard(cal):
    closing = [Member("apgd-t", e) for e in dict.fromkeys(cal[:2])]
    return _pgd_ens(cal) + closing + [Member("square", None, {"n_queries": 5000})]


def _full(cal):
    return _pgd_ens(cal) + [
        Member("apgd-ce", cal[0]),
        Member("apgd-dlr", cal[0]),
        Member("apgd-t", cal[0]),
        Member("fab-t", cal[0]),
        Member("square", None, {"n_queries": 5000}),
        Member("transfer", None, {"steps": 20}),
        Member("noise", None, {"draws": 4}),
    ]


def _strongest(cal):
    first = Member("pgd", parse_estimator("triangle:1"), {"steps": 20})
    adaptive = [
        Member("sa-pgd", parse_estimator("assg"), {"steps": 100}),
        Member("hart", None, {"steps": 10}),
        Member("rga", parse_estimator("rga"), {"steps": 20}),
        Member("pgd", parse_estimator("pdsg"), {"steps": 20}),
    ]
    rest = [m for m in _pgd_ens(cal) if m != first]
    closing = [
        Member("apgd-dlr", parse_estimator("assg"), focus=STRONGEST_FOCUS),
        Member("apgd-t", cal[0], {"n_target_classes": STRONGEST_TARGETS}, focus=STRONGEST_FOCUS),
        Member("square", None, {"n_queries": 5000}, focus=STRONGEST_FOCUS),
    ]
    return [first, *adaptive, *rest, *closing]


#: Share of the survivors (smallest margins first) that ``strongest``'s closing APGD-DLR, APGD-T and Square attack.
STRONGEST_FOCUS = 0.25

#: Target classes of ``strongest``'s closing APGD-T (the highest-ranked other classes; AutoAttack's standard uses 9).
#: Gao et al. (ICML 2022, minimum-margin attack) found the top 3 targets give nearly all of APGD-T's successes;
#: ``standard`` and ``autoattack`` keep 9.
STRONGEST_TARGETS = 3

#: Attacks of ``strongest`` that run on every sample even if the calibration batch saw them break none.
STRONGEST_ESSENTIAL = ("sa-pgd", "apgd-dlr", "apgd-t", "square")


def essential_members(members: Sequence[Member]) -> list[int]:
    """Indices of the members an ordered ensemble never drops (see :data:`STRONGEST_ESSENTIAL`)."""
    return [i for i, m in enumerate(members) if isinstance(m, Member) and m.attack in STRONGEST_ESSENTIAL]


_MEMBERS = {"quick": _quick, "pgd-ens": _pgd_ens, "standard": _standard, "autoattack": _autoattack, "full": _full,
            "strongest": _strongest}

PRESETS: dict[str, Preset] = {
    "quick": Preset("quick", "PGD-10 with the triangle surrogate (gamma=1): a smoke test"),
    "pgd-ens": Preset("pgd-ens", "the conversion paper's PGD_ens: PGD-20 under each of the seed's 19 gradient estimators"),
    "standard": Preset(
        "standard",
        "PGD-20 under the seed's 19 gradient estimators, then APGD-T (two strongest calibrated estimators) and Square-5000 on the survivors",
        True,
    ),
    "autoattack": Preset(
        "autoattack", "AutoAttack standard suite (APGD-CE, APGD-T, FAB-T, Square-5000) under the calibrated estimator", True
    ),
    "full": Preset("full", "pgd-ens + APGD-CE/DLR/T + FAB-T (calibrated estimator) + Square-5000 + transfer + noise", True),
    "strongest": Preset(
        "strongest",
        "PGD-20, ASSG+SA-PGD, HART, RGA, PDSG, the other PGD_ens members (ordered from a calibration batch, "
        "idle members dropped), then APGD-DLR (ASSG), APGD-T (calibrated estimator) and Square-5000 on the "
        "lowest-margin quarter of the survivors",
        True, calibration_steps=5, calibration_fraction=0.5,
    ),
}


def available_presets() -> list[str]:
    """Names of the presets, cheapest first."""
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    """The :class:`Preset` called ``name``."""
    key = str(name).strip().lower()
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[key]


def preset_members(name: str, model: nn.Module | None = None, calibrated=None) -> list[Member]:
    """Members of preset ``name`` for ``model``.

    ``calibrated``: an estimator or a ranking of them (strongest first, as
    :attr:`Calibration.ranking`); None keeps each neuron's own surrogate.

    On a model without spiking layers, estimators are dropped and duplicate members
    (same attack and parameters) collapse into one.
    """
    members = get_preset(name).members(calibrated)
    if model is not None and not has_spiking_layers(model):
        out, seen = [], set()
        for m in members:
            key = (m.attack, tuple(sorted(m.params.items())))
            if key not in seen:
                seen.add(key)
                out.append(Member(m.attack, None, m.params))
        members = out
    return members


@dataclass
class Calibration:
    """Outcome of :func:`calibrate_estimator`: the chosen estimator and each candidate's numbers."""

    estimator: Estimator | None
    n: int
    attack: str
    table: list[dict]
    ranking: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "estimator": self.estimator.label() if self.estimator else None,
            "ranking": [e.label() for e in self.ranking],
            "estimator_spec": self.estimator.to_dict() if self.estimator else None,
            "n": self.n,
            "attack": self.attack,
            "table": self.table,
        }


def calibrate_estimator(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str = "Linf",
    estimators=SEED_ESTIMATORS,
    steps: int = 10,
    seed: int = 0,
    votes: int = 1,
    eot: int | None = None,
) -> Calibration:
    """The estimator under which PGD-``steps`` is strongest on the batch ``(x, y)``, and the ranking.

    Every candidate attacks every sample (no early exit). Strongest = lowest robust
    accuracy, ties broken by the highest mean CW margin loss. On an ANN there is nothing
    to choose: returns ``estimator=None`` and an empty ranking.
    """
    from .base import LOSSES
    from .pgd import PGD

    if not has_spiking_layers(model):
        return Calibration(None, int(x.shape[0]), f"pgd-{steps}", [])
    rows = []
    keyed = []
    for est in estimators:
        est = parse_estimator(est)
        attack = PGD(model, eps=eps, norm=norm, estimator=est, steps=steps, seed=seed, eot=eot)
        xa = attack(x, y, ids=torch.arange(x.shape[0]))
        with torch.no_grad():
            acc = float((predict(model, xa, votes) == y).float().mean())
            margin = float(LOSSES["margin"](model(xa), y, None).mean())
        rows.append({"estimator": est.label(), "acc": acc, "margin_loss": margin})
        keyed.append(((acc, -margin), len(keyed), est))
    ranking = [e for _, _, e in sorted(keyed, key=lambda t: (t[0], t[1]))]
    return Calibration(ranking[0], int(x.shape[0]), f"pgd-{steps}", rows, ranking)
