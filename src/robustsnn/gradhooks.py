r"""Spike hooks: per-element surrogate derivatives for the stronger SNN attacks.

A spike hook replaces a neuron's backward rule by one that may depend on the
whole forward pass of the layer (its membrane potentials, its input current,
running statistics over attack iterations), computed elementwise, not one
width per layer. The forward pass stays the exact neuron. Four hooks, each the
backward of a published attack or estimator (``u = m - \theta``, ``m`` the
membrane potential before reset, ``I`` the input current after the gain,
shapes [T, B, ...]):

* :class:`PDSG` (Lun et al., CVPR 2025): a Gaussian of mean :math:`\sigma/2` and
  standard deviation :math:`\sigma`, :math:`\sigma[t]` the spread of the
  membrane potentials :math:`m[0..t]` per channel (conv) or per neuron (linear).
* :class:`ASSG` (Wang et al., arXiv 2512.22522): the atan surrogate with a
  per-neuron, per-step sharpness :math:`\alpha = a / (M + r D)` from running
  means over attack iterations, :math:`M \leftarrow \beta_1 M + (1-\beta_1)|u|`,
  :math:`D \leftarrow \beta_2 D + (1-\beta_2)\,\big||u| - M\big|`,
  :math:`a = 2\tan(\pi A)/\pi`.
* :class:`HART` (Hao et al., ICLR 2024): triangle surrogate of width
  :math:`\gamma\theta`, the temporal path :math:`v[t-1] \to m[t]` cut, the
  gradient to the input current averaged over time.
* :class:`RGA` (Bu et al., CVPR 2023): the rate derivative of the mean input
  current :math:`\bar I = \mathrm{mean}_t I[t]`, temporal path cut:
  :math:`\partial L/\partial I[t] = \partial L/\partial s[t]\cdot f(\bar I/\theta)/\theta`,
  :math:`f = \gamma` on :math:`[0, 1-\lambda)`,
  :math:`(1-\gamma+\gamma\lambda)/(\lambda+e)` on :math:`[1-\lambda, 1+e]`, 0 elsewhere.

Hooks are set per neuron through :class:`robustsnn.neurons.GradMode` (``hook``) by
:func:`robustsnn.estimators.estimator`; the ``pdsg`` surrogate uses :class:`PDSG`
in any mode. :func:`hooked_spike` is the autograd operation behind them.
"""

from __future__ import annotations

import math

import torch

from . import kernels
from .layout import memory_order
from .neurons import _run_forward, from_rows, to_rows
from .surrogates import Surrogate, surrogate_grad

__all__ = ["SpikeHook", "PDSG", "ASSG", "HART", "RGA", "hooked_spike", "pdsg_sigma", "rga_slope"]


class SpikeHook:
    """Backward rule of a spiking layer, computed from its forward pass.

    Attributes:
        temporal: keep the path ``v[t-1] -> m[t]`` (and the reset) in the backward (BPTT);
            False cuts it, so ``dL/dI[t]`` only sees step t.
        time_average: replace ``dL/dI[t]`` by its mean over t (HART).
    """

    temporal = True
    time_average = False

    def derivative(self, u: torch.Tensor, drive: torch.Tensor, lam: float, threshold: torch.Tensor) -> torch.Tensor:
        """ds/dm per element, [T, B, ...], from ``u = m - theta`` and ``drive`` (= gain * I)."""
        raise NotImplementedError

    def derivative_at(self, membrane: torch.Tensor, drive, lam: float, threshold: torch.Tensor) -> torch.Tensor:
        """:meth:`derivative` at the membrane potentials ``m`` [T, B, ...] (``drive``: a tensor or a
        function giving it, evaluated only if the rule needs it)."""
        return self.derivative(membrane - threshold, drive() if callable(drive) else drive, lam, threshold)

    def label(self) -> str:  # pragma: no cover - overridden
        return type(self).__name__.lower()


