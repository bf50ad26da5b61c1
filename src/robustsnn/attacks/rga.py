r"""RGA (Bu et al., CVPR 2023): PGD with the rate gradient approximation.

Deep SNNs mostly communicate by firing rates, so RGA back-propagates through the
rate-current relation of each layer instead of its spikes
(:class:`robustsnn.gradhooks.RGA`): with :math:`\bar I` the mean input current over
time and :math:`x = \bar I / \theta`,

.. math::

    \frac{\partial L}{\partial I[t]} = \frac{\partial L}{\partial s[t]}\,\frac{f(x)}{\theta}, \qquad
    f(x) = \begin{cases} \gamma & 0 \le x < 1 - \lambda \\
    \frac{1 - \gamma + \gamma\lambda}{\lambda + e} & 1 - \lambda \le x \le 1 + e \\ 0 & \text{else} \end{cases}

(:math:`\gamma = 0.2`, :math:`e = 1`, the authors' code), the temporal path cut.
The paper's time-extended enhancement (attacking with more time steps) is not
included: a model's T is part of its definition here.
"""

from __future__ import annotations

from torch import nn

from .base import DEFAULT_EPS
from .pgd import PGD

__all__ = ["RGA"]


class RGA(PGD):
    """PGD-``steps`` under the ``rga`` estimator (``estimator`` may set its gamma: ``"rga:0.3"``).

    Args: as :class:`~robustsnn.attacks.pgd.PGD`; ``estimator`` defaults to ``"rga"``.
    """

    name = "rga"

    def __init__(self, model: nn.Module, eps: float = DEFAULT_EPS, norm: str = "Linf", estimator="rga", steps: int = 10,
                 alpha: float | None = None, random_start: bool = True, restarts: int = 1, loss="ce", seed: int = 0,
                 eot: int | None = None):
        super().__init__(model, eps, norm, "rga" if estimator is None else estimator, steps, alpha, random_start, restarts,
                         loss, seed, eot)

    def label(self) -> str:
        return "rga-" + super().label()
