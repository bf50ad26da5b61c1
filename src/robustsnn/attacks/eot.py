"""Stochastic models: expectation over transformation and majority votes.

A model whose forward pass is random (Poisson rate encoding) has no single
gradient and no single prediction. Attacks average gradients over ``eot``
forward/backward passes (EOT, Athalye et al. 2018); the final verdict on an
(adversarial) image is the majority class over ``votes`` forward passes.
Deterministic models use one pass for both.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["is_stochastic", "default_eot", "default_votes", "mean_logits", "predict", "EOTModel"]

#: Gradient samples per step for a stochastic model (AutoAttack's "rand" version uses 20).
EOT_SAMPLES = 8
#: Forward passes in the majority vote on a stochastic model's prediction (odd: no ties).
VOTES = 9


def is_stochastic(model: nn.Module) -> bool:
    """True for a robustsnn SNN with Poisson encoding (``model.config.encoding == "poisson"``).

    Foreign modules without a ``config`` are taken as deterministic; set
    ``model.stochastic = True`` on them to opt in.
    """
    flag = getattr(model, "stochastic", None)
    if isinstance(flag, bool):
        return flag
    cfg = getattr(model, "config", None)
    return getattr(cfg, "encoding", None) == "poisson" and getattr(cfg, "kind", "snn") == "snn"


def default_eot(model: nn.Module) -> int:
    """EOT samples for ``model``: :data:`EOT_SAMPLES` if stochastic, else 1."""
    return EOT_SAMPLES if is_stochastic(model) else 1


def default_votes(model: nn.Module) -> int:
    """Forward passes per verdict for ``model``: :data:`VOTES` if stochastic, else 1."""
    return VOTES if is_stochastic(model) else 1


def mean_logits(model: nn.Module, x: torch.Tensor, n: int = 1) -> torch.Tensor:
    """Mean of ``n`` forward passes (differentiable: its gradient is the EOT gradient)."""
    z = model(x)
    for _ in range(n - 1):
        z = z + model(x)
    return z / n if n > 1 else z


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, votes: int = 1, batch_size: int | None = None) -> torch.Tensor:
    """Predicted labels [B]: argmax, or the majority class over ``votes`` passes.

    Ties in the vote go to the smallest class index. ``batch_size`` splits large inputs.
    The model's train/eval state is not changed; call ``model.eval()`` first.
    """
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    bs = batch_size or x.shape[0]
    out = []
    for xb in x.split(bs):
        if votes <= 1:
            out.append(model(xb).argmax(1))
            continue
        counts = None
        for _ in range(votes):
            z = model(xb)
            if counts is None:
                counts = torch.zeros_like(z, dtype=torch.long)
            counts.scatter_add_(1, z.argmax(1, keepdim=True), torch.ones_like(counts[:, :1]))
        out.append(counts.argmax(1))
    return torch.cat(out)


class EOTModel(nn.Module):
    """Wrap a stochastic model so that one call returns the mean logits of ``n`` passes.

    Handing this to an attack that knows nothing of randomness (AutoAttack's FAB or
    Square) makes every gradient an EOT gradient and every query an averaged query.
    """

    def __init__(self, model: nn.Module, n: int = EOT_SAMPLES):
        super().__init__()
        self.model = model
        self.n = int(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mean_logits(self.model, x, self.n)
