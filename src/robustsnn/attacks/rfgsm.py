r"""Two single-step attacks with a random first step, both called "RFGSM" in the seeds.

:class:`RFGSM` (Tramèr et al. 2018), as the conversion code uses it
(DESIGN.md section 5):

.. math::

    x_0 &= x + \alpha\,\mathrm{sign}(\mathcal N(0, I)) \\
    x'  &= \mathrm{clip}_{[0,1]}\big(\Pi_\epsilon(x_0 + (\epsilon - \alpha)\,
           \mathrm{sign}(\nabla_{x_0} L))\big)

with :math:`\epsilon = 2/255`, :math:`\alpha = \epsilon/2` in the seed and a KL
inner loss :math:`L = \mathrm{KL}(f(x) \,\|\, f(x_0))` for TRADES finetuning.

:class:`RFGSMStable`, the robust-stable SNN code's "RFGSM" (Ding et al.):

.. math::

    x_0 = x + \sigma\,\mathcal N(0, I), \qquad
    x' = \mathrm{clip}_{[0,1]}\big(x_0 + \alpha\,\mathrm{sign}(\nabla_{x_0} \mathrm{CE})\big)

with :math:`\sigma = 0.001`, :math:`\alpha = 4/255` and **no projection**: the
distance to ``x`` can exceed the step by the noise. Here ``eps`` is the step
:math:`\alpha`.

Both take a pluggable inner loss (``"ce"``, ``"kl"`` to the clean prediction,
or a callable), so training objectives reuse them.
"""

from __future__ import annotations

import torch
from torch import nn

from ..estimators import Estimator
from .base import Attack, get_loss, step_direction

__all__ = ["RFGSM", "RFGSMStable"]


class RFGSM(Attack):
    """Tramèr et al.'s R+FGSM: a random sign step of size ``alpha``, then a gradient step of ``eps - alpha``.

    Args:
        model, eps, norm, estimator, seed, eot: see :class:`~robustsnn.attacks.base.Attack`.
        alpha: size of the random first step; default ``eps / 2``. Must be < eps.
        loss: inner loss, ``"ce"`` (default), ``"kl"`` (KL to the clean prediction, TRADES),
            ``"margin"``, ``"dlr"`` or a callable ``loss(logits, y, clean_logits) -> [B]``.
    """

    name = "rfgsm"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 2 / 255,
        norm: str = "Linf",
        estimator: "str | Estimator | None" = None,
        alpha: float | None = None,
        loss="ce",
        seed: int = 0,
        eot: int | None = None,
    ):
        super().__init__(model, eps, norm, estimator, seed, eot)
        self.alpha = self.eps / 2 if alpha is None else float(alpha)
        if not 0 <= self.alpha <= self.eps:
            raise ValueError(f"alpha={alpha} must lie in [0, eps={self.eps:g}]")
        self.loss_name, self.loss = get_loss(loss)

    def perturb(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        clean = self.logits(x) if self.loss_name == "kl" else None
        start = step_direction(self.noise(x, ids, 0, "normal"), self.norm)
        x0 = (x + self.alpha * start).clamp(0.0, 1.0)
        grad, _ = self.gradient(x0, y, self.loss, clean)
        return x0 + (self.eps - self.alpha) * step_direction(grad, self.norm)


class RFGSMStable(Attack):
    """The robust-stable SNN seed's "RFGSM": tiny Gaussian start, one step of ``eps``, no projection.

    Args:
        model, norm, estimator, seed, eot: see :class:`~robustsnn.attacks.base.Attack`.
        eps: the step alpha (seed: 4/255).
        sigma: std of the Gaussian start (seed: 0.001).
        loss: inner loss as in :class:`RFGSM` (seed: ``"ce"``).
    """

    name = "rfgsm-stable"
    project_output = False

    def __init__(
        self,
        model: nn.Module,
        eps: float = 4 / 255,
        norm: str = "Linf",
        estimator: "str | Estimator | None" = None,
        sigma: float = 0.001,
        loss="ce",
        seed: int = 0,
        eot: int | None = None,
    ):
        super().__init__(model, eps, norm, estimator, seed, eot)
        self.sigma = float(sigma)
        self.loss_name, self.loss = get_loss(loss)

    def perturb(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        clean = self.logits(x) if self.loss_name == "kl" else None
        x0 = x + self.sigma * self.noise(x, ids, 0, "normal")
        grad, _ = self.gradient(x0, y, self.loss, clean)
        return x0 + self.eps * step_direction(grad, self.norm)
