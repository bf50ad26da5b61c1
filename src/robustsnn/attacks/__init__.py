"""Adversarial attacks, the attack ensemble, presets and gradient-masking diagnostics.

Every attack works in pixel space [0, 1], L-inf or L2, on any model (SNN or ANN)
and under any gradient estimator (DESIGN.md section 7)::

    from robustsnn.attacks import PGD
    x_adv = PGD(model, eps=0.1, steps=20, estimator="triangle:0.5")(x, y)

APGD, FAB and Square are AutoAttack's implementations (``pyautoattack``),
driven through our estimators. SA-PGD (with the ASSG estimator), HART and RGA are
the SNN-specific attacks of the literature (:mod:`robustsnn.gradhooks`).
"""

from .apgd import APGD, APGDT
from .base import DEFAULT_EPS, LOSSES, NORMS, Attack, RobustnessWarning, check_eps, check_norm, project
from .diagnostics import Check, Diagnostics
from .ensemble import ATTACKS, Ensemble, EnsembleResult, Member, MemberRecord
from .eot import EOTModel, is_stochastic, predict
from .fab import FAB
from .fgsm import FGSM
from .hart import HART
from .noise import GaussianNoise
from .pgd import PGD
from .presets import PRESETS, available_presets, calibrate_estimator, get_preset, preset_members
from .rfgsm import RFGSM, RFGSMStable
from .rga import RGA
from .sapgd import SAPGD
from .square import Square
from .transfer import Transfer, ann_twin

__all__ = [
    "Attack",
    "FGSM",
    "RFGSM",
    "RFGSMStable",
    "PGD",
    "APGD",
    "APGDT",
    "FAB",
    "SAPGD",
    "HART",
    "RGA",
    "Square",
    "Transfer",
    "GaussianNoise",
    "Ensemble",
    "EnsembleResult",
    "Member",
    "MemberRecord",
    "ATTACKS",
    "PRESETS",
    "available_presets",
    "get_preset",
    "preset_members",
    "calibrate_estimator",
    "Check",
    "Diagnostics",
    "EOTModel",
    "is_stochastic",
    "predict",
    "ann_twin",
    "check_eps",
    "check_norm",
    "project",
    "DEFAULT_EPS",
    "LOSSES",
    "NORMS",
    "RobustnessWarning",
]
