r"""SA-PGD (Wang et al., arXiv 2512.22522): stable adaptive PGD, by default under the ASSG estimator.

From a random start on the boundary of the L-inf ball
(:math:`x_0 = x + \epsilon\, r / \|r\|_\infty`, :math:`r \sim \mathcal U[-1, 1]`),
with per-sample normalised gradients
:math:`\hat g = g / \mathrm{mean}|g|`, :math:`\hat q = g^2 / \mathrm{mean}(g^2)`:

.. math::

    m_i &= 0.5\, m_{i-1} + \hat g_i, \qquad v_i = 0.8\, v_{i-1} + \hat q_i \qquad (m_0 = \hat g_0,\ v_0 = \hat q_0) \\
    x_{i+1} &= \mathrm{clip}_{[0,1]}\Big(\Pi_\epsilon\big(x_i + \mathrm{clip}_{[-\eta, \eta]}(\eta\, m_i / \sqrt{v_i})\big)\Big)

The step :math:`\eta` starts at :math:`\epsilon` and halves every :math:`k` iterations,
:math:`k_0 = \lfloor 0.22 N \rfloor`, :math:`k \leftarrow \max(k - \lfloor 0.03 N \rfloor, \lfloor 0.06 N \rfloor)`
(:func:`step_schedule`). The default estimator is ``assg``
(:class:`robustsnn.gradhooks.ASSG`), whose surrogate sharpness adapts over these
iterations; any other estimator works too. L2: the step is
:math:`\eta\, d / \|d\|_2` with :math:`d = m / \sqrt v` (an extension; the paper is L-inf).
Per sample the first misclassified iterate is kept, else the highest-loss one.
"""

from __future__ import annotations

import torch
from torch import nn

from ..estimators import Estimator
from .base import DEFAULT_EPS, Attack, _bcast, get_loss, project, step_direction

__all__ = ["SAPGD", "step_schedule", "sapgd_direction"]


def step_schedule(steps: int) -> list[float]:
    """Step size of each of ``steps`` iterations, in units of eps (1, then halvings)."""
    k, k_min, decr = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    out, size, counter = [], 1.0, 0
    for _ in range(steps):
        out.append(size)
        counter += 1
        if counter == k:
            size, counter, k = size / 2, 0, max(k - decr, k_min)
    return out


def _per_sample_mean(t: torch.Tensor) -> torch.Tensor:
    return _bcast(t.reshape(t.shape[0], -1).mean(1), t)


def sapgd_direction(grad: torch.Tensor, m: torch.Tensor | None, v: torch.Tensor | None):
    """One moment update: returns (m, v, m / sqrt(v)) from the gradient [B, ...] and the previous moments."""
    g_hat = grad / (_per_sample_mean(grad.abs()) + 1e-20)
    q = grad * grad
    q_hat = q / (_per_sample_mean(q) + 1e-30)
    m = g_hat if m is None else 0.5 * m + g_hat
    v = q_hat if v is None else 0.8 * v + q_hat
    return m, v, m / (v.sqrt() + 1e-12)


class SAPGD(Attack):
    """Stable adaptive PGD with ASSG (the paper's "ASSG + SA-PGD") or any estimator.

    Args:
        model, eps, norm, seed, eot: see :class:`~robustsnn.attacks.base.Attack`.
        estimator: default ``"assg"`` (adaptive sharpness); ``None`` is also ``"assg"``.
        steps: iterations per restart (paper: 100).
        restarts: runs, each on the samples not yet broken.
        loss: ``"ce"`` (paper), ``"margin"``, ``"dlr"`` or a callable.
    """

    name = "sa-pgd"

    def __init__(
        self,
        model: nn.Module,
        eps: float = DEFAULT_EPS,
        norm: str = "Linf",
        estimator: "str | Estimator | None" = "assg",
        steps: int = 100,
        restarts: int = 1,
        loss="ce",
        seed: int = 0,
        eot: int | None = None,
    ):
        super().__init__(model, eps, norm, "assg" if estimator is None else estimator, seed, eot)
        if int(steps) < 1 or int(restarts) < 1:
            raise ValueError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
        self.steps, self.restarts = int(steps), int(restarts)
        self.loss_name, self.loss = get_loss(loss)

    def label(self) -> str:
        base = f"sa-pgd-{self.steps}" + (f"x{self.restarts}" if self.restarts > 1 else "")
        return f"{base}@{self.estimator.label()}"

    def perturb(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.restarts_on_survivors(x, y, ids, self.restarts, self._run)

    def _start(self, x, ids, restart):
        r = self.noise(x, ids, stream=1000 + restart, kind="uniform")
        if self.norm == "Linf":
            r = r / (_bcast(r.reshape(r.shape[0], -1).abs().amax(1), r) + 1e-12)
        else:
            r = step_direction(r, "L2")
        return project(x + self.eps * r, x, self.eps, self.norm)

    def _run(self, x, y, ids, restart):
        clean = self.logits(x) if self.loss_name == "kl" else None
        adv = self._start(x, ids, restart)
        grad, z = self.gradient(adv, y, self.loss, clean)
        found = z.argmax(1) != y
        keep = adv.clone()
        best_loss = self.loss(z, y, clean).detach()
        best = adv.clone()
        m = v = None
        for size in step_schedule(self.steps):
            eta = self.eps * size
            m, v, d = sapgd_direction(grad, m, v)
            if self.norm == "Linf":
                delta = (eta * d).clamp(-eta, eta)
            else:
                delta = eta * step_direction(d, "L2")
            adv = project(adv + delta, x, self.eps, self.norm)
            grad, z = self.gradient(adv, y, self.loss, clean)
            new = (z.argmax(1) != y) & ~found
            keep[new] = adv[new]
            found |= new
            value = self.loss(z, y, clean).detach()
            better = value > best_loss
            best[better], best_loss[better] = adv[better], value[better]
        keep[~found] = best[~found]
        return keep, found
