"""The fused multi-step neuron against a plain reference loop of T autograd steps.

The reference below is written from the equations in DESIGN.md section 3, with
its own surrogate spike function; spikes must match exactly and every gradient
(input, threshold, DLIF gain) within 1e-5.
"""

import math

import pytest
import torch

from robustsnn.neurons import NeuronConfig, SpikingNeuron, multistep_spike, multistep_spike_bptr
from robustsnn.surrogates import SURROGATES, Surrogate, surrogate_grad

D = torch.float64  # the reference runs in double precision


def ref_surrogate(u, name, width, alpha):
    """Surrogate derivatives written out independently of robustsnn.surrogates."""
    if name == "triangle":
        return torch.clamp(width - u.abs(), min=0) / width**2
    if name in ("exp", "exp-d"):
        return alpha * torch.exp(-width * u.abs())
    if name == "rectangle":
        return (u.abs() < width / 2).to(u.dtype) / width
    if name == "ste":
        return torch.ones_like(u)
    if name == "sigmoid":
        s = 1 / (1 + torch.exp(-alpha * u / width))
        return alpha / width * s * (1 - s)
    if name == "atan":
        return alpha / 2 / (1 + (math.pi / 2 * alpha * u / width) ** 2) / width
    raise AssertionError(name)


class RefSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, name, width, alpha):
        ctx.save_for_backward(u)
        ctx.args = (name, width, alpha)
        return (u >= 0).to(u.dtype)

    @staticmethod
    def backward(ctx, g):
        (u,) = ctx.saved_tensors
        return g * ref_surrogate(u, *ctx.args), None, None, None


def reference(current, theta, lam, gain, reset, name, width, alpha, detach_reset=False, init=0.0):
    """Plain loop: v[-1] = init*theta; m = lam*v + g*I; s = H(m - theta); hard/soft reset."""
    v = torch.zeros_like(current[0]) + init * theta
    out = []
    for t in range(current.shape[0]):
        g = 1.0 if gain is None else gain[t]
        m = lam * v + g * current[t]
        s = RefSpike.apply(m - theta, name, width, alpha)
        out.append(s)
        sr = s.detach() if detach_reset else s
        v = m * (1 - sr) if reset == "hard" else m - theta * sr
    return torch.stack(out)


CASES = [
    ("if", 1.0, "hard"), ("if", 1.0, "soft"),
    ("lif", 0.9, "hard"), ("lif", 0.9, "soft"),
    ("dlif", 0.8, "hard"), ("dlif", 0.8, "soft"),
]


