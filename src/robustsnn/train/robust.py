r"""Robust training objectives (DESIGN.md section 5), each optionally carrying the MPPD regulariser.

Perturbation objectives build :math:`x'` and minimise

.. math::  \chi\,CE(f(x), y) + (1-\chi)\,CE(f(x'), y) + \rho\,V

* ``gaussian``: :math:`x' = x + \sigma\,\mathcal N(0, I)` (not clamped, as the seed), sigma = 8/255.
* ``fgsm``: FGSM with a random start (Wong et al.): one PGD step of 1.25 eps from a uniform start.
* ``rfgsm``: Tramèr's R+FGSM (alpha = eps/2, projected). ``rfgsm-stable``: the robust-stable
  seed's variant (Gaussian start 0.001, one step of eps, no projection).
* ``pgd``: Madry's PGD-k (random start, step 2.5 eps / k); chi = 0 by default.

Divergence objectives:

* ``trades``: :math:`CE(f(x)) + \beta\,\mathrm{KL}(f(x)\,\|\,f(x'))`, :math:`x'` maximising the KL
  (inner attack PGD-k or R+FGSM), beta = 6.
* ``mart``: Wang et al. 2020, beta = 4.

Adversarial examples come from :mod:`robustsnn.attacks` (the evaluation code), with batch
norm in inference mode while the attack runs and the estimator of the user's choice.
Attack randomness is drawn from torch's RNG, which the trainer seeds per epoch, so a
resumed run reproduces an uninterrupted one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attacks.pgd import PGD
from ..attacks.rfgsm import RFGSM, RFGSMStable
from ..distributed import shared_draw, unwrap
from ..errors import UsageError
from .mppd import capture_currents, perturbation_energy, select_layers
from .objectives import register_objective

__all__ = ["trades_loss", "mart_loss"]

_ID_RANGE = 2**62


def _ids(x: torch.Tensor) -> torch.Tensor:
    """Per-sample attack keys drawn from torch's (per-epoch seeded) RNG (under DDP: this rank's
    rows of the global batch's keys, see :func:`robustsnn.distributed.shared_draw`)."""
    return shared_draw(lambda m: torch.randint(0, _ID_RANGE, (m,)), x.shape[0])


def _check_budget(name: str, value: float) -> float:
    value = float(value)
    if not 0 <= value <= 1:
        raise UsageError(f"{name}={value:g} is outside [0, 1]: budgets are in pixel units; did you mean {value:g}/255?")
    return value


def _attack(kind: str, model, eps, steps, step_size, estimator, loss="ce"):
    if kind == "pgd":
        return PGD(model, eps, estimator=estimator, steps=steps, alpha=step_size, loss=loss)
    if kind == "fgsm":
        return PGD(model, eps, estimator=estimator, steps=1, alpha=step_size or 1.25 * eps, loss=loss)
    if kind == "rfgsm":
        return RFGSM(model, eps, estimator=estimator, alpha=step_size, loss=loss)
    if kind == "rfgsm-stable":
        return RFGSMStable(model, eps, estimator=estimator, loss=loss)
    raise UsageError(f"unknown inner attack {kind!r}; choose pgd, fgsm, rfgsm or rfgsm-stable")


class _Regularised:
    """Shared machinery: CE mix of clean and perturbed plus rho * V at the chosen layers."""

    def __init__(self, chi: float, rho: float, mppd_layers: str):
        if not 0 <= chi <= 1:
            raise UsageError(f"clean_weight (chi) must be in [0, 1], got {chi}")
        if rho < 0:
            raise UsageError(f"mppd (rho) must be >= 0, got {rho}")
        self.chi, self.rho, self.mppd_layers = float(chi), float(rho), mppd_layers

    def perturb(self, model, x, y) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def extra_loss(self, logits_clean, logits_pert, y) -> torch.Tensor | None:
        """Objective-specific term (TRADES/MART); None = the CE mix."""
        return None

    def __call__(self, model, x, y):
        # ``model`` may be a DDP wrapper: the perturbation is made locally with the plain module,
        # only the two training passes go through the wrapper (and its gradient all-reduce)
        x_pert = self.perturb(unwrap(model), x, y).detach()
        layers = select_layers(unwrap(model), self.mppd_layers) if self.rho > 0 else []
        with capture_currents(layers) as rec:
            logits = model(x)
            logits_pert = model(x_pert)
        loss = self.extra_loss(logits, logits_pert, y)
        if loss is None:
            loss = self.chi * F.cross_entropy(logits, y) + (1 - self.chi) * F.cross_entropy(logits_pert, y)
        if self.rho > 0:
            v = sum(perturbation_energy(r[0], r[1], m.config.lam) for (_, m), r in zip(layers, rec)) / len(layers)
            loss = loss + self.rho * v
        return loss, logits


