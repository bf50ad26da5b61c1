"""Channels-last feature maps and the fused neuron + 2x2 pooling, against the plain paths.

Channels-last (robustsnn.layout) changes only strides: pooling and the neuron give the same
values bit for bit on either layout, batch norm and convolution equal torch's to rounding.
The fused neuron + AvgPool2d(2) (SpikingNeuron.pooled, layers.Sequential) gives the pooled
spikes of the two modules bit for bit and their gradients to summation order. Flatten + Linear
on a channels-last map (Linear.flattened) equals the two modules to rounding.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import kernel_backend
from robustsnn import kernels
from robustsnn.layers import AvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, Sequential
from robustsnn.layout import channels_last, memory_order, set_channels_last, channels_last_mode
from robustsnn.models import build
from robustsnn.neurons import NeuronConfig, SpikingNeuron, multistep_spike, pool_rows
from robustsnn.surrogates import Surrogate

KERNEL = kernels.get()
needs_kernel = pytest.mark.skipif(KERNEL is None, reason="compiled neuron kernel unavailable (fallback in use)")
CL = torch.channels_last
settings_ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _cl5(x):
    """[T, B, C, H, W] with channels-last strides per step (as a channels-last conv's output, unflattened)."""
    return x.flatten(0, 1).contiguous(memory_format=CL).unflatten(0, x.shape[:2])


def test_memory_order_finds_the_layout_or_refuses():
    x = torch.rand(3, 2, 4, 5, 6)
    assert memory_order(x) == (0, 1, 2, 3, 4)
    assert memory_order(_cl5(x)) == (0, 1, 3, 4, 2)
    assert memory_order(x[:, :, ::2]) is None  # gaps: no dense order
    assert memory_order(x.unsqueeze(0).expand(2, *x.shape)) is None  # time stride 0


def test_mode_switch_and_bad_values(monkeypatch):
    saved = channels_last_mode()
    with channels_last(False):
        assert channels_last_mode() == "off"
        with channels_last("on"):
            assert channels_last_mode() == "on"
    assert channels_last_mode() == saved
    with pytest.raises(ValueError, match="one of auto, on, off"):
        set_channels_last("sideways")
    import robustsnn.layout as layout

    monkeypatch.setitem(layout._STATE, "mode", None)
    monkeypatch.setenv("ROBUSTSNN_CHANNELS_LAST", "maybe")
    with pytest.raises(ValueError, match="ROBUSTSNN_CHANNELS_LAST"):
        channels_last_mode()
    monkeypatch.setenv("ROBUSTSNN_CHANNELS_LAST", "0")
    assert channels_last_mode() == "off"


def test_model_runs_channels_last_and_matches_the_nchw_model():
    """float64: the default SNN (DLIF, so gains get gradients) gives the same logits and
    gradients on either layout (convolutions differ by rounding only); its conv outputs are
    channels-last under auto on the CPU and NCHW with the layout off."""
    torch.manual_seed(0)
    model = build("cnn", "snn", neuron="dlif", time_steps=3).double()
    x = torch.rand(5, 1, 28, 28, dtype=torch.float64)
    seen = {}
    model.body[4].register_forward_hook(lambda m, i, o: seen.__setitem__("conv2", o))
    out = {}
    for mode in ("off", "auto"):
        model.zero_grad()
        with channels_last(mode):
            y = model(x)
        y.square().sum().backward()
        out[mode] = (y.detach(), [p.grad.clone() for p in model.parameters()])
        flat = seen["conv2"].flatten(0, 1)
        assert flat.is_contiguous() == (mode == "off")
        assert flat.is_contiguous(memory_format=CL) == (mode == "auto")
    torch.testing.assert_close(out["auto"][0], out["off"][0], rtol=1e-10, atol=1e-12)
    for a, b in zip(out["auto"][1], out["off"][1]):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_batch_norm_on_channels_last_is_torchs():
    torch.manual_seed(1)
    ours, ref = BatchNorm2d(6).double(), torch.nn.BatchNorm2d(6).double()
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5), ours.bias.uniform_(-0.2, 0.2)
    ref.load_state_dict(ours.state_dict())
    x = (torch.randn(7, 6, 5, 4, dtype=torch.float64) * 3 + 1).contiguous(memory_format=CL).requires_grad_(True)
    up = torch.randn(7, 6, 5, 4, dtype=torch.float64)
    a, b = ours(x), ref(x)
    assert a.is_contiguous(memory_format=CL) and not a.is_contiguous()
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    ga = torch.autograd.grad(a, [x, ours.weight, ours.bias], up)
    gb = torch.autograd.grad(b, [x, ref.weight, ref.bias], up)
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.running_var, ref.running_var, rtol=1e-12, atol=0)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, rtol=1e-12, atol=1e-15)


