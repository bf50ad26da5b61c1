r"""PGD-k (Madry et al. 2018): projected gradient ascent from a random start, with restarts.

.. math::

    x_0 &\sim \mathcal U(B_\epsilon(x)), \qquad
    x_{i+1} = \mathrm{clip}_{[0,1]}\big(\Pi_\epsilon(x_i + \alpha\, \mathrm{sign}(\nabla_{x_i} L))\big)

(L2: the step is :math:`\alpha\, g / \|g\|_2`.) Default step
:math:`\alpha = 2.5\,\epsilon / k` (DESIGN.md section 7; 1/255 for
:math:`\epsilon = 8/255`, k = 20). Per sample, the first iterate that is
misclassified is kept; a sample stops as soon as it is broken (no further
gradients spent on it), and samples broken by one restart skip the next ones.
"""

from __future__ import annotations

import torch
from torch import nn

from ..estimators import Estimator
from .base import DEFAULT_EPS, Attack, get_loss, project, step_direction

__all__ = ["PGD"]


class PGD(Attack):
    """Projected gradient descent (L-inf or L2) with random start and restarts.

    Args:
        model, eps, norm, estimator, seed, eot: see :class:`~robustsnn.attacks.base.Attack`.
        steps: k, gradient steps per restart.
        alpha: step size; default ``2.5 * eps / steps``.
        random_start: start from a random point of the eps-ball (else from x).
        restarts: independent runs; each runs only on samples not yet broken.
        loss: ``"ce"`` (default), ``"margin"``, ``"dlr"``, ``"kl"`` or a callable
            ``loss(logits, y, clean_logits) -> [B]``.
    """

    name = "pgd"

    def __init__(
        self,
        model: nn.Module,
        eps: float = DEFAULT_EPS,
        norm: str = "Linf",
        estimator: "str | Estimator | None" = None,
        steps: int = 10,
        alpha: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        loss="ce",
        seed: int = 0,
        eot: int | None = None,
    ):
        super().__init__(model, eps, norm, estimator, seed, eot)
        if int(steps) < 1 or int(restarts) < 1:
            raise ValueError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.alpha = 2.5 * self.eps / self.steps if alpha is None else float(alpha)
        self.random_start = bool(random_start)
        self.loss_name, self.loss = get_loss(loss)

    def label(self) -> str:
        base = f"pgd-{self.steps}" + (f"x{self.restarts}" if self.restarts > 1 else "")
        if self.loss_name != "ce":
            base += f"-{self.loss_name}"
        return f"{base}@{self.estimator.label() if self.estimator else 'default'}"

    def perturb(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.restarts_on_survivors(x, y, ids, self.restarts, self._run)

    def _run(self, x, y, ids, restart):
        clean = self.logits(x) if self.loss_name == "kl" else None
        adv = self.random_point(x, ids, stream=restart) if self.random_start else x.clone()
        keep = adv.clone()
        found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.steps):
            # samples already broken stop: their first misclassified iterate is kept either way
            act = (~found).nonzero().squeeze(1)
            if act.numel() == 0:
                return keep, found
            xa, ya = adv[act], y[act]
            grad, z = self.gradient(xa, ya, self.loss, None if clean is None else clean[act])
            new = z.argmax(1) != ya
            keep[act[new]] = xa[new]
            found[act[new]] = True
            adv[act] = project(xa + self.alpha * step_direction(grad, self.norm), x[act], self.eps, self.norm)
        self._remember(self.logits(adv), y, adv, keep, found)
        keep[~found] = adv[~found]
        return keep, found

    @staticmethod
    def _remember(z, y, adv, keep, found):
        new = (z.argmax(1) != y) & ~found
        if new.any():
            keep[new] = adv[new]
            found |= new