class _Gaussian(_Regularised):
    def __init__(self, sigma, chi, rho, mppd_layers):
        super().__init__(chi, rho, mppd_layers)
        self.sigma = _check_budget("sigma", sigma)

    def perturb(self, model, x, y):
        noise = shared_draw(lambda m: torch.randn((m, *x.shape[1:]), dtype=x.dtype, device=x.device), x.shape[0])
        return x + self.sigma * noise


class _Adversarial(_Regularised):
    def __init__(self, kind, eps, steps, step_size, estimator, chi, rho, mppd_layers, loss="ce"):
        super().__init__(chi, rho, mppd_layers)
        self.kind, self.eps = kind, _check_budget("eps", eps)
        self.steps, self.step_size, self.estimator, self.loss = int(steps), step_size, estimator, loss

    def perturb(self, model, x, y):
        attack = _attack(self.kind, model, self.eps, self.steps, self.step_size, self.estimator, self.loss)
        return attack(x, y, ids=_ids(x))


@register_objective("gaussian")
def gaussian(sigma: float = 8 / 255, clean_weight: float = 0.5, mppd: float = 0.0, mppd_layers: str = "last"):
    """Gaussian-noise training: x' = x + sigma * N(0, I); chi*CE(x) + (1-chi)*CE(x') + rho*V."""
    return _Gaussian(sigma, clean_weight, mppd, mppd_layers)


def _adversarial_factory(kind: str, default_chi: float):
    def factory(eps: float = 0.1, steps: int = 10, step_size: float | None = None, estimator=None,
                clean_weight: float = default_chi, mppd: float = 0.0, mppd_layers: str = "last"):
        if kind == "pgd" and step_size is None:
            step_size = 2.5 * eps / steps
        return _Adversarial(kind, eps, steps, step_size, estimator, clean_weight, mppd, mppd_layers)

    factory.__doc__ = f"Adversarial training with {kind} examples; chi*CE(x) + (1-chi)*CE(x') + rho*V (chi default {default_chi})."
    return factory


register_objective("pgd")(_adversarial_factory("pgd", 0.0))
register_objective("fgsm")(_adversarial_factory("fgsm", 0.0))
register_objective("rfgsm")(_adversarial_factory("rfgsm", 0.5))
register_objective("rfgsm-stable")(_adversarial_factory("rfgsm-stable", 0.5))


def trades_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """TRADES: CE(f(x), y) + beta * KL(p_clean || p_adv), KL averaged over the batch."""
    kl = F.kl_div(F.log_softmax(logits_adv, 1), F.softmax(logits_clean, 1), reduction="batchmean")
    return F.cross_entropy(logits_clean, y) + beta * kl


def mart_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """MART (Wang et al. 2020): boosted CE on x' + beta * KL(p_clean || p_adv) weighted by (1 - p_clean[y])."""
    p_adv = F.softmax(logits_adv, 1)
    top2 = p_adv.argsort(1)[:, -2:]
    other = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    bce = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), other)
    p_clean = F.softmax(logits_clean, 1)
    kl = (p_clean * (torch.log(p_clean + 1e-12) - torch.log(p_adv + 1e-12))).sum(1)
    true_p = p_clean.gather(1, y[:, None]).squeeze(1)
    return bce + beta * (kl * (1.0000001 - true_p)).mean()


class _Divergence(_Adversarial):
    def __init__(self, loss_fn, beta, inner, inner_loss, **kw):
        super().__init__(inner, loss=inner_loss, **kw)
        self.loss_fn, self.beta = loss_fn, float(beta)

    def extra_loss(self, logits_clean, logits_pert, y):
        return self.loss_fn(logits_clean, logits_pert, y, self.beta)


@register_objective("trades")
def trades(beta: float = 6.0, eps: float = 0.1, steps: int = 10, step_size: float | None = None, inner: str = "pgd",
           estimator=None, mppd: float = 0.0, mppd_layers: str = "last"):
    """TRADES with an inner maximisation of the KL (PGD-k or R+FGSM, ``inner``); + rho*V."""
    if inner == "pgd" and step_size is None:
        step_size = 2.5 * eps / steps
    return _Divergence(trades_loss, beta, inner, "kl", eps=eps, steps=steps, step_size=step_size,
                       estimator=estimator, chi=0.0, rho=mppd, mppd_layers=mppd_layers)


@register_objective("mart")
def mart(beta: float = 4.0, eps: float = 0.1, steps: int = 10, step_size: float | None = None,
         estimator=None, mppd: float = 0.0, mppd_layers: str = "last"):
    """MART with a PGD-k (CE) inner attack; + rho*V."""
    step_size = 2.5 * eps / steps if step_size is None else step_size
    return _Divergence(mart_loss, beta, "pgd", "ce", eps=eps, steps=steps, step_size=step_size,
                       estimator=estimator, chi=0.0, rho=mppd, mppd_layers=mppd_layers)
