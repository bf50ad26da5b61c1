"""FAB-T (Croce & Hein 2020): the fast adaptive boundary attack, AutoAttack's implementation.

``pyautoattack.fab_pt.FABAttack_PT`` unchanged, driven through our gradient
estimators; a stochastic model is wrapped in :class:`~robustsnn.attacks.eot.EOTModel`
so that its logits and gradients are means over ``eot`` passes. FAB looks for the
smallest adversarial perturbation; only those within ``eps`` count.
"""

from __future__ import annotations

import torch
from pyautoattack.fab_pt import FABAttack_PT
from torch import nn

from ..estimators import Estimator
from ._autoattack import isolated, num_classes
from .base import DEFAULT_EPS, Attack
from .eot import EOTModel

__all__ = ["FAB"]


class FAB(Attack):
    """FAB, targeted (FAB-T, AutoAttack's standard suite) by default.

    Args:
        model, eps, norm, estimator, seed, eot: see :class:`~robustsnn.attacks.base.Attack`.
        targeted: FAB-T (True) or untargeted FAB (one backward pass per class per step).
        steps: iterations (AutoAttack: 100).
        n_target_classes: targets for FAB-T (AutoAttack: 9; capped at K - 1).
        restarts: restarts (AutoAttack standard: 1).
        alpha_max, eta, beta: FAB's step parameters (AutoAttack's defaults).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = DEFAULT_EPS,
        norm: str = "Linf",
        estimator: "str | Estimator | None" = None,
        targeted: bool = True,
        steps: int = 100,
        n_target_classes: int = 9,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        seed: int = 0,
        eot: int | None = None,
    ):
        super().__init__(model, eps, norm, estimator, seed, eot)
        self.targeted = bool(targeted)
        self.steps, self.restarts = int(steps), int(restarts)
        self.n_target_classes = int(n_target_classes)
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)
        self.messages: list[str] = []

    @property
    def name(self) -> str:  # type: ignore[override]
        return "fab-t" if self.targeted else "fab"

    def label(self) -> str:
        steps = f"-{self.steps}" if self.steps != 100 else ""
        return f"{self.name}{steps}@{self.estimator.label() if self.estimator else 'default'}"

    def perturb(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        k = num_classes(self.model, x)
        forward = EOTModel(self.model, self.eot) if self.eot > 1 else self.model
        with isolated(self.messages):
            attack = FABAttack_PT(
                forward, norm=self.norm, n_restarts=self.restarts, n_iter=self.steps, eps=self.eps,
                alpha_max=self.alpha_max, eta=self.eta, beta=self.beta, seed=self.seed,
                targeted=self.targeted, device=x.device, n_target_classes=min(self.n_target_classes, k - 1),
            )
            return attack.perturb(x, y)
