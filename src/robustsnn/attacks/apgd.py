"""APGD-CE, APGD-DLR and APGD-T (Croce & Hein 2020), AutoAttack's own implementation.

The iterations are ``pyautoattack.autopgd_base.APGDAttack`` /
``APGDAttack_targeted`` unchanged; this file only drives them through our
gradient estimators (the model is in attack mode while they run) and EOT for
stochastic models (AutoAttack's ``eot_iter``), and gives every run a random start
of its own per sample (:func:`per_sample_starts`): AutoAttack draws one start for
the whole batch from the global generator, so a sample's verdict would depend on
which other samples share its batch.
"""

from __future__ import annotations

import hashlib
import itertools

import torch
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from torch import nn

from ..estimators import Estimator
from ._autoattack import isolated, num_classes
from .base import DEFAULT_EPS, Attack

__all__ = ["APGD", "APGDT", "per_sample_starts"]


def _content_ids(x: torch.Tensor) -> torch.Tensor:
    """[B] int64 key of each image's bytes (62 bits of sha256): a sample id that no batch can change."""
    rows = x.detach().cpu().contiguous().reshape(x.shape[0], -1)
    keys = [int.from_bytes(hashlib.sha256(r.numpy().tobytes()).digest()[:8], "little") >> 2 for r in rows]
    return torch.tensor(keys, dtype=torch.int64)


def per_sample_starts(apgd, attack: Attack):
    """Make AutoAttack's ``apgd`` start each run from ``attack.random_point`` of each image.

    AutoAttack calls ``attack_single_run`` once per restart (and target class) on the
    samples still standing; run k of a sample starts from
    ``attack.random_point(x, content id, stream=k)``, uniform in the L-inf ball (L2:
    as :class:`~robustsnn.attacks.pgd.PGD`), keyed by the attack's seed, k and the
    image alone. The iterations themselves are AutoAttack's. Returns ``apgd``.
    """
    original = apgd.attack_single_run
    runs = itertools.count()

    def attack_single_run(x, y, x_init=None):
        if x_init is None:
            x_init = attack.random_point(x, _content_ids(x), stream=next(runs))
        return original(x, y, x_init=x_init)

    apgd.attack_single_run = attack_single_run
    return apgd


class APGD(Attack):
    """Untargeted APGD on the CE loss (``loss="ce"``, APGD-CE) or the DLR loss (``loss="dlr"``, APGD-DLR).

    Args:
        model, eps, norm, estimator, seed, eot: see :class:`~robustsnn.attacks.base.Attack`.
        loss: ``"ce"`` or ``"dlr"`` (DLR needs >= 3 classes).
        steps: iterations per restart (AutoAttack: 100).
        restarts: random restarts (AutoAttack standard: 1).
        rho: step-size decrease threshold (AutoAttack: 0.75).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = DEFAULT_EPS,
        norm: str = "Linf",
        estimator: "str | Estimator | None" = None,
        loss: str = "ce",
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        seed: int = 0,
        eot: int | None = None,
    ):
        super().__init__(model, eps, norm, estimator, seed, eot)
        if loss not in ("ce", "dlr"):
            raise ValueError(f"APGD loss must be 'ce' or 'dlr', got {loss!r} (targeted: use APGDT)")
        self.loss = loss
        self.steps, self.restarts, self.rho = int(steps), int(restarts), float(rho)
        self.messages: list[str] = []

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"apgd-{self.loss}"

    def label(self) -> str:
        steps = f"-{self.steps}" if self.steps != 100 else ""
        return f"{self.name}{steps}@{self.estimator.label() if self.estimator else 'default'}"

    def perturb(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        if self.loss == "dlr" and num_classes(self.model, x) < 3:
            raise ValueError("APGD-DLR needs at least 3 classes; use loss='ce'")
        with isolated(self.messages):
            attack = APGDAttack(
                self.model, n_iter=self.steps, norm=self.norm, n_restarts=self.restarts, eps=self.eps,
                seed=self.seed, loss=self.loss, eot_iter=self.eot, rho=self.rho, device=x.device,
            )
            return per_sample_starts(attack, self).perturb(x, y)


class APGDT(Attack):
    """APGD-T: APGD on the targeted DLR loss against the top ``n_target_classes`` other classes.

    Args:
        model, eps, norm, estimator, seed, eot: see :class:`~robustsnn.attacks.base.Attack`.
        steps: iterations per target class (AutoAttack: 100).
        n_target_classes: targets tried (AutoAttack: 9; capped at K - 1). Needs K >= 4.
        restarts: restarts per target (AutoAttack standard: 1).
        rho: step-size decrease threshold.
    """

    name = "apgd-t"

    def __init__(
        self,
        model: nn.Module,
        eps: float = DEFAULT_EPS,
        norm: str = "Linf",
        estimator: "str | Estimator | None" = None,
        steps: int = 100,
        n_target_classes: int = 9,
        restarts: int = 1,
        rho: float = 0.75,
        seed: int = 0,
        eot: int | None = None,
    ):
        super().__init__(model, eps, norm, estimator, seed, eot)
        self.steps, self.restarts, self.rho = int(steps), int(restarts), float(rho)
        self.n_target_classes = int(n_target_classes)
        self.messages: list[str] = []

    def label(self) -> str:
        steps = f"-{self.steps}" if self.steps != 100 else ""
        targets = f"[{self.n_target_classes} targets]" if self.n_target_classes != 9 else ""
        return f"apgd-t{steps}{targets}@{self.estimator.label() if self.estimator else 'default'}"

    def perturb(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        k = num_classes(self.model, x)
        if k < 4:
            raise ValueError(f"APGD-T's targeted DLR loss needs at least 4 classes, the model has {k}")
        with isolated(self.messages):
            attack = APGDAttack_targeted(
                self.model, n_iter=self.steps, norm=self.norm, n_restarts=self.restarts, eps=self.eps,
                seed=self.seed, eot_iter=self.eot, rho=self.rho, device=x.device,
                n_target_classes=min(self.n_target_classes, k - 1),
            )
            return per_sample_starts(attack, self).perturb(x, y)