def test_one_channel_convolution_gives_channels_last_output():
    conv = Conv2d(1, 4, 3, padding=1, bias=False)
    x = torch.rand(2, 1, 9, 9)
    with channels_last("on"):
        y = conv(x)
    assert y.is_contiguous(memory_format=CL) and not y.is_contiguous()
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, conv.weight, padding=1), rtol=1e-5, atol=1e-6)


@needs_kernel
@settings_
@given(n=st.integers(1, 4), c=st.integers(1, 9), h=st.integers(2, 11), w=st.integers(2, 11),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 2**16))
def test_channels_last_pool_kernel_is_avg_pool2d_bit_for_bit(n, c, h, w, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype).contiguous(memory_format=CL).requires_grad_(True)
    up = torch.randn(n, c, h // 2, w // 2, generator=g, dtype=dtype)
    with kernel_backend("cpp"):
        ours = AvgPool2d(2)(x)
        (g_ours,) = torch.autograd.grad(ours, x, up)
    ref = torch.nn.functional.avg_pool2d(x.contiguous(), 2)
    (g_ref,) = torch.autograd.grad(ref, x, up)
    assert torch.equal(ours, ref) and torch.equal(g_ours, g_ref)
    if c > 1 and h > 3 and w > 3:
        assert ours.is_contiguous(memory_format=CL) and not ours.is_contiguous()


def _grads(fn, leaves, up):
    for t in leaves:
        t.grad = None
    s = fn()
    (s * up).sum().backward()
    return [s.detach()] + [t.grad.clone() for t in leaves]


def _neuron_space(surrogates, **more):
    """Hypothesis strategies of the neuron settings the kernel comparisons below vary, plus ``more``."""
    return dict(T=st.integers(1, 5), b=st.integers(1, 3), dtype=st.sampled_from([torch.float32, torch.float64]),
                reset=st.sampled_from(["hard", "soft"]), name=st.sampled_from(surrogates),
                detach_reset=st.booleans(), init=st.sampled_from([0.0, 0.5]), use_gain=st.booleans(),
                last=st.booleans(), seed=st.integers(0, 2**16), **more)


def _one_step_current(b, c, h, w, g, dtype, last):
    """A [b, c, h, w] leaf current (channels-last if ``last``) to be repeated over time."""
    leaf = (torch.rand(b, c, h, w, generator=g, dtype=dtype) * 1.6 - 0.3)
    return leaf.contiguous(memory_format=CL if last else torch.contiguous_format).requires_grad_(True)


@needs_kernel
@settings_
@given(**_neuron_space(["triangle", "atan", "sigmoid", "rectangle"], c=st.integers(1, 6),
                       h=st.sampled_from([2, 4, 6]), w=st.sampled_from([2, 4, 8]), broadcast=st.booleans()))
def test_fused_pool_matches_neuron_then_avg_pool2d(T, b, c, h, w, dtype, reset, name, detach_reset, init, use_gain,
                                                  broadcast, last, seed):
    """multistep_spike(pool=True) against avg_pool2d of multistep_spike (both on the kernel): pooled
    spikes identical, gradients of the current, threshold and gain equal to summation order; on
    contiguous and channels-last currents, repeated over time or not."""
    g = torch.Generator().manual_seed(seed)
    if broadcast:
        leaf = _one_step_current(b, c, h, w, g, dtype, last)
        make = lambda: leaf.unsqueeze(0).expand(T, *leaf.shape)  # noqa: E731
    else:
        x = torch.rand(T, b, c, h, w, generator=g, dtype=dtype) * 1.6 - 0.3
        leaf = (_cl5(x) if last else x).requires_grad_(True)
        make = lambda: leaf  # noqa: E731
    theta = torch.tensor(0.7, dtype=dtype, requires_grad=True)
    gain = (1 + 0.3 * torch.rand(T, generator=g, dtype=dtype)).requires_grad_(True)
    up = torch.randn(T, b, c, h // 2, w // 2, generator=g, dtype=dtype)
    sur = Surrogate(name, 1.0)
    args = (theta, 0.9, gain if use_gain else None, reset, sur, detach_reset, init)
    leaves = [leaf, theta] + ([gain] if use_gain else [])
    with kernel_backend("cpp"):
        assert pool_rows(make()) is not None
        fused = _grads(lambda: multistep_spike(make(), *args, pool=True), leaves, up)
        plain = _grads(lambda: torch.nn.functional.avg_pool2d(
            multistep_spike(make(), *args).flatten(0, 1), 2).unflatten(0, (T, b)), leaves, up)
    assert torch.equal(fused[0], plain[0]), "pooled spikes differ"
    for u, v in zip(fused[1:], plain[1:]):
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(u, v, rtol=tol, atol=tol)


def test_pool_rows_refuses_odd_sizes_and_other_layouts():
    assert pool_rows(torch.rand(2, 1, 3, 5, 4)) is None
    assert pool_rows(torch.rand(2, 1, 3, 4, 4).permute(0, 1, 2, 4, 3)) is None
    if KERNEL is not None:
        assert pool_rows(torch.rand(2, 1, 3, 4, 6)) == (6, 1)
        assert pool_rows(_cl5(torch.rand(2, 1, 3, 4, 6))) == (18, 3)


@needs_kernel
def test_sequential_fuses_only_without_hooks():
    """Spike counting hooks see the neuron's own spikes: with a hook the pair runs unfused;
    without one the fused pair gives the same output."""
    torch.manual_seed(2)
    neuron = SpikingNeuron(NeuronConfig("lif"), 3)
    seq = Sequential(neuron, AvgPool2d(2))
    x = torch.rand(3, 2, 4, 6, 6) * 2
    calls = []
    import robustsnn.neurons as N

    real = N._kernel_forward
    try:
        # the pooled kernel call is the one given pool_rows (its 9th argument)
        N._kernel_forward = lambda *a: (len(a) > 8 and a[8] is not None and calls.append(1)) or real(*a)
        fused = seq(x)
        assert calls == [1]
        seen = []
        h = neuron.register_forward_hook(lambda m, i, o: seen.append(o))
        hooked = seq(x)
        h.remove()
    finally:
        N._kernel_forward = real
    assert calls == [1] and len(seen) == 1 and set(seen[0].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(fused, hooked)
    assert torch.equal(fused, torch.nn.functional.avg_pool2d(neuron(x).flatten(0, 1), 2).unflatten(0, (3, 2)))


@pytest.mark.parametrize("lead", [(5,), (3, 2)])
def test_flatten_linear_on_channels_last_equals_the_two_modules(lead):
    """float64: Linear.flattened reads the channels-last map in place and permutes the weight's
    columns instead; output and the gradients of map, weight and bias equal flatten-then-linear.
    On NCHW maps it declines (None); a hook on Flatten sees the (C, H, W)-ordered flatten."""
    torch.manual_seed(3)
    lin = Linear(6 * 4 * 5, 7).double()
    seq = Sequential(Flatten(), lin)
    base = torch.randn(*lead, 6, 4, 5, dtype=torch.float64)
    x = _cl5(base) if len(lead) == 2 else base.contiguous(memory_format=CL)
    assert not x.is_contiguous()
    x.requires_grad_(True)
    up = torch.randn(*lead, 7, dtype=torch.float64)
    ref = lin(x.flatten(-3))
    ref_g = torch.autograd.grad((ref * up).sum(), [x, lin.weight, lin.bias])
    fused = []
    real = lin.flattened
    lin.flattened = lambda t: fused.append(real(t)) or fused[-1]
    out = seq(x)
    assert len(fused) == 1 and fused[0] is out  # the pair ran fused
    got_g = torch.autograd.grad((out * up).sum(), [x, lin.weight, lin.bias])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(got_g, ref_g):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert real(base) is None and real(x[..., :3]) is None
    seen = []
    h = seq[0].register_forward_hook(lambda m, i, o: seen.append(o))
    hooked = seq(x)
    h.remove()
    assert len(seen) == 1 and torch.equal(seen[0], x.flatten(-3))
    torch.testing.assert_close(hooked, ref, rtol=1e-12, atol=1e-12)


def test_flatten_linear_uses_hydras_scored_weight():
    """HYDRA's score phase makes ``weight`` a masked property: the fused flatten + linear multiplies
    by the masked weight too, so the scored SNN gives the same logits and score gradients on
    either layout (float64)."""
    from robustsnn.sparsity.hydra import attach_scores

    torch.manual_seed(4)
    model = build("cnn", "snn", neuron="lif", time_steps=2).double()
    scores = attach_scores(model, 0.7)
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    out = {}
    for mode in ("off", "on"):
        with channels_last(mode):
            y = model(x)
        out[mode] = (y.detach(), torch.autograd.grad(y.square().sum(), scores))
    torch.testing.assert_close(out["on"][0], out["off"][0], rtol=1e-10, atol=1e-12)
    for a, b in zip(out["on"][1], out["off"][1]):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    assert out["on"][1][-2].abs().sum() > 0  # the flattened linear layer's scores get a gradient


@needs_kernel
@settings_
@given(**_neuron_space(["triangle", "atan", "exp", "ste"], c=st.integers(1, 5), h=st.sampled_from([2, 4, 5]),
                       w=st.sampled_from([2, 4, 6]), repeated=st.booleans(), pool=st.booleans()))
def test_recomputed_membrane_gives_the_saved_membranes_gradients(T, b, c, h, w, dtype, reset, name, detach_reset,
                                                                  init, use_gain, repeated, last, pool, seed):
    """The kernel's backward that recomputes the membrane from the current (the default) against the
    one that reads the forward's saved membrane: spikes and the gradients of current, threshold and
    gain identical bit for bit, plain and pooled, NCHW and channels-last, for a current repeated over
    time (the case that recomputes) given as the model gives it or as a bare stride-0 view."""
    from robustsnn.neurons import recompute_membrane
    from robustsnn.timerepeat import repeat_over_time

    pool = pool and h % 2 == 0
    g = torch.Generator().manual_seed(seed)
    leaf = _one_step_current(b, c, h, w, g, dtype, last)
    if repeated:
        make = lambda: repeat_over_time(leaf, T)  # noqa: E731
    else:
        make = lambda: leaf.unsqueeze(0).expand(T, *leaf.shape)  # noqa: E731
    theta = torch.tensor(0.7, dtype=dtype, requires_grad=True)
    gain = (1 + 0.3 * torch.rand(T, generator=g, dtype=dtype)).requires_grad_(True)
    up = torch.randn(T, b, c, *((h // 2, w // 2) if pool else (h, w)), generator=g, dtype=dtype)
    args = (theta, 0.9, gain if use_gain else None, reset, Surrogate(name, 1.0), detach_reset, init)
    leaves = [leaf, theta] + ([gain] if use_gain else [])
    out = {}
    with kernel_backend("cpp"):
        for on in (True, False):
            with recompute_membrane(on):
                out[on] = _grads(lambda: multistep_spike(make(), *args, pool=pool), leaves, up)
    for u, v in zip(out[True], out[False]):
        assert torch.equal(u, v)


@needs_kernel
def test_a_repeated_current_keeps_one_step_for_the_backward():
    """With the membrane recomputed, the neuron of a current repeated over T steps saves the
    [B, ...] current for its backward instead of the [T, B, ...] membrane."""
    from robustsnn.neurons import recompute_membrane
    from robustsnn.timerepeat import repeat_over_time

    leaf = torch.rand(3, 4, 6, 6).requires_grad_(True)
    theta = torch.tensor(0.5, requires_grad=True)
    saved = {}
    for on in (True, False):
        sizes = []
        with recompute_membrane(on), kernel_backend("cpp"), torch.autograd.graph.saved_tensors_hooks(
                lambda t: sizes.append(t.numel()) or t, lambda t: t):
            multistep_spike(repeat_over_time(leaf, 5), theta, 0.9)
        saved[on] = max(sizes)
    assert saved[True] == leaf.numel() and saved[False] == 5 * leaf.numel()
