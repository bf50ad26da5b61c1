r"""FGSM (Goodfellow et al. 2015): one gradient step of the full budget.

.. math:: x' = \mathrm{clip}_{[0,1]}\big(x + \epsilon\,\mathrm{sign}(\nabla_x L(f(x), y))\big)

(L2: the step is :math:`\epsilon\, g / \|g\|_2`.)
"""

from __future__ import annotations

import torch
from torch import nn

from ..estimators import Estimator
from .base import DEFAULT_EPS, Attack, get_loss, step_direction

__all__ = ["FGSM"]


class FGSM(Attack):
    """Fast gradient sign method.

    Args:
        model, eps, norm, estimator, seed, eot: see :class:`~robustsnn.attacks.base.Attack`.
        loss: ``"ce"`` (default), ``"margin"``, ``"dlr"``, ``"kl"`` or a callable
            ``loss(logits, y, clean_logits) -> [B]``.
    """

    name = "fgsm"

    def __init__(
        self,
        model: nn.Module,
        eps: float = DEFAULT_EPS,
        norm: str = "Linf",
        estimator: "str | Estimator | None" = None,
        loss="ce",
        seed: int = 0,
        eot: int | None = None,
    ):
        super().__init__(model, eps, norm, estimator, seed, eot)
        self.loss_name, self.loss = get_loss(loss)

    def perturb(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        clean = self.logits(x) if self.loss_name == "kl" else None
        grad, _ = self.gradient(x, y, self.loss, clean)
        return x + self.eps * step_direction(grad, self.norm)
