"""Transfer attack: craft adversarial examples on a source model, apply them to the target.

Black box for the target (it is never differentiated). The source is another
checkpoint, or by default the ANN twin of the target (same weights, ReLU in
place of spikes; see :func:`ann_twin`). The crafting attack is PGD-20 on the
source unless another :class:`~robustsnn.attacks.base.Attack` class is given.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import DEFAULT_EPS, Attack
from .pgd import PGD

__all__ = ["Transfer", "ann_twin"]


def ann_twin(model: nn.Module) -> nn.Module | None:
    """The ANN twin of a robustsnn SNN with the same weights (eval mode), or None if not a twin SNN."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "kind", None) != "snn" or not hasattr(cfg, "with_"):
        return None
    from ..models import build_from_config

    twin = build_from_config(cfg.with_(kind="ann", encoding="direct"))
    state = model.state_dict()
    own = twin.state_dict()
    twin.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)
    return twin.to(next(model.parameters()).device).eval()


class Transfer(Attack):
    """Adversarial examples crafted on ``source`` and evaluated on ``model``.

    Args:
        model: the target.
        source: the model to attack (another checkpoint's model); default: :func:`ann_twin`
            of the target.
        eps, norm, seed: see :class:`~robustsnn.attacks.base.Attack`.
        estimator: gradient estimator on the *source* (if it is an SNN).
        attack: attack class run on the source (default :class:`~robustsnn.attacks.pgd.PGD`).
        source_name: label of the source in results.
        **attack_kwargs: passed to ``attack`` (default ``steps=20``).
    """

    name = "transfer"
    white_box = False

    def __init__(
        self,
        model: nn.Module,
        source: nn.Module | None = None,
        eps: float = DEFAULT_EPS,
        norm: str = "Linf",
        estimator=None,
        attack: type[Attack] = PGD,
        source_name: str | None = None,
        seed: int = 0,
        eot: int | None = None,
        **attack_kwargs,
    ):
        super().__init__(model, eps, norm, None, seed, eot)
        if source is None:
            source = ann_twin(model)
            source_name = source_name or "ann-twin"
            if source is None:
                raise ValueError("Transfer needs a source model (the target is not a robustsnn SNN with an ANN twin)")
        self.source = source
        self.source_name = source_name or type(source).__name__
        if attack is PGD:
            attack_kwargs.setdefault("steps", 20)
        self.crafter = attack(source, eps=eps, norm=norm, estimator=estimator, seed=seed, **attack_kwargs)

    def label(self) -> str:
        return f"transfer[{self.crafter.label()} on {self.source_name}]"

    def perturb(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.crafter(x, y, ids=ids)
