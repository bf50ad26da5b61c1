r"""Multi-step spiking neurons: IF, LIF and DLIF with hard or soft reset.

For an input current :math:`I[t]`, :math:`t = 0..T-1`, every neuron of a layer
follows (DESIGN.md section 3)

.. math::

    m[t] &= \lambda\, v[t-1] + g[t]\, I[t], \qquad v[-1] = \beta\,\theta \\
    s[t] &= H(m[t] - \theta) \qquad (H(0) = 1) \\
    v[t] &= m[t]\,(1 - s[t]) \quad \text{(hard reset)} \qquad
    v[t] = m[t] - \theta\, s[t] \quad \text{(soft reset)}

with :math:`\beta` the initial potential as a fraction of the threshold
(``init_potential``, 0 by default; 0.5 centres the rounding error of converted
IF neurons, so that a constant input :math:`a \le \theta` gives
:math:`\mathrm{round}(T a / \theta)` spikes with soft reset).

* IF: :math:`\lambda = 1`, :math:`g[t] = 1`.
* LIF: :math:`\lambda < 1` (default 0.99), :math:`g[t] = 1`.
* DLIF (Ding et al., ICML 2024): LIF with a learnable per-step input gain
  :math:`g[t] = a[t]`, :math:`a \in \mathbb{R}^T` per layer, initialised to 1.

The whole time loop is one autograd operation (:class:`_MultiStepSpike`): the
forward saves only the membrane potentials :math:`m` (and :math:`I` when the
gain needs a gradient); the backward runs the exact reverse-time recursion
with the surrogate derivative in place of :math:`dH/du`. On the CPU both run as
one call of a compiled C++/OpenMP kernel (:mod:`robustsnn.kernels`, built on
first use; ``ROBUSTSNN_KERNEL=torch`` forces the pure-PyTorch loop, which is also
the fallback where the kernel cannot build): same spikes bit for bit, same
gradients up to summation order. No state survives a call: two identical calls
give identical outputs.

Gradient modes (set per neuron by :func:`robustsnn.estimators.estimator`):

* ``bptt``: backprop through time with a surrogate (the default).
* ``bptr``: backprop through rate; the upstream gradient, averaged over time,
  passes through :math:`1[\bar s > 0]` and is broadcast over T.
* ``ann``: the neuron computes :math:`\mathrm{ReLU}(g[t] I[t])` instead of
  spiking; the model combines it with the exact SNN output (ANN proxy).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from . import kernels
from .layout import memory_order
from .switches import switched
from .timerepeat import repeated_source
from .surrogates import Surrogate, layer_width, parse_surrogate, surrogate_grad

__all__ = [
    "NeuronConfig",
    "GradMode",
    "multistep_spike",
    "multistep_spike_bptr",
    "recompute_membrane",
    "SpikingNeuron",
    "ReLU",
    "QCFS",
    "qcfs",
    "NEURON_KINDS",
]

NEURON_KINDS = ("if", "lif", "dlif")
_DEFAULT_LEAK = {"if": 1.0, "lif": 0.99, "dlif": 0.99}


@dataclass(frozen=True)
class NeuronConfig:
    """Settings of one kind of spiking neuron (JSON-serialisable).

    Attributes:
        kind: ``"if"``, ``"lif"`` or ``"dlif"``.
        leak: lambda in [0, 1]; ``None`` takes the kind's default (IF 1.0, LIF/DLIF 0.99).
        threshold: initial firing threshold theta (membrane-potential units, > 0).
        reset: ``"hard"`` (to zero) or ``"soft"`` (subtract theta).
        learn_threshold: make theta a trainable parameter.
        threshold_floor: lower clamp applied to theta in the forward pass.
        surrogate: default surrogate used in ``bptt`` mode.
        detach_reset: drop the gradient through the reset term (SpikingJelly's option).
        init_potential: initial membrane potential v[-1] as a fraction of theta (0 = rest,
            0.5 = the conversion literature's theta/2 start).
        spike_amplitude: ``"one"`` (the layer emits s in {0, 1}) or ``"threshold"`` (it emits
            theta * s, as converted networks do so that every layer works in the ANN's units;
            the events are the same, the amplitude folds into the next layer's weights).
    """

    kind: str = "lif"
    leak: float | None = None
    threshold: float = 1.0
    reset: str = "hard"
    learn_threshold: bool = False
    threshold_floor: float = 0.03
    surrogate: Surrogate = field(default_factory=Surrogate)
    detach_reset: bool = False
    init_potential: float = 0.0
    spike_amplitude: str = "one"

    def __post_init__(self) -> None:
        if self.kind not in NEURON_KINDS:
            raise ValueError(f"unknown neuron {self.kind!r}; choose one of {', '.join(NEURON_KINDS)}")
        if self.reset not in ("hard", "soft"):
            raise ValueError(f"reset must be 'hard' or 'soft', got {self.reset!r}")
        if self.leak is not None and not 0.0 <= self.leak <= 1.0:
            raise ValueError(f"leak must be in [0, 1], got {self.leak}")
        if not self.threshold > 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold}")
        if self.spike_amplitude not in ("one", "threshold"):
            raise ValueError(f"spike_amplitude must be 'one' or 'threshold', got {self.spike_amplitude!r}")
        if not 0.0 <= float(self.init_potential) <= 1.0:
            raise ValueError(f"init_potential is a fraction of the threshold in [0, 1], got {self.init_potential}")
        if not isinstance(self.surrogate, Surrogate):
            object.__setattr__(self, "surrogate", parse_surrogate(self.surrogate))

    @property
    def lam(self) -> float:
        """The leak lambda in use."""
        return _DEFAULT_LEAK[self.kind] if self.leak is None else self.leak

    def to_dict(self) -> dict:
        d = asdict(self)
        d["surrogate"] = self.surrogate.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NeuronConfig":
        d = dict(d)
        if "surrogate" in d:
            d["surrogate"] = parse_surrogate(d["surrogate"])
        return cls(**d)

    def with_(self, **changes) -> "NeuronConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)


@dataclass(frozen=True)
class GradMode:
    """How a neuron's backward pass is computed: ``mode`` in {bptt, bptr, ann} and a surrogate."""

    mode: str = "bptt"
    surrogate: Surrogate | None = None
    #: a :class:`robustsnn.gradhooks.SpikeHook` giving the backward rule per element (ASSG, HART, RGA)
    hook: object | None = None


def _forward_loop(current, threshold, gain, lam, soft, keep_membrane, init=0.0):
    """Run the neuron dynamics; returns spikes [T, ...] and membrane m [T, ...] (or None).

    ``init`` is v[-1] / theta. Writes m and s straight into the preallocated outputs.
    """
    T = current.shape[0]
    spikes = torch.empty_like(current)
    membrane = torch.empty_like(current) if keep_membrane else None
    v = None if not init else (threshold * init).expand_as(current[0])
    for t in range(T):
        i_t = current[t] if gain is None else current[t] * gain[t]
        m_out = membrane[t] if keep_membrane else None
        if v is None:
            m = i_t.clone() if m_out is None else m_out.copy_(i_t)
        else:
            m = torch.add(i_t, v, alpha=lam, out=m_out) if m_out is not None else torch.add(i_t, v, alpha=lam)
        s = torch.ge(m, threshold, out=spikes[t])
        if t + 1 < T:
            v = m - threshold * s if soft else m.masked_fill(s.bool(), 0.0)
    return spikes, membrane


def _forward_steps(current, threshold, gain, lam: float, soft: bool, keep_membrane: bool, init: float = 0.0):
    """:func:`_forward_loop` without in-place writes (stacked outputs), for ``torch.compile``.

    Args and returns as :func:`_forward_loop`; current [T, N] (any trailing shape).
    """
    T = current.shape[0]
    spikes, membrane = [], []
    v = None if not init else threshold * init
    for t in range(T):
        i_t = current[t] if gain is None else current[t] * gain[t]
        m = i_t if v is None else torch.add(i_t, v, alpha=lam)
        s = (m >= threshold).to(m.dtype)
        spikes.append(s)
        membrane.append(m)
        if t + 1 < T:
            v = m - threshold * s if soft else m.masked_fill(s.bool(), 0.0)
    return torch.stack(spikes), (torch.stack(membrane) if keep_membrane else None)


def _time_order(current) -> tuple[tuple[int, ...], bool]:
    """(order, broadcast): the dim order in which the kernel reads ``current`` [T, ...] (its memory
    order, :func:`robustsnn.layout.memory_order`, else the identity after a copy) and whether it
    repeats one [B, ...] tensor over time (stride 0 along T: read once)."""
    if current.shape[0] > 1 and current.stride(0) == 0:
        inner = memory_order(current[0]) or tuple(range(current.dim() - 1))
        return (0, *(d + 1 for d in inner)), True
    return memory_order(current) or tuple(range(current.dim())), False


def _kernel_input(current):
    """(base, broadcast, order) for the compiled kernel.

    ``base`` is ``current`` as contiguous rows [T, N] read in the order of :func:`_time_order`
    (channels-last feature maps are read as they lie, without a copy); a current repeated over
    time is passed once, [N], instead of T copies.
    """
    order, bcast = _time_order(current)
    if bcast:
        return current[0].permute([d - 1 for d in order[1:]]).contiguous().reshape(-1), True, order
    return to_rows(current, order), False, order


def to_rows(t: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """``t`` [T, ...] as contiguous rows [T, N] in the dim order ``order`` (a view when ``t`` lies that way)."""
    return t.permute(order).contiguous().view(t.shape[0], -1)


def from_rows(rows: torch.Tensor, shape, order: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`to_rows`: rows [T, N] (or [N]) as a tensor of ``shape`` laid out in ``order``."""
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return rows.view([shape[d] for d in order]).permute(inverse)


def pool_rows(current: torch.Tensor) -> tuple[int, int] | None:
    """(row length L, channels C) with which the kernel pools the spikes of ``current``
    [T, B, C, H, W] 2x2 / stride 2 in the order it reads them (:func:`_time_order`; NCHW: rows of
    W values, C = 1; channels-last: rows of W*C values), or None where it cannot (odd H or W,
    another layout, no kernel)."""
    if current.dim() != 5 or current.shape[-1] % 2 or current.shape[-2] % 2 or current.numel() == 0:
        return None
    if not kernels.supports(current) or kernels.get() is None:
        return None
    _, _, C, _, W = current.shape
    return {(0, 1, 2, 3, 4): (W, 1), (0, 1, 3, 4, 2): (W * C, C)}.get(_time_order(current)[0])


def _run_forward(current, threshold, gain, lam, soft, keep_membrane, init=0.0, pool=None):
    """As :func:`_forward_loop`, in one call of the compiled kernel where it runs (else the loop).

    Returns (spikes shaped like ``current``, membrane [T, ...] or None, kernel input or None).
    On the kernel, spikes and membrane have ``current``'s memory layout (e.g. channels-last).
    With ``pool`` = :func:`pool_rows` of ``current`` (kernel only) the spikes come 2x2-average-pooled,
    [T, B, C, H/2, W/2], and the spikes themselves are never written out.
    """
    mod = kernels.get() if kernels.supports(current) else None
    if pool is not None:
        return _kernel_forward(mod, current, threshold, gain, lam, soft, keep_membrane, init, pool)
    if not _on_kernel(current, gain):
        if current.dim() >= 1 and kernels.compiled.enabled(current):
            flat = current.reshape(current.shape[0], -1)
            spikes, membrane = kernels.compiled.call(_forward_steps, flat, threshold.detach(),
                                                     None if gain is None else gain.detach(), float(lam), bool(soft),
                                                     bool(keep_membrane), float(init))
            return spikes.view(current.shape), (membrane.view(current.shape) if keep_membrane else None), None
        spikes, membrane = _forward_loop(current, threshold, gain, lam, soft, keep_membrane, init)
        return spikes, membrane, None
    return _kernel_forward(mod, current, threshold, gain, lam, soft, keep_membrane, init)


_RECOMPUTE = {"on": True}


def recompute_membrane(enabled: bool = True) -> AbstractContextManager[None]:
    """Inside the block, a spiking neuron on the compiled kernel whose current is repeated over time
    (direct encoding's first layer: one [B, ...] current at every step) keeps that current for the
    backward and recomputes the membrane from it there (True, the default), or writes the membrane
    [T, B, ...] out in the forward and reads it back (False). Same gradients bit for bit; recomputing
    saves the membrane's write, its read and its memory (T times the current's) for a second pass
    of the forward's arithmetic. Other currents are as large as the membrane: reading one back
    instead saves nothing and the extra arithmetic costs 8-15 %, so they keep the saved membrane."""
    return switched(_RECOMPUTE, "on", bool(enabled))


def _on_kernel(current, gain) -> bool:
    """Whether :func:`_run_forward` (without pooling) runs ``current`` on the compiled kernel."""
    return (current.dim() >= 1 and kernels.supports(current) and kernels.get() is not None
            and (gain is None or gain.dtype == current.dtype))


def _kernel_forward(mod, current, threshold, gain, lam, soft, keep_membrane, init, rows=None):
    """One call of the compiled kernel's forward (with ``rows``: the pooled one); outputs laid out as ``current``."""
    base, bcast, order = _kernel_input(current)
    th = threshold.detach()
    v0 = float(th * init) if init else 0.0
    g = None if gain is None else gain.detach()
    args = (base, current.shape[0], bcast, float(th), g, float(lam), soft, bool(init), v0, keep_membrane,
            kernels.fused_update())
    shape = current.shape
    if rows is None:
        spikes, membrane = mod.forward(*args)
    else:
        spikes, membrane = mod.forward_pool(*args, *rows)
        shape = (*shape[:3], shape[3] // 2, shape[4] // 2)
    spikes = from_rows(spikes, shape, order)
    membrane = from_rows(membrane, current.shape, order) if keep_membrane else None
    return spikes, membrane, (base, bcast, order)


class _MultiStepSpike(torch.autograd.Function):
    """Whole-sequence spiking neuron with an exact surrogate-BPTT backward.

    With ``steps`` > 0 (compiled kernel only), ``current`` is one [B, ...] current repeated at
    each of ``steps`` steps: the spikes are [steps, B, ...] and the gradient to ``current`` is
    the sum over steps, summed inside the kernel instead of written out per step and summed
    again by ``expand``'s backward. With ``pool`` (:func:`pool_rows` of the current) the
    spikes come 2x2-average-pooled and the backward takes the pooled gradient.
    """

    @staticmethod
    def forward(ctx, current, threshold, gain, lam, soft, surrogate, detach_reset, init=0.0, steps=0, pool=None):
        if steps:
            current = current.unsqueeze(0).expand(steps, *current.shape)
        ctx.pool = pool
        # a current repeated over time is T times smaller than the membrane: keep it and recompute
        # the membrane in the backward (on the kernel; PDSG's width needs the membrane here)
        recompute = (_RECOMPUTE["on"] and surrogate.name != "pdsg" and (pool is not None or _on_kernel(current, gain))
                     and _time_order(current)[1])
        spikes, membrane, kin = _run_forward(current, threshold, gain, lam, soft, not recompute, init, pool)
        ctx.sum_time = bool(steps)
        ctx.shape = current.shape
        width = layer_width(surrogate, membrane - threshold) if surrogate.name == "pdsg" else surrogate.width
        need_current = gain is not None and ctx.needs_input_grad[2]
        if (need_current or recompute) and kin is not None:
            current = kin[0]  # the kernel reads the (possibly broadcast) base
        ctx.recompute = recompute
        ctx.save_for_backward(membrane, threshold, gain, current if need_current or recompute else None)
        ctx.cfg = (lam, soft, surrogate, width, detach_reset, init)
        ctx.kernel = None if kin is None else kin[1]
        ctx.order = None if kin is None else kin[2]
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        if ctx.kernel is not None:
            return _kernel_backward(ctx, grad_spikes)
        assert not ctx.sum_time, "a repeated current runs on the compiled kernel only"
        membrane, threshold, gain, current = ctx.saved_tensors
        lam, soft, surrogate, width, detach_reset, init = ctx.cfg
        want = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        if kernels.compiled.enabled(membrane):
            shape, T = membrane.shape, membrane.shape[0]
            gi, g_th, g_gain = kernels.compiled.call(
                _backward_loop, grad_spikes.reshape(T, -1), membrane.reshape(T, -1), threshold.detach(),
                None if gain is None else gain.detach(), None if current is None else current.reshape(T, -1),
                float(lam), bool(soft), surrogate, float(width), bool(detach_reset), float(init), *want)
            gi = None if gi is None else gi.view(shape)
        else:
            gi, g_th, g_gain = _backward_loop(grad_spikes, membrane, threshold, gain, current, lam, soft, surrogate,
                                              width, detach_reset, init, *want)
        return gi, (g_th if want[1] else None), g_gain, None, None, None, None, None, None, None


def _backward_loop(grad_spikes, membrane, threshold, gain, current, lam: float, soft: bool, surrogate, width: float,
                   detach_reset: bool, init: float, want_i: bool, want_th: bool, want_g: bool):
    """Surrogate BPTT through the T steps of :func:`_forward_loop`, in reverse time.

    Args:
        grad_spikes, membrane: [T, ...] upstream gradient and the saved membrane m[t].
        threshold: 0-dim theta; gain: [T] or None; current: [T, ...] (needed for the gain's gradient).
        want_i, want_th, want_g: which gradients to compute.
    Returns:
        (dL/dI [T, ...] or None, dL/dtheta 0-dim, dL/dgain [T] or None).
    """
    T = membrane.shape[0]
    grad_current = torch.empty_like(membrane) if want_i else None
    grad_gain = torch.zeros(T, dtype=membrane.dtype, device=membrane.device) if want_g else None
    grad_th = torch.zeros((), dtype=membrane.dtype, device=membrane.device)
    gv = None  # dL/dv[t], flowing back from step t+1
    for t in range(T - 1, -1, -1):
        m = membrane[t]
        u = m - threshold
        sg = surrogate_grad(u, surrogate, width)
        if gv is None:
            g_s, g_m = grad_spikes[t], None
        else:
            s = (u >= 0).to(m.dtype)
            if detach_reset:
                g_s = grad_spikes[t]
            else:
                g_s = grad_spikes[t] - gv * (threshold if soft else m)
            g_m = gv if soft else gv * (1.0 - s)
            if soft and want_th:
                grad_th = grad_th - (gv * s).sum()
        g_s_sg = g_s * sg
        g_m = g_s_sg if g_m is None else g_m + g_s_sg
        if want_th:
            grad_th = grad_th - g_s_sg.sum()
        if want_i:
            grad_current[t] = g_m if gain is None else g_m * gain[t]
        if want_g:
            grad_gain[t] = (g_m * current[t]).sum()
        gv = g_m * lam
    if init and want_th:  # v[-1] = init * theta
        grad_th = grad_th + init * gv.sum()
    return grad_current, grad_th, grad_gain


def _kernel_backward(ctx, grad_spikes):
    """Backward of :class:`_MultiStepSpike` in one call of the compiled kernel (from the saved
    membrane, or recomputing it from the saved current: :func:`recompute_membrane`)."""
    membrane, threshold, gain, current = ctx.saved_tensors
    lam, soft, surrogate, width, detach_reset, init = ctx.cfg
    want_i, want_th, want_g = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    shape = ctx.shape
    mod = kernels.get()
    order = ctx.order
    g = None if gain is None else gain.detach()
    sg = (kernels.SURROGATE_IDS[surrogate.name], float(width), float(surrogate.alpha))
    if ctx.recompute:
        th = threshold.detach()
        v0 = float(th * init) if init else 0.0  # as _kernel_forward
        gi, g_th, g_gain, gv_sum = mod.backward_recompute(
            to_rows(grad_spikes, order), current, shape[0], bool(ctx.kernel), float(th), g, want_g, lam, soft,
            bool(init), v0, kernels.fused_update(), detach_reset, *sg, want_i, want_th, ctx.sum_time,
            *(ctx.pool or (0, 1)))
    else:
        gi, g_th, g_gain, gv_sum = mod.backward_pool(
            to_rows(grad_spikes, order), to_rows(membrane, order), float(threshold), g,
            current if want_g else None, bool(ctx.kernel), lam, soft, detach_reset, *sg, want_i, want_th,
            ctx.sum_time, None, *(ctx.pool or (0, 1)))
    if init and want_th:  # v[-1] = init * theta
        g_th = g_th + init * gv_sum
    if want_i:
        gi = from_rows(gi, shape[1:], [d - 1 for d in order[1:]]) if ctx.sum_time else from_rows(gi, shape, order)
    return (gi if want_i else None), (g_th if want_th else None), (g_gain if want_g else None), \
        None, None, None, None, None, None, None


class _MultiStepSpikeBPTR(torch.autograd.Function):
    """Exact spiking forward; backward through the firing rate (BPTR)."""

    @staticmethod
    def forward(ctx, current, threshold, gain, lam, soft, init=0.0):
        spikes = _run_forward(current, threshold, gain, lam, soft, False, init)[0]
        ctx.save_for_backward((spikes.mean(0) > 0).to(current.dtype), gain)
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):
        active, gain = ctx.saved_tensors
        g = (grad_spikes.mean(0) * active).unsqueeze(0).expand_as(grad_spikes)
        if gain is not None:
            g = g * gain.view(-1, *([1] * (g.dim() - 1)))
        return g.contiguous(), None, None, None, None, None


def multistep_spike(
    current: torch.Tensor,
    threshold: torch.Tensor,
    lam: float = 0.99,
    gain: torch.Tensor | None = None,
    reset: str = "hard",
    surrogate: Surrogate = Surrogate(),
    detach_reset: bool = False,
    init: float = 0.0,
    pool: bool = False,
) -> torch.Tensor:
    """Spikes of a layer of IF/LIF/DLIF neurons over T steps, surrogate BPTT backward.

    Args:
        current: input current I, shape [T, B, ...] (membrane-potential units per step).
        threshold: theta, a 0-dim tensor (may require grad).
        lam: leak lambda (1.0 = IF).
        gain: per-step input gain a[t], shape [T], or None for g[t] = 1.
        reset: ``"hard"`` or ``"soft"``.
        surrogate: surrogate shape for dH/du.
        detach_reset: no gradient through the reset term.
        init: initial membrane potential v[-1] as a fraction of theta.
        pool: return the spikes 2x2-average-pooled, [T, B, C, H/2, W/2] (the neuron and
            ``AvgPool2d(2)`` in one kernel call; needs :func:`pool_rows` of ``current``).
    Returns:
        Spikes in {0, 1}, shape [T, B, ...], dtype of ``current`` (pooled: in {0, 1/4, ..., 1}).
    """
    rows = None
    if pool:
        rows = pool_rows(current)
        if rows is None or surrogate.name in ("pdsg", "pdsg-batch") or (gain is not None and gain.dtype != current.dtype):
            raise ValueError("pooled spikes need the compiled kernel, [T, B, C, H, W] with even H and W "
                             "(robustsnn.neurons.pool_rows) and a surrogate other than pdsg")
    if surrogate.name in ("pdsg", "pdsg-batch"):  # per-channel width: the hooked kernel
        from .gradhooks import PDSG, hooked_spike

        hook = PDSG(surrogate.width, over_batch=surrogate.name == "pdsg-batch")
        return hooked_spike(current, threshold, lam, gain, reset, hook, detach_reset, init)
    return _bptt_spikes(current, threshold, lam, gain, reset, surrogate, detach_reset, init, rows)


def _bptt_spikes(current, threshold, lam, gain, reset, surrogate, detach_reset, init, rows=None):
    """:func:`multistep_spike` past its checks; ``rows``: :func:`pool_rows` of ``current`` to pool, or None."""
    threshold = torch.as_tensor(threshold, dtype=current.dtype, device=current.device)
    once = repeated_source(current)
    if once is not None and kernels.supports(once) and kernels.get() is not None and (
            gain is None or gain.dtype == current.dtype):
        return _MultiStepSpike.apply(once, threshold, gain, float(lam), reset == "soft", surrogate, detach_reset,
                                     float(init), current.shape[0], rows)
    return _MultiStepSpike.apply(current, threshold, gain, float(lam), reset == "soft", surrogate, detach_reset,
                                 float(init), 0, rows)


def multistep_spike_bptr(current, threshold, lam=0.99, gain=None, reset="hard", init=0.0):
    """As :func:`multistep_spike` (same forward), with the backprop-through-rate backward.

    Gradient to ``current[t]``: ``mean_t'(dL/ds[t']) * 1[mean_t s > 0] * g[t]``; none to
    threshold or gain.
    """
    threshold = torch.as_tensor(threshold, dtype=current.dtype, device=current.device)
    return _MultiStepSpikeBPTR.apply(current, threshold, gain, float(lam), reset == "soft", float(init))


class SpikingNeuron(nn.Module):
    """A layer of multi-step spiking neurons; thin wrapper over :func:`multistep_spike`.

    Input and output are [T, B, ...]. Holds ``threshold`` (parameter or buffer) and,
    for DLIF, ``gain`` of length ``time_steps``. The gradient mode is set from outside by
    :func:`robustsnn.estimators.estimator`; the membrane state is never stored.
    """

    def __init__(self, config: NeuronConfig, time_steps: int):
        super().__init__()
        self.config = config
        th = torch.tensor(float(config.threshold))
        if config.learn_threshold:
            self.threshold = nn.Parameter(th)
        else:
            self.register_buffer("threshold", th)
        if config.kind == "dlif":
            self.gain = nn.Parameter(torch.ones(time_steps))
        else:
            self.gain = None
        self.grad_mode = GradMode()

    def effective_threshold(self) -> torch.Tensor:
        """theta clamped to the configured floor (0-dim tensor)."""
        return self.threshold.clamp_min(self.config.threshold_floor)

    def _gain_for(self, T: int) -> torch.Tensor | None:
        if self.gain is None:
            return None
        if self.gain.shape[0] != T:
            raise ValueError(
                f"this DLIF layer was built for T={self.gain.shape[0]} steps but got T={T}; "
                "DLIF's per-step gain fixes T, rebuild or load the model with that T"
            )
        return self.gain

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        """Spikes [T, B, ...] for input current [T, B, ...] (ReLU of the current in ``ann`` mode).

        With ``spike_amplitude="threshold"`` the spikes are theta * s. A half-precision current
        (bf16/fp16 autocast) is integrated in float32 and the spikes are returned in its dtype.
        """
        if current.dtype in (torch.bfloat16, torch.float16):
            return self.forward(current.float()).to(current.dtype)
        if self.config.spike_amplitude == "threshold" and self.grad_mode.mode != "ann":
            return self._spikes(current) * self.effective_threshold().to(current.dtype)
        return self._spikes(current)

    def spike_scale(self) -> float:
        """The value of one emitted spike: 1, or theta with ``spike_amplitude="threshold"``."""
        if self.config.spike_amplitude == "threshold":
            return float(self.effective_threshold().detach())
        return 1.0

    def pooled(self, current: torch.Tensor) -> torch.Tensor | None:
        """This layer's spikes for ``current`` [T, B, C, H, W] followed by 2x2 / stride-2 average
        pooling, [T, B, C, H/2, W/2], computed in one kernel call (the spikes are never written
        out); same values and gradients as ``AvgPool2d(2)(self(current))``. None where that path
        does not apply (then run the two modules): a gradient mode other than surrogate BPTT, a
        spike hook or a PDSG surrogate, theta-valued spikes, half precision, or no
        :func:`pool_rows` for ``current``."""
        cfg, gm = self.config, self.grad_mode
        surrogate = gm.surrogate or cfg.surrogate
        if gm.mode != "bptt" or gm.hook is not None or surrogate.name in ("pdsg", "pdsg-batch") \
                or cfg.spike_amplitude != "one":
            return None
        rows = pool_rows(current)
        gain = self._gain_for(current.shape[0])
        if rows is None or (gain is not None and gain.dtype != current.dtype):
            return None
        theta = self.effective_threshold()
        needs_grad = torch.is_grad_enabled() and (
            current.requires_grad or theta.requires_grad or (gain is not None and gain.requires_grad)
        )
        if not needs_grad:
            return _run_forward(current, theta.to(current.dtype), gain, cfg.lam, cfg.reset == "soft", False,
                                cfg.init_potential, pool=rows)[0]
        return _bptt_spikes(current, theta, cfg.lam, gain, cfg.reset, surrogate, cfg.detach_reset, cfg.init_potential,
                            rows)

    def _spikes(self, current: torch.Tensor) -> torch.Tensor:
        cfg, gm = self.config, self.grad_mode
        gain = self._gain_for(current.shape[0])
        if gm.mode == "ann":
            c = current if gain is None else current * gain.view(-1, *([1] * (current.dim() - 1)))
            return torch.relu(c)
        theta = self.effective_threshold()
        needs_grad = torch.is_grad_enabled() and (
            current.requires_grad or theta.requires_grad or (gain is not None and gain.requires_grad)
        )
        if not needs_grad:  # inference: no saved membrane, no autograd node
            return _run_forward(current, theta.to(current.dtype), gain, cfg.lam, cfg.reset == "soft", False,
                                cfg.init_potential)[0]
        if gm.hook is not None:
            from .gradhooks import hooked_spike

            return hooked_spike(current, theta, cfg.lam, gain, cfg.reset, gm.hook, cfg.detach_reset, cfg.init_potential)
        if gm.mode == "bptr":
            return multistep_spike_bptr(current, theta, cfg.lam, gain, cfg.reset, cfg.init_potential)
        surrogate = gm.surrogate or cfg.surrogate
        return multistep_spike(current, theta, cfg.lam, gain, cfg.reset, surrogate, cfg.detach_reset,
                               cfg.init_potential)

    def extra_repr(self) -> str:
        c = self.config
        init = f", init={c.init_potential:g}*theta" if c.init_potential else ""
        amp = ", spikes=theta*s" if c.spike_amplitude == "threshold" else ""
        return f"kind={c.kind}, lam={c.lam}, reset={c.reset}{init}{amp}, surrogate={c.surrogate.label()}"


class ReLU(nn.Module):
    """ReLU activation of the ANN twin.

    Carries a ``threshold`` buffer so that the ANN and SNN twins (IF/LIF) have the same
    state_dict keys; ReLU itself ignores it. Conversion overwrites it with the balanced
    threshold before copying into the SNN.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("threshold", torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def qcfs(x: torch.Tensor, clip: torch.Tensor, levels: int, grad_scale: float = 1.0) -> torch.Tensor:
    r"""Quantisation-clip-floor-shift activation (Bu et al., ICLR 2022).

    .. math:: h(x) = \lambda\, \mathrm{clip}\Big(\tfrac{1}{L}\big\lfloor \tfrac{x L}{\lambda} + \tfrac12 \big\rfloor, 0, 1\Big)

    with :math:`L` = ``levels`` and the clip :math:`\lambda` = ``clip``. The floor passes
    its gradient straight through, so both ``x`` and ``clip`` get gradients; the clip's is
    multiplied by ``grad_scale`` (the value is unchanged). An IF neuron with threshold
    :math:`\lambda`, soft reset and :math:`v[-1] = \lambda/2` fires :math:`L\, h(x)/\lambda`
    times in :math:`T = L` steps for a constant input ``x``.

    Args:
        x: pre-activation, any shape.
        clip: :math:`\lambda > 0`, a 0-dim tensor (learnable).
        levels: :math:`L \ge 1`.
        grad_scale: factor on the clip's gradient.
    Returns:
        h(x), the shape of ``x``, values in {0, lambda/L, ..., lambda}.
    """
    if grad_scale != 1.0:
        clip = clip * grad_scale + (clip - clip * grad_scale).detach()
    z = x * (levels / clip) + 0.5
    z = z + (torch.floor(z) - z).detach()
    return clip * torch.clamp(z / levels, 0.0, 1.0)


class QCFS(nn.Module):
    r"""QCFS activation of the ANN twin (:func:`qcfs`); its learnable clip is named ``threshold``.

    The name matches the SNN twin's threshold, so conversion copies the clip into the
    threshold with the weights. ``levels`` is the number of quantisation steps L (the SNN's
    T at which conversion is exact up to the order of spikes). The clip's gradient sums over
    every activation of the layer, so it is scaled by :math:`1/\sqrt{N L}` (N activations
    per sample), as LSQ (Esser et al., ICLR 2020) scales a learnt step size: unscaled, one SGD
    step at lr 0.1 can push the clip below zero and silence the layer.
    """

    def __init__(self, levels: int = 8, clip: float = 2.0):
        super().__init__()
        if int(levels) < 1:
            raise ValueError(f"QCFS levels must be >= 1, got {levels}")
        self.levels = int(levels)
        self.threshold = nn.Parameter(torch.tensor(float(clip)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_sample = x[0].numel() if x.dim() > 1 else x.numel()
        scale = 1.0 / math.sqrt(max(1, per_sample) * self.levels)
        return qcfs(x, self.threshold.clamp_min(1e-3), self.levels, scale)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"