def _group_dims(x: torch.Tensor, over_batch: bool) -> tuple[int, ...]:
    """Dimensions of [T, B, ...] (time excluded) that one sigma is taken over.

    [T, B, C, H, W]: space (and batch); [T, B, N]: the batch (per neuron, the paper's linear
    layers) or the neurons (per sample); [T, N]: N.
    """
    if x.dim() >= 4:
        dims = tuple(range(3, x.dim()))
        return ((1,) if over_batch else ()) + dims
    if x.dim() == 3:
        return (1,) if over_batch else (2,)
    return tuple(range(1, x.dim()))


def pdsg_sigma(m: torch.Tensor, over_batch: bool = False) -> torch.Tensor:
    """sigma[t] = std (unbiased) of the membrane potentials m[0..t] per channel, broadcast to m's shape.

    Args:
        m: membrane potentials [T, B, ...].
        over_batch: pool the batch too (the paper's statistic; a sample's gradient then
            depends on its batch neighbours). False: per sample.
    Returns:
        [T, B, ...] tensor; groups with zero spread get 1 (as the paper).
    """
    dims = _group_dims(m, over_batch)
    s1 = m.sum(dim=dims, keepdim=True).cumsum(0)
    s2 = (m * m).sum(dim=dims, keepdim=True).cumsum(0)
    per_step = math.prod(m.shape[d] for d in dims)
    n = torch.arange(1, m.shape[0] + 1, dtype=m.dtype, device=m.device).view(-1, *([1] * (m.dim() - 1))) * per_step
    var = ((s2 - s1 * s1 / n) / (n - 1).clamp_min(1)).clamp_min(0)
    sigma = var.sqrt()
    sigma = torch.where(sigma > 1e-12, sigma, torch.ones_like(sigma))
    return sigma.expand_as(m)


