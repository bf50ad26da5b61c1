r"""Gaussian noise: the weakest black-box baseline, a sanity floor for every evaluation.

.. math:: x' = \mathrm{clip}_{[0,1]}\big(\Pi_\epsilon(x + \sigma\,\mathcal N(0, I))\big)

with :math:`\sigma = \epsilon` by default (L2: :math:`\sigma = \epsilon/\sqrt{d}`).
With ``draws > 1`` each sample keeps the first draw that is misclassified.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import DEFAULT_EPS, Attack, project

__all__ = ["GaussianNoise"]


class GaussianNoise(Attack):
    """Random Gaussian perturbations projected onto the eps-ball.

    Args:
        model, eps, norm, seed, eot: see :class:`~robustsnn.attacks.base.Attack`.
        std: noise standard deviation in pixel units; default eps (L2: eps / sqrt(d)).
        draws: independent draws per sample; the first misclassified one is kept.
        estimator: ignored (black box).
    """

    name = "noise"
    white_box = False

    def __init__(
        self,
        model: nn.Module,
        eps: float = DEFAULT_EPS,
        norm: str = "Linf",
        estimator=None,
        std: float | None = None,
        draws: int = 1,
        seed: int = 0,
        eot: int | None = None,
    ):
        super().__init__(model, eps, norm, None, seed, eot)
        self.std = None if std is None else float(std)
        self.draws = int(draws)
        if self.draws < 1:
            raise ValueError(f"draws must be >= 1, got {draws}")

    def label(self) -> str:
        return f"noise-{self.draws}" if self.draws > 1 else "noise"

    def perturb(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        std = self.std
        if std is None:
            std = self.eps if self.norm == "Linf" else self.eps / math.sqrt(x[0].numel())
        best = x.clone()
        found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for d in range(self.draws):
            cand = project(x + std * self.noise(x, ids, d, "normal"), x, self.eps, self.norm)
            new = (self.logits(cand).argmax(1) != y) & ~found
            if d == 0:
                best = cand.clone()
            best[new] = cand[new]
            found |= new
            if found.all():
                break
        return best
