r"""HART (Hao et al., ICLR 2024): PGD with the time-averaged, temporally cut gradient, gamma swept.

Under the ``hart`` estimator (:class:`robustsnn.gradhooks.HART`) every spiking layer
back-propagates

.. math::

    \frac{\partial L}{\partial I[t]} = \frac{1}{T}\sum_{t'} \frac{\partial L}{\partial s[t']}\,
    \frac{1}{(\gamma\theta)^2}\max\big(0, \gamma\theta - |m[t'] - \theta|\big)

(the path :math:`v[t-1] \to m[t]` cut, the current gradient averaged over time). The
width :math:`\gamma` sets how much temporal information the gradient keeps; the paper
tunes it per model over a grid. Here each :math:`\gamma` of ``gammas`` is a restart of
PGD that runs only on the samples the earlier ones left unbroken, so the verdict is the
per-sample worst case over the sweep. :math:`\gamma` is in units of the threshold
(the paper's, whose thresholds are 1).
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from ..estimators import Estimator, estimator as estimator_mode
from .base import DEFAULT_EPS
from .pgd import PGD

__all__ = ["HART", "DEFAULT_GAMMAS"]

#: The default sweep of gamma (the paper's grid is 0.1 to 2.45 in steps of 0.05).
DEFAULT_GAMMAS = (0.5, 1.0, 2.0)


class HART(PGD):
    """PGD-``steps`` under ``hart(gamma)`` for each gamma of ``gammas``, on the survivors of the previous one.

    Args:
        model, eps, norm, seed, eot: see :class:`~robustsnn.attacks.base.Attack`.
        gammas: the sweep (triangle widths in units of the threshold).
        steps, alpha, random_start, loss: as :class:`~robustsnn.attacks.pgd.PGD`.
        estimator: ignored (HART is its own estimator); accepted so that any preset can
            build it like the other members.
    """

    name = "hart"

    def __init__(
        self,
        model: nn.Module,
        eps: float = DEFAULT_EPS,
        norm: str = "Linf",
        estimator=None,
        gammas: Sequence[float] = DEFAULT_GAMMAS,
        steps: int = 10,
        alpha: float | None = None,
        random_start: bool = True,
        loss="ce",
        seed: int = 0,
        eot: int | None = None,
    ):
        self.gammas = tuple(float(g) for g in gammas)
        if not self.gammas or min(self.gammas) <= 0:
            raise ValueError(f"HART needs at least one gamma > 0, got {gammas}")
        super().__init__(model, eps, norm, "hart", steps, alpha, random_start, len(self.gammas), loss, seed, eot)

    def label(self) -> str:
        return f"hart-pgd-{self.steps}[gamma={','.join(f'{g:g}' for g in self.gammas)}]"

    def _run(self, x, y, ids, restart):
        est = Estimator("hart", None, (("gamma", self.gammas[restart]),))
        with estimator_mode(self.model, est):
            return super()._run(x, y, ids, restart)
