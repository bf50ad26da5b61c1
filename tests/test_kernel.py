"""The compiled neuron kernel against the pure-PyTorch loop it replaces.

The kernel is built once per test session (robustsnn.kernels caches the module); where it
cannot build, the comparisons skip and the fallback tests still run. Spikes must be
bit-identical, gradients (input, threshold, DLIF gain) equal within 1e-6 (1e-5 for float32
with the exp-based surrogates, see ``_close``), for every surrogate, reset, detach_reset,
init_potential, gain, dtype and a time-broadcast input.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import kernel_backend
from robustsnn import kernels
from robustsnn.neurons import NeuronConfig, SpikingNeuron, multistep_spike, multistep_spike_bptr
from robustsnn.surrogates import SURROGATES, Surrogate

KERNEL = kernels.get()
needs_kernel = pytest.mark.skipif(KERNEL is None, reason="compiled neuron kernel unavailable (fallback in use)")


backend = kernel_backend


def _run(fn, leaves, upstream):
    for t in leaves:
        t.grad = None
    s = fn()
    (s * upstream).sum().backward()
    return [s.detach()] + [None if t.grad is None else t.grad.clone() for t in leaves]


def _both(fn, leaves, upstream):
    with backend("cpp"):
        ours = _run(fn, leaves, upstream)
    with backend("torch"):
        ref = _run(fn, leaves, upstream)
    return ours, ref


def _close(ours, ref, dtype, name="triangle"):
    """Spikes identical; gradients within 1e-6. Per-element gradients repeat the torch ops (bit for
    bit for triangle, rectangle, ste, atan); sums differ by summation order; exp, exp-d, pdsg and
    sigmoid use the C library's exp, an ulp away from torch's vectorised one in float32, which the
    sigmoid's s(1 - s), the reverse recursion and the sum over a broadcast input amplify up to a
    few 1e-6 there (1e-5 allowed; float64: all within 1e-6)."""
    assert torch.equal(ours[0], ref[0]), "spikes differ"
    for a, b in zip(ours[1:], ref[1:]):
        assert (a is None) == (b is None)
        if a is not None:
            rtol = 1e-6 if dtype == torch.float64 or a.dim() > 1 else 1e-4  # fp32 sums over every neuron
            atol = 1e-5 if dtype == torch.float32 and (name in TRANSCENDENTAL or a.dim() <= 1) else 1e-6
            torch.testing.assert_close(a, b, atol=atol, rtol=rtol, equal_nan=True)  # pdsg on 1 neuron: std NaN


TRANSCENDENTAL = ("exp", "exp-d", "pdsg", "sigmoid")
settings_ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@needs_kernel
@settings_
@given(
    T=st.integers(1, 7),
    shape=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    lam=st.sampled_from([1.0, 0.99, 0.7, 0.0]),
    reset=st.sampled_from(["hard", "soft"]),
    name=st.sampled_from(SURROGATES),
    width=st.sampled_from([0.5, 1.0, 2.0]),
    detach_reset=st.booleans(),
    init=st.sampled_from([0.0, 0.5, 1.0]),
    use_gain=st.booleans(),
    broadcast=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_kernel_matches_torch_loop(T, shape, dtype, lam, reset, name, width, detach_reset, init, use_gain,
                                   broadcast, seed):
    g = torch.Generator().manual_seed(seed)
    if broadcast:  # direct encoding: the same current at every step (stride 0 along T)
        base = (torch.rand(*shape, generator=g, dtype=dtype) * 1.6 - 0.3).requires_grad_(True)
        make = lambda: base.unsqueeze(0).expand(T, *shape)  # noqa: E731
        leaf = base
    else:
        leaf = (torch.rand(T, *shape, generator=g, dtype=dtype) * 1.6 - 0.3).requires_grad_(True)
        make = lambda: leaf  # noqa: E731
    theta = torch.tensor(0.7, dtype=dtype, requires_grad=True)
    gain = (1 + 0.3 * torch.rand(T, generator=g, dtype=dtype)).requires_grad_(True)
    up = torch.randn(T, *shape, generator=g, dtype=dtype)
    sur = Surrogate(name, width)
    leaves = [leaf, theta] + ([gain] if use_gain else [])
    fn = lambda: multistep_spike(make(), theta, lam, gain if use_gain else None, reset, sur, detach_reset, init)  # noqa: E731
    ours, ref = _both(fn, leaves, up)
    _close(ours, ref, dtype, name)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("use_gain", [False, True])
def test_kernel_bptr_and_inference_match(dtype, use_gain):
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(5, 7, 33, generator=g, dtype=dtype) * 1.5).requires_grad_(True)
    gain = (1 + 0.3 * torch.rand(5, generator=g, dtype=dtype)).requires_grad_(True)
    up = torch.randn(5, 7, 33, generator=g, dtype=dtype)
    leaves = [x] + ([gain] if use_gain else [])
    fn = lambda: multistep_spike_bptr(x, torch.tensor(0.9, dtype=dtype), 0.95, gain if use_gain else None,  # noqa: E731
                                      "soft", 0.5)
    ours, ref = _both(fn, leaves, up)
    _close(ours, ref, dtype)
    layer = SpikingNeuron(NeuronConfig("dlif" if use_gain else "lif", init_potential=0.5), 5).to(dtype)
    with torch.no_grad():
        with backend("cpp"):
            a = layer(x)
        with backend("torch"):
            b = layer(x)
    assert torch.equal(a, b)


@needs_kernel
def test_kernel_sums_do_not_depend_on_thread_count():
    """Threshold and gain gradients are reduced in a fixed chunk order, whatever the threads."""
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(4, 5000, generator=g) * 1.5).requires_grad_(True)
    theta = torch.tensor(1.0, requires_grad=True)
    gain = torch.ones(4, requires_grad=True)
    up = torch.randn(4, 5000, generator=g)
    fn = lambda: multistep_spike(x, theta, 0.9, gain, "soft", Surrogate())  # noqa: E731
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _run(fn, [x, theta, gain], up)
        torch.set_num_threads(2)
        two = _run(fn, [x, theta, gain], up)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_forced_fallback_never_calls_the_kernel(monkeypatch):
    """ROBUSTSNN_KERNEL=torch / set_backend("torch"): the torch loop runs even with a kernel loaded."""

    class Broken:
        def forward(self, *a):
            raise AssertionError("kernel called")

        backward = forward

    monkeypatch.setitem(kernels._state, "module", Broken())
    with backend("torch"):
        assert kernels.get() is None
        x = torch.tensor([[0.6, 1.2], [0.6, 0.0]], requires_grad=True)
        s = multistep_spike(x, torch.tensor(1.0), lam=1.0)
        s.sum().backward()
    assert s.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    monkeypatch.setenv("ROBUSTSNN_KERNEL", "torch")
    monkeypatch.setitem(kernels._state, "backend", None)
    assert kernels.backend() == "torch" and kernels.get() is None


def test_build_failure_warns_once_and_falls_back(monkeypatch):
    """A kernel that cannot build gives one KernelWarning and the torch path, not an error."""
    saved = dict(kernels._state)
    monkeypatch.setattr(kernels, "_compile", lambda: (_ for _ in ()).throw(OSError("no compiler here")))
    kernels._state.update(backend="auto", module=None, tried=False)
    try:
        with pytest.warns(kernels.KernelWarning, match="no compiler here"):
            assert kernels.get() is None
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert kernels.get() is None  # no second notice
            x = torch.rand(4, 6, requires_grad=True)
            s = multistep_spike(x, torch.tensor(0.5))
            s.sum().backward()
        assert x.grad is not None
    finally:
        kernels._state.clear()
        kernels._state.update(saved)


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of"):
        kernels.set_backend("cuda-magic")


@needs_kernel
@settings_
@given(
    lead=st.lists(st.integers(1, 5), min_size=1, max_size=2),
    h=st.integers(2, 13),
    w=st.integers(2, 13),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    seed=st.integers(0, 2**16),
)
def test_pool_kernel_is_avg_pool2d_bit_for_bit(lead, h, w, dtype, seed):
    """2x2 / stride-2 average pooling (odd sizes floor, as torch): values and gradients identical."""
    from robustsnn.layers import AvgPool2d

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, h, w, generator=g, dtype=dtype)
    if len(lead) == 1:
        x = x.unsqueeze(0)  # [1, C, H, W]
    x.requires_grad_(True)
    pool = AvgPool2d(2)
    with backend("cpp"):
        ours = pool(x)
        (g_ours,) = torch.autograd.grad(ours, x, torch.ones_like(ours) * 0.3 + ours.detach())
    ref = torch.nn.functional.avg_pool2d(x, 2)
    (g_ref,) = torch.autograd.grad(ref, x, torch.ones_like(ref) * 0.3 + ref.detach())
    assert torch.equal(ours, ref) and torch.equal(g_ours, g_ref)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hook_name", ["assg", "hart", "rga", "pdsg"])
@pytest.mark.parametrize("reset,dlif", [("hard", False), ("soft", True)])
def test_spike_hooks_backward_in_the_kernel_matches_the_torch_loop(dtype, hook_name, reset, dlif):
    """The stronger attacks' hooked backward (ASSG, HART, RGA, PDSG: a per-element derivative, a cut
    temporal path, a time average) in one kernel call, and ASSG's running statistics and atan
    derivative in one kernel pass, against the torch loop: spikes identical, input, threshold and
    gain gradients and ASSG's statistics after three passes within 1e-6 (float64: 1e-12)."""
    from robustsnn.gradhooks import ASSG, HART, PDSG, RGA, hooked_spike

    g = torch.Generator().manual_seed(3)
    T, shape = 5, (3, 4, 6, 6)
    cur = (torch.rand(T, *shape, generator=g, dtype=dtype) * 1.6 - 0.2).requires_grad_(True)
    th = torch.tensor(0.7, dtype=dtype, requires_grad=True)
    gain = (1 + 0.3 * torch.rand(T, generator=g, dtype=dtype)).requires_grad_(True) if dlif else None
    leaves = [cur, th] + ([gain] if dlif else [])
    make = {"assg": lambda: ASSG(), "hart": lambda: HART(0.5), "rga": lambda: RGA(), "pdsg": lambda: PDSG(1.0)}[hook_name]
    runs = {}
    for name in ("cpp", "torch"):
        hook = make()
        with backend(name):
            for it in range(3):  # ASSG's statistics move with every pass
                up = torch.randn(T, *shape, generator=torch.Generator().manual_seed(it), dtype=dtype)
                out = _run(lambda: hooked_spike(cur, th, 0.9, gain, reset, hook, init=0.25), leaves, up)
        runs[name] = (out, hook)
    (ours, h_ours), (ref, h_ref) = runs["cpp"], runs["torch"]
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert torch.equal(ours[0], ref[0])
    for a, b in zip(ours[1:], ref[1:]):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * max(1.0, float(b.abs().max())))
    if hook_name == "assg":
        torch.testing.assert_close(h_ours.M, h_ref.M, rtol=tol, atol=tol)
        torch.testing.assert_close(h_ours.D, h_ref.D, rtol=tol, atol=tol)
