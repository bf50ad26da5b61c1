"""Square attack (Andriushchenko et al. 2020): black box, score based; AutoAttack's implementation.

``pyautoattack.square.SquareAttack`` unchanged. It only queries logits (no
gradients, so no estimator). A stochastic model answers each query with the mean
of ``eot`` passes. Default: 5000 queries, ``p_init = 0.8``, margin loss, as in
AutoAttack's standard version.
"""

from __future__ import annotations

import torch
from pyautoattack.square import SquareAttack
from torch import nn

from ._autoattack import isolated
from .base import DEFAULT_EPS, Attack
from .eot import mean_logits

__all__ = ["Square"]


class Square(Attack):
    """Square attack, L-inf or L2.

    Args:
        model, eps, norm, seed, eot: see :class:`~robustsnn.attacks.base.Attack`.
        n_queries: query budget per sample and restart (AutoAttack: 5000).
        p_init: initial fraction of pixels changed per square (AutoAttack: 0.8).
        restarts: restarts.
        loss: ``"margin"`` (AutoAttack) or ``"ce"``.
        rescale_schedule: stretch the square-size schedule to ``n_queries``; default: only
            when ``n_queries`` < 5000 (AutoAttack runs 5000 queries without rescaling).
        estimator: accepted for a uniform interface and ignored (black box).
    """

    name = "square"
    white_box = False

    def __init__(
        self,
        model: nn.Module,
        eps: float = DEFAULT_EPS,
        norm: str = "Linf",
        estimator=None,
        n_queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        loss: str = "margin",
        rescale_schedule: bool | None = None,
        seed: int = 0,
        eot: int | None = None,
    ):
        super().__init__(model, eps, norm, None, seed, eot)
        self.n_queries, self.p_init, self.restarts = int(n_queries), float(p_init), int(restarts)
        self.loss = loss
        self.rescale_schedule = self.n_queries < 5000 if rescale_schedule is None else bool(rescale_schedule)
        self.messages: list[str] = []

    def label(self) -> str:
        return f"square-{self.n_queries}"

    def perturb(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        n = self.eot if self.stochastic else 1

        def query(z: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return mean_logits(self.model, z, n)

        with isolated(self.messages):
            attack = SquareAttack(
                query, norm=self.norm, n_queries=self.n_queries, eps=self.eps, p_init=self.p_init,
                n_restarts=self.restarts, seed=self.seed, verbose=False, loss=self.loss,
                resc_schedule=self.rescale_schedule, device=x.device,
            )
            return attack.perturb(x, y)