def _inputs(T=6, shape=(3, 5, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    current = (torch.rand(T, *shape, generator=g, dtype=D) * 1.6 - 0.2).requires_grad_(True)
    theta = torch.tensor(0.7, dtype=D, requires_grad=True)
    gain = (1 + 0.3 * torch.rand(T, generator=g, dtype=D)).requires_grad_(True)
    upstream = torch.randn(T, *shape, generator=g, dtype=D)
    return current, theta, gain, upstream


def _grads(fn, current, theta, gain, upstream, use_gain):
    for t in (current, theta, gain):
        t.grad = None
    s = fn()
    (s * upstream).sum().backward()
    return s.detach(), current.grad.clone(), theta.grad.clone(), gain.grad.clone() if use_gain else None


@pytest.mark.parametrize("kind,lam,reset", CASES)
@pytest.mark.parametrize("name", ["triangle", "exp", "rectangle", "sigmoid", "atan", "ste"])
@pytest.mark.parametrize("detach_reset,init", [(False, 0.0), (True, 0.0), (False, 0.5)])
def test_fused_neuron_matches_reference_loop(kind, lam, reset, name, detach_reset, init):
    current, theta, gain, up = _inputs()
    use_gain = kind == "dlif"
    sur = Surrogate(name, 0.8)
    ours = _grads(lambda: multistep_spike(current, theta, lam, gain if use_gain else None, reset, sur, detach_reset,
                                          init), current, theta, gain, up, use_gain)
    ref = _grads(lambda: reference(current, theta, lam, gain if use_gain else None, reset, name, 0.8, sur.alpha,
                                   detach_reset, init), current, theta, gain, up, use_gain)
    assert torch.equal(ours[0], ref[0]), "spikes differ"
    assert ours[0].sum() > 0 and ours[0].sum() < ours[0].numel(), "test case must have some but not all spikes"
    torch.testing.assert_close(ours[1], ref[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[2], ref[2], atol=1e-5, rtol=1e-6)
    if use_gain:
        torch.testing.assert_close(ours[3], ref[3], atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("kind,lam,reset", CASES)
def test_float32_module_matches_reference(kind, lam, reset):
    """The nn.Module in float32 gives the reference's spikes and input gradients."""
    cfg = NeuronConfig(kind=kind, leak=lam, threshold=0.7, reset=reset, learn_threshold=True)
    layer = SpikingNeuron(cfg, time_steps=6).float()
    current, _, _, up = _inputs()
    x = current.detach().float().requires_grad_(True)
    s = layer(x)
    (s * up.float()).sum().backward()
    x64 = current.detach().clone().requires_grad_(True)
    gain = layer.gain.detach().double() if layer.gain is not None else None
    r = reference(x64, torch.tensor(0.7, dtype=D), lam, gain, reset, "triangle", 1.0, 1.0)
    (r * up).sum().backward()
    assert torch.equal(s.double(), r)
    torch.testing.assert_close(x.grad.double(), x64.grad, atol=1e-5, rtol=1e-5)


def test_gradients_against_finite_differences_on_smooth_part():
    """With the STE surrogate, a detached reset and no spike, the surrogate gradient is the exact
    gradient of sum_t up[t]*(m[t]-theta) along the membrane path: check it by finite differences."""
    T = 5
    current = torch.rand(T, 4, dtype=D) * 0.1  # never reaches threshold 1
    current.requires_grad_(True)
    up = torch.randn(T, 4, dtype=D)
    s = multistep_spike(current, torch.tensor(1.0, dtype=D), 0.9, None, "hard", Surrogate("ste"), detach_reset=True)
    assert s.sum() == 0
    (s * up).sum().backward()

    def smooth(i):
        v, tot = torch.zeros(4, dtype=D), 0.0
        for t in range(T):
            m = 0.9 * v + i[t]
            tot = tot + (up[t] * (m - 1.0)).sum()
            v = m
        return tot

    eps = 1e-6
    fd = torch.zeros_like(current)
    for idx in range(current.numel()):
        d = torch.zeros(current.numel(), dtype=D)
        d[idx] = eps
        d = d.view_as(current)
        fd.view(-1)[idx] = (smooth(current.detach() + d) - smooth(current.detach() - d)) / (2 * eps)
    torch.testing.assert_close(current.grad, fd, atol=1e-6, rtol=1e-6)


def test_no_state_between_calls():
    layer = SpikingNeuron(NeuronConfig("lif"), 4)
    x = torch.rand(4, 2, 8) * 2
    assert torch.equal(layer(x), layer(x))


def test_bptr_gradient_is_rate_gradient():
    """BPTR: grad to I[t] = mean_t'(upstream) * 1[rate > 0], broadcast over T."""
    T = 4
    current = torch.tensor([[2.0, 0.1], [0.0, 0.1], [2.0, 0.1], [0.0, 0.1]], dtype=D).requires_grad_(True)
    up = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]], dtype=D)
    s = multistep_spike_bptr(current, torch.tensor(1.0), 1.0, None, "hard")
    (s * up).sum().backward()
    # neuron 0 fires (rate 0.5), neuron 1 never does
    expected = torch.tensor([[2.5, 0.0]] * T, dtype=D)
    torch.testing.assert_close(current.grad, expected)


def test_pdsg_width_scales_with_membrane_spread():
    """pdsg: a layer with twice the potential spread gets a twice wider surrogate."""
    sur = Surrogate("pdsg", 1.0)
    g = torch.Generator().manual_seed(1)
    i = torch.randn(3, 200, generator=g, dtype=D).requires_grad_(True)
    multistep_spike(i, torch.tensor(0.0), 0.0, None, "hard", sur).sum().backward()
    g1 = i.grad.clone()
    i2 = (2 * i.detach()).requires_grad_(True)
    multistep_spike(i2, torch.tensor(0.0), 0.0, None, "hard", sur).sum().backward()
    # with lam=0 m = I, so sigma doubles and the Gaussian density at 2u halves
    torch.testing.assert_close(i2.grad, g1 / 2, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", SURROGATES)
def test_surrogates_integrate_to_about_one(name):
    """Every shape but STE is a density-like bump around 0 (integral ~1 for the default scales)."""
    u = torch.linspace(-40, 40, 400001, dtype=D)
    sur = Surrogate(name, 1.0)
    width = 1.0
    g = surrogate_grad(u, sur, width)
    assert (g >= 0).all()
    if name == "ste":
        return
    integral = torch.trapezoid(g, u)
    expected = {"exp": 2.0, "exp-d": 0.6}.get(name, 1.0)
    assert abs(float(integral) - expected) < 1e-2


def test_dlif_wrong_T_is_a_clear_error():
    layer = SpikingNeuron(NeuronConfig("dlif"), 4)
    with pytest.raises(ValueError, match="built for T=4"):
        layer(torch.rand(3, 2, 5))


@pytest.mark.parametrize("T", [2, 4, 8, 16])
def test_soft_reset_half_threshold_start_rounds_constant_input(T):
    """IF, soft reset, v[-1] = theta/2: a constant input a in [0, theta] gives round(T a / theta) spikes."""
    theta = 0.8
    a = torch.linspace(0, theta, 257, dtype=D)
    # keep away from the exact rounding ties k + 1/2, where the floating-point sum decides
    frac = (T * a / theta) % 1.0
    a = a[(frac - 0.5).abs() > 1e-6]
    cfg = NeuronConfig(kind="if", threshold=theta, reset="soft", init_potential=0.5)
    layer = SpikingNeuron(cfg, time_steps=T).double()
    counts = layer(a.expand(T, -1).contiguous()).sum(0)
    assert torch.equal(counts, torch.round(T * a / theta))
    plain = SpikingNeuron(cfg.with_(init_potential=0.0), time_steps=T).double()
    assert not torch.equal(plain(a.expand(T, -1).contiguous()).sum(0), counts), "the theta/2 start must matter"