class PDSG(SpikeHook):
    """Potential-dependent surrogate gradient: N(u; sigma/2, sigma), sigma = width * std of m[0..t].

    ``over_batch=False`` (surrogate ``pdsg``) takes the spread per sample so that verdicts do
    not depend on batch composition; ``over_batch=True`` (``pdsg-batch``) is the paper's exact
    statistic over the batch.
    """

    def __init__(self, width: float = 1.0, over_batch: bool = False):
        self.width, self.over_batch = float(width), bool(over_batch)

    def derivative(self, u, drive, lam, threshold):
        sigma = self.width * pdsg_sigma(u + threshold, self.over_batch)
        return torch.exp(-0.5 * ((u - 0.5 * sigma) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


class ASSG(SpikeHook):
    """Adaptive sharpness: per element, width = pi (M + r D + 1e-4) / tan(pi A) for the atan shape.

    The state (M, D) lives in the hook for one attack run: it starts at M = 1, D = 0 and is
    updated on every gradient pass; a new batch shape starts it again.

    Args:
        A: bound on the expected gradient-vanishing degree (paper: 0.35..0.49, default 0.425);
            at |u| = M the atan primitive reaches 1/2 + A.
        relax: r, weight of the spread D.
        beta1, beta2: momenta of M and D.
        shape: surrogate shape fed with the per-element width (the paper's is ``atan``).
    """

    def __init__(self, A: float = 0.425, relax: float = 1.5, beta1: float = 0.9, beta2: float = 0.9, shape: str = "atan"):
        if not 0 < A < 0.5:
            raise ValueError(f"ASSG's A must lie in (0, 0.5), got {A}")
        self.A, self.relax, self.beta1, self.beta2 = float(A), float(relax), float(beta1), float(beta2)
        self.shape = Surrogate(shape)
        self.M: torch.Tensor | None = None
        self.D: torch.Tensor | None = None

    def update(self, u: torch.Tensor) -> None:
        """One running-statistics step on the potentials ``u`` of a forward pass."""
        a = u.detach().abs()
        if self.M is None or self.M.shape != a.shape:
            self.M, self.D = torch.ones_like(a), torch.zeros_like(a)
        self.M = self.beta1 * self.M + (1 - self.beta1) * a
        self.D = self.beta2 * self.D + (1 - self.beta2) * (a - self.M).abs()

    def width(self) -> torch.Tensor:
        """Per-element surrogate width gamma = 2 / alpha (our atan with scale 2)."""
        return math.pi * (self.M + self.relax * self.D + 1e-4) / math.tan(math.pi * self.A)

    def derivative(self, u, drive, lam, threshold):
        self.update(u)
        return surrogate_grad(u, self.shape, self.width())

    def derivative_at(self, membrane, drive, lam, threshold):
        mod = kernels.get() if kernels.supports(membrane) and self.shape.name == "atan" else None
        if mod is None or threshold.dim() != 0:
            return super().derivative_at(membrane, drive, lam, threshold)
        # u = m - theta, the update and the atan derivative in one pass of the compiled kernel (to rounding)
        membrane = membrane.detach().contiguous()
        if self.M is None or self.M.shape != membrane.shape or self.M.dtype != membrane.dtype:
            self.M, self.D = torch.ones_like(membrane), torch.zeros_like(membrane)
        return mod.assg_step(membrane, float(threshold), self.M, self.D, self.beta1, self.beta2, self.relax, self.A,
                             float(self.shape.alpha))


class HART(SpikeHook):
    """Triangle surrogate of width ``gamma * theta``, temporal path cut, gradient averaged over time."""

    temporal = False
    time_average = True

    def __init__(self, gamma: float = 1.0):
        self.gamma = float(gamma)

    def derivative(self, u, drive, lam, threshold):
        return surrogate_grad(u, Surrogate("triangle"), self.gamma * threshold)


def rga_slope(x: torch.Tensor, lam: float, gamma: float = 0.2, ext: float = 1.0) -> torch.Tensor:
    """RGA's approximate firing-rate slope f(x) at the normalised mean current x = mean_t(I) / theta."""
    hi = (1 - gamma + gamma * lam) / (lam + ext)
    low = (x >= 0) & (x < 1 - lam)
    mid = (x >= 1 - lam) & (x <= 1 + ext)
    return low.to(x.dtype) * gamma + mid.to(x.dtype) * hi


class RGA(SpikeHook):
    """Rate gradient: ds[t]/dI[t] = f(mean_t I / theta) / theta, temporal path cut."""

    temporal = False

    def __init__(self, gamma: float = 0.2, ext: float = 1.0):
        self.gamma, self.ext = float(gamma), float(ext)

    def derivative(self, u, drive, lam, threshold):
        x = drive.mean(0, keepdim=True) / threshold
        return (rga_slope(x, lam, self.gamma, self.ext) / threshold).expand_as(u)


class _HookedSpike(torch.autograd.Function):
    """Exact spiking forward; BPTT backward with the hook's per-element ds/dm."""

    @staticmethod
    def forward(ctx, current, threshold, gain, lam, soft, detach_reset, hook, init=0.0):
        spikes, membrane, _ = _run_forward(current, threshold, gain, lam, soft, True, init)
        def drive():
            return current if gain is None else current * gain.view(-1, *([1] * (current.dim() - 1)))

        sg = hook.derivative_at(membrane, drive, lam, threshold)
        need_current = gain is not None and ctx.needs_input_grad[2]
        ctx.save_for_backward(membrane, sg, threshold, gain, current if need_current else None)
        ctx.cfg = (lam, soft, detach_reset, hook.temporal, hook.time_average, init)
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        membrane, sg, threshold, gain, current = ctx.saved_tensors
        lam, soft, detach_reset, temporal, time_average, init = ctx.cfg
        T = membrane.shape[0]
        want_th, want_g = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        mod = kernels.get() if kernels.supports(membrane) and sg.dtype == membrane.dtype else None
        if mod is not None and (gain is None or gain.dtype == membrane.dtype):
            return _kernel_hooked_backward(ctx, mod, grad_spikes, membrane, sg, threshold, gain, current)
        grad_m = torch.empty_like(membrane)
        grad_th = torch.zeros((), dtype=membrane.dtype, device=membrane.device)
        gv = None  # dL/dv[t] from step t+1 (None: no temporal path)
        for t in range(T - 1, -1, -1):
            g_s = grad_spikes[t]
            g_m = None
            if gv is not None:
                s = (membrane[t] >= threshold).to(membrane.dtype)
                if not detach_reset:
                    g_s = g_s - gv * (threshold if soft else membrane[t])
                g_m = gv if soft else gv * (1.0 - s)
                if soft and want_th:
                    grad_th = grad_th - (gv * s).sum()
            g_s_sg = g_s * sg[t]
            grad_m[t] = g_s_sg if g_m is None else g_m + g_s_sg
            if want_th:
                grad_th = grad_th - g_s_sg.sum()
            gv = grad_m[t] * lam if temporal else None
        if init and want_th and gv is not None:  # v[-1] = init * theta
            grad_th = grad_th + init * gv.sum()
        grad_gain = None
        if want_g:
            grad_gain = (grad_m * current).reshape(T, -1).sum(1)
        grad_current = grad_m if gain is None else grad_m * gain.view(-1, *([1] * (grad_m.dim() - 1)))
        if time_average:
            grad_current = grad_current.mean(0, keepdim=True).expand_as(grad_current).contiguous()
        return grad_current, (grad_th if want_th else None), grad_gain, None, None, None, None, None


def _kernel_hooked_backward(ctx, mod, grad_spikes, membrane, sg, threshold, gain, current):
    """:class:`_HookedSpike`'s backward in one call of the compiled kernel (its per-element
    derivative ``sg`` given; a cut temporal path is the recursion with leak 0, so dL/dv is 0)."""
    lam, soft, detach_reset, temporal, time_average, init = ctx.cfg
    want_th, want_g = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    shape = membrane.shape
    order = memory_order(membrane) or tuple(range(membrane.dim()))  # the kernel's rows, as the forward wrote them
    gi, g_th, g_gain, gv_sum = mod.backward(
        to_rows(grad_spikes, order), to_rows(membrane, order), float(threshold),
        None if gain is None else gain.detach(), to_rows(current, order) if want_g else None, False,
        lam if temporal else 0.0, soft, detach_reset, kernels.GIVEN_SURROGATE, 1.0, 1.0, True, want_th, False,
        to_rows(sg, order))
    if init and want_th and temporal:  # v[-1] = init * theta
        g_th = g_th + init * gv_sum
    grad_current = from_rows(gi, shape, order)
    if time_average:
        grad_current = grad_current.mean(0, keepdim=True).expand_as(grad_current).contiguous()
    return grad_current, (g_th if want_th else None), (g_gain if want_g else None), None, None, None, None, None


def hooked_spike(
    current: torch.Tensor,
    threshold: torch.Tensor,
    lam: float,
    gain: torch.Tensor | None,
    reset: str,
    hook: SpikeHook,
    detach_reset: bool = False,
    init: float = 0.0,
) -> torch.Tensor:
    """Spikes of IF/LIF/DLIF neurons (as :func:`robustsnn.neurons.multistep_spike`), backward by ``hook``.

    Args:
        current: input current [T, B, ...].
        threshold: theta (0-dim tensor).
        lam: leak; gain: per-step gain [T] or None; reset: ``"hard"`` or ``"soft"``.
        hook: the :class:`SpikeHook` giving ds/dm per element.
        init: initial membrane potential v[-1] as a fraction of theta.
    Returns:
        Spikes [T, B, ...] in {0, 1}.
    """
    threshold = torch.as_tensor(threshold, dtype=current.dtype, device=current.device)
    return _HookedSpike.apply(current, threshold, gain, float(lam), reset == "soft", bool(detach_reset), hook, float(init))


#: Estimator modes that run through a hook: name -> (hook class, default options).
HOOK_MODES = {"assg": ASSG, "hart": HART, "rga": RGA}
