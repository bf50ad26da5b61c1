r"""Parseval / SNN-RAT orthogonality step ("AT+Reg" in the robust-stable seeds).

After every optimiser step, for each conv (reshaped to [out, in*k*k]) and
linear weight :math:`W`:

.. math::  W \leftarrow (1 + \beta)\,W - \beta\, W W^\top W

For linear layers with at least ``row_threshold`` (200) rows only a random
``row_fraction`` (30 %) of the rows is updated, as in the seeds. Seed values:
beta = 0.001 (VGG-11), 0.004 (WRN-16); weight decay is 0 in this mode.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import distributed as D

__all__ = ["parseval_step", "ParsevalStep"]


@torch.no_grad()
def parseval_step(model: nn.Module, beta: float, row_fraction: float = 0.3, row_threshold: int = 200,
                  generator: torch.Generator | None = None) -> None:
    """Apply one Parseval retraction to every conv/linear weight of ``model`` in place.

    Under torchrun the sampled rows are rank 0's (broadcast), so every rank applies the
    same update, and the same one as a single process with rank 0's random state.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight.view(m.weight.shape[0], -1)
            w.copy_((1 + beta) * w - beta * (w @ w.t() @ w))
        elif isinstance(m, nn.Linear):
            w = m.weight
            if w.shape[0] >= row_threshold:
                k = max(1, int(round(row_fraction * w.shape[0])))
                rows = D.broadcast_tensor(torch.randperm(w.shape[0], generator=generator)[:k])
                ws = w[rows]
                w[rows] = (1 + beta) * ws - beta * (ws @ ws.t() @ ws)
            else:
                w.copy_((1 + beta) * w - beta * (w @ w.t() @ w))


class ParsevalStep:
    """Post-step hook for the trainer: ``ParsevalStep(beta)(model)``.

    ``generator`` (None: torch's global RNG) draws the rows of large linear layers.
    """

    def __init__(self, beta: float, row_fraction: float = 0.3, row_threshold: int = 200,
                 generator: torch.Generator | None = None):
        self.beta, self.row_fraction, self.row_threshold = float(beta), row_fraction, row_threshold
        self.generator = generator

    def __call__(self, model: nn.Module) -> None:
        parseval_step(model, self.beta, self.row_fraction, self.row_threshold, generator=self.generator)
