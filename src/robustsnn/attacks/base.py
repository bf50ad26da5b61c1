"""The :class:`Attack` base class and the helpers every attack shares.

An attack maps clean pixels ``x`` in [0, 1] (shape [B, C, H, W]) and labels
``y`` to adversarial pixels ``x_adv`` in [0, 1] with ``||x_adv - x|| <= eps``
in the attack's norm (``"Linf"`` or ``"L2"``). Budgets are in pixel units
(DESIGN.md section 2): ``eps=8/255``, never ``eps=8``.

While an attack runs, the model is in eval mode, its parameters do not
require gradients, and its spiking neurons use the attack's gradient
estimator (``robustsnn.estimators.estimator``); everything is restored
afterwards, even on error. Attacks never know about spikes: the estimator is
a mode of the model, so the same attack (ours or AutoAttack's) runs under any
estimator.

Stochastic models (Poisson encoding) get expectation over transformation
(EOT): every gradient is the mean over ``eot`` forward/backward passes.

Randomness is keyed by (seed, sample id): a sample gets the same random start
whichever batch it sits in, so an ensemble with early exit gives the same
verdicts as running every member on every sample.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..estimators import Estimator, estimator as estimator_mode, parse_estimator
from .eot import default_eot, is_stochastic, mean_logits

__all__ = [
    "Attack",
    "DEFAULT_EPS",
    "NORMS",
    "RobustnessWarning",
    "check_eps",
    "check_norm",
    "project",
    "lp_norm",
    "LOSSES",
    "get_loss",
    "attack_mode",
]

#: Default budget of every attack (CIFAR's L-inf 8/255, as in torchattacks / AutoAttack).
DEFAULT_EPS = 8 / 255
NORMS = ("Linf", "L2")

LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class RobustnessWarning(UserWarning):
    """A robustness number may be wrong (gradient masking, a budget mistake, ...)."""


def check_norm(norm: str) -> str:
    """Canonical norm name: ``"Linf"`` or ``"L2"`` (accepts ``linf``, ``inf``, ``l2``)."""
    key = str(norm).strip().lower()
    if key in ("linf", "inf", "l_inf", "li"):
        return "Linf"
    if key in ("l2", "l_2"):
        return "L2"
    raise UsageError(f"unknown norm {norm!r}; choose 'Linf' or 'L2'")


def check_eps(eps: float, norm: str = "Linf") -> float:
    """Validate a budget in pixel units and return it as a float.

    L-inf budgets must lie in [0, 1]: anything above 1 is a unit mistake
    (``eps=8`` meant ``8/255``). L2 budgets are a Euclidean length and can exceed 1
    (MNIST's usual L2 budget is 1.5 to 2); they must only be >= 0 and finite.
    """
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise UsageError(f"eps must be a number in pixel units, got {eps!r}") from None
    if not math.isfinite(e) or e < 0:
        raise UsageError(f"eps={eps} is negative or not finite: budgets are distances in pixel units [0, 1]")
    if check_norm(norm) == "Linf" and e > 1:
        raise UsageError(f"eps={eps:g} is above 1: budgets are in pixel units [0,1]; did you mean {eps:g}/255?")
    return e


def lp_norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of ``d`` [B, ...] -> [B]."""
    flat = d.reshape(d.shape[0], -1)
    if norm == "Linf":
        return flat.abs().amax(1) if flat.shape[1] else flat.new_zeros(d.shape[0])
    return flat.norm(p=2, dim=1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project ``x_adv`` onto the ``eps``-ball around ``x`` in ``norm``, then clip to [0, 1]."""
    d = x_adv - x
    if norm == "Linf":
        d = d.clamp(-eps, eps)
    else:
        n = lp_norm(d, "L2")
        d = d * _bcast(torch.clamp(eps / (n + 1e-12), max=1.0), d)
    return (x + d).clamp(0.0, 1.0)


def _normalise_l2(g: torch.Tensor) -> torch.Tensor:
    return g / _bcast(lp_norm(g, "L2") + 1e-12, g)


def step_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit size: ``sign(g)`` (L-inf) or ``g/||g||_2`` (L2)."""
    return grad.sign() if norm == "Linf" else _normalise_l2(grad)


# ---------------------------------------------------------------- losses
def _ce(logits, y, clean_logits=None):
    return F.cross_entropy(logits, y, reduction="none")


def _margin(logits, y, clean_logits=None):
    """Carlini-Wagner margin: max_{j != y} z_j - z_y (positive = misclassified)."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return other.amax(1) - z_y


def _dlr(logits, y, clean_logits=None):
    """Difference of logits ratio (Croce & Hein 2020); needs >= 3 classes."""
    s, _ = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    top_is_y = (logits.argmax(1) == y).to(logits.dtype)
    other_best = s[:, -2] * top_is_y + s[:, -1] * (1 - top_is_y)
    return -(z_y - other_best) / (s[:, -1] - s[:, -3] + 1e-12)


def _kl(logits, y, clean_logits=None):
    """KL(p_clean || p_adv), the TRADES inner loss; needs the clean logits."""
    if clean_logits is None:
        raise UsageError("the 'kl' loss needs the clean prediction (clean_logits)")
    p = F.softmax(clean_logits, dim=1)
    return (p * (F.log_softmax(clean_logits, dim=1) - F.log_softmax(logits, dim=1))).sum(1)


#: Per-sample losses ``loss(logits, y, clean_logits) -> [B]`` that attacks maximise.
LOSSES: dict[str, LossFn] = {"ce": _ce, "margin": _margin, "dlr": _dlr, "kl": _kl}


def get_loss(loss: "str | LossFn") -> tuple[str, LossFn]:
    """(name, function) for a loss name in :data:`LOSSES` or a callable."""
    if callable(loss):
        return getattr(loss, "__name__", "custom"), loss
    key = str(loss).lower()
    if key not in LOSSES:
        raise UsageError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)} or pass a callable")
    return key, LOSSES[key]


# ---------------------------------------------------------------- model mode
@contextmanager
def attack_mode(model: nn.Module, est: "str | Estimator | None", eval_mode: bool = True) -> Iterator[None]:
    """Eval mode, frozen parameters and estimator ``est`` for the block; all restored on exit."""
    if isinstance(est, str):
        est = parse_estimator(est)
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        if eval_mode:
            model.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        if est is None:
            yield
        else:
            with estimator_mode(model, est):
                yield
    finally:
        for m, t in modes:
            m.training = t
        for p, r in grads:
            p.requires_grad_(r)


def _sample_seed(seed: int, stream: int, sid: int) -> int:
    h = (int(seed) * 0x9E3779B1 + int(stream) * 0x85EBCA77 + int(sid) * 0xC2B2AE3D) & 0x7FFFFFFFFFFFFFFF
    return h ^ (h >> 29)


class Attack:
    """Base class: one attack, a model and a budget; ``attack(x, y) -> x_adv``.

    Args:
        model: maps pixels [B, C, H, W] in [0, 1] to logits [B, K].
        eps: budget in pixel units (L-inf in [0, 1]).
        norm: ``"Linf"`` or ``"L2"``.
        estimator: gradient estimator for spiking layers (``"triangle:0.5"``, ``"bptr"``,
            ``"ann"``, an :class:`~robustsnn.estimators.Estimator`); None keeps each neuron's
            own training surrogate. No effect on an ANN.
        seed: fixes the attack's randomness (random starts, noise, AutoAttack's seeds).
        eot: forward/backward passes averaged per gradient; None = 8 for stochastic
            (Poisson) models, 1 otherwise.

    Subclasses implement :meth:`perturb` (model already in attack mode) and set
    ``name`` and ``white_box``.
    """

    name = "attack"
    white_box = True
    #: project the output onto the eps-ball (False only for attacks defined without projection)
    project_output = True

    def __init__(
        self,
        model: nn.Module,
        eps: float = DEFAULT_EPS,
        norm: str = "Linf",
        estimator: "str | Estimator | None" = None,
        seed: int = 0,
        eot: int | None = None,
    ):
        self.model = model
        self.norm = check_norm(norm)
        self.eps = check_eps(eps, self.norm)
        self.estimator = None if estimator is None else parse_estimator(estimator)
        self.seed = int(seed)
        self.eot = int(eot) if eot else default_eot(model)
        if self.eot < 1:
            raise UsageError(f"eot must be >= 1, got {eot}")
        #: run the model in eval mode during the attack (training may set False: BN in train mode)
        self.eval_mode = True
        self._calls = 0

    # -- public
    def __call__(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial examples for ``x`` (pixels in [0, 1]) and labels ``y``.

        Args:
            x: [B, C, H, W] in [0, 1].
            y: [B] int64 labels.
            ids: optional [B] global sample indices that key the per-sample randomness, so
                a sample gets the same random start in any batch. Default: fresh keys on
                every call (reproducible from ``seed``).
        Returns:
            ``x_adv`` [B, C, H, W] in [0, 1], detached, within the budget.
        """
        x, y = self._check_inputs(x, y)
        if ids is None:
            ids = torch.arange(x.shape[0]) + (self._calls << 32)
            self._calls += 1
        else:
            ids = torch.as_tensor(ids).reshape(-1).cpu()
        if ids.shape[0] != x.shape[0]:
            raise UsageError(f"ids has {ids.shape[0]} entries for a batch of {x.shape[0]}")
        if x.shape[0] == 0:
            return x.clone()
        with attack_mode(self.model, self.estimator, self.eval_mode):
            x_adv = self.perturb(x, y, ids)
        x_adv = x_adv.detach()
        if self.project_output:
            return project(x_adv, x, self.eps, self.norm)
        return x_adv.clamp(0.0, 1.0)

    def perturb(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """The attack proper; the model is already in attack mode."""
        raise NotImplementedError

    def restarts_on_survivors(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor, restarts: int, run) -> torch.Tensor:
        """Best images over ``restarts`` calls ``run(x, y, ids, r) -> (adv, broken)``, each on the samples not yet broken."""
        best = x.clone()
        todo = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for r in range(restarts):
            idx = todo.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            adv, broken = run(x[idx], y[idx], ids[idx.cpu()], r)
            best[idx] = adv
            todo[idx[broken]] = False
        return best

    def label(self) -> str:
        """E.g. ``pgd-20@bptt:triangle(w=1)``; no estimator suffix for black-box attacks."""
        if not self.white_box:
            return self.name
        return f"{self.name}@{self.estimator.label() if self.estimator else 'default'}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps:g}, norm={self.norm}, label={self.label()!r})"

    # -- helpers for subclasses
    @property
    def stochastic(self) -> bool:
        return is_stochastic(self.model)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits without gradient (mean over ``eot`` passes for a stochastic model)."""
        with torch.no_grad():
            return mean_logits(self.model, x, self.eot if self.stochastic else 1)

    def gradient(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        loss: LossFn,
        clean_logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(d sum(loss) / dx averaged over ``eot`` passes, mean logits) at ``x``."""
        grad = torch.zeros_like(x)
        logit_sum = None
        for _ in range(self.eot):
            xr = x.detach().requires_grad_(True)
            with torch.enable_grad():
                z = self.model(xr)
                value = loss(z, y, clean_logits).sum()
            grad += torch.autograd.grad(value, xr)[0]
            logit_sum = z.detach() if logit_sum is None else logit_sum + z.detach()
        return grad / self.eot, logit_sum / self.eot

    def noise(self, x: torch.Tensor, ids: torch.Tensor, stream: int = 0, kind: str = "uniform") -> torch.Tensor:
        """Per-sample random tensor shaped like ``x``, keyed by (seed, stream, sample id).

        ``kind``: ``"uniform"`` in [-1, 1], ``"normal"`` N(0, 1), ``"sign"`` in {-1, +1}.
        """
        out = torch.empty(x.shape, dtype=x.dtype)
        shape = x.shape[1:]
        for i, sid in enumerate(ids.tolist()):
            g = torch.Generator().manual_seed(_sample_seed(self.seed, stream, sid))
            if kind == "normal":
                out[i] = torch.randn(shape, generator=g, dtype=x.dtype)
            elif kind == "uniform":
                out[i] = torch.rand(shape, generator=g, dtype=x.dtype) * 2 - 1
            elif kind == "sign":
                out[i] = torch.randint(0, 2, shape, generator=g).to(x.dtype) * 2 - 1
            else:
                raise UsageError(f"unknown noise kind {kind!r}")
        return out.to(x.device)

    def random_point(self, x: torch.Tensor, ids: torch.Tensor, stream: int = 0) -> torch.Tensor:
        """A random start in the eps-ball around ``x`` (uniform for L-inf), clipped to [0, 1]."""
        if self.norm == "Linf":
            d = self.eps * self.noise(x, ids, stream, "uniform")
        else:
            # direction uniform on the sphere, radius uniform in [0, eps] (as torchattacks' PGDL2)
            d = _normalise_l2(self.noise(x, ids, stream, "normal"))
            r = self.noise(x.reshape(x.shape[0], -1)[:, :1], ids, stream + 7919, "uniform").abs().reshape(-1)
            d = d * self.eps * _bcast(r, d)
        return project(x + d, x, self.eps, self.norm)

    def _check_inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.is_tensor(x) or not torch.is_tensor(y):
            raise TypeError("x and y must be tensors")
        if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise UsageError(f"expected x [B, C, H, W] and y [B], got {tuple(x.shape)} and {tuple(y.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be float pixels in [0, 1], got dtype {x.dtype} (divide uint8 images by 255)")
        if x.numel() and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
            raise UsageError(
                f"x must be pixels in [0, 1] (normalisation is the model's first layer), "
                f"got values in [{float(x.min()):.3g}, {float(x.max()):.3g}]"
            )
        return x.detach().clamp(0.0, 1.0), y.detach().long()
