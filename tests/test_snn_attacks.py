"""The SNN-specific attacks and estimators: ASSG + SA-PGD, HART, RGA, PDSG.

Each follows its paper's equations on a case worked by hand, and each breaks more
samples than fixed-surrogate PGD on a model whose potentials sit far from threshold
(the fixed surrogate's gradient vanishes there: attacks/toy.py).
"""

import copy
import math

import pytest
import torch

from robustsnn.attacks import HART, PGD, RGA, SAPGD, Member
from robustsnn.attacks.sapgd import sapgd_direction, step_schedule
from robustsnn.attacks.toy import sharp_potential_model, toy_data, trained_toy_model
from robustsnn.estimators import Estimator, estimator, parse_estimator
from robustsnn.gradhooks import ASSG, SpikeHook, hooked_spike, pdsg_sigma, rga_slope
from robustsnn.neurons import multistep_spike
from robustsnn.surrogates import Surrogate, surrogate_grad

D = torch.float64


def _grad(current, hook, lam, theta=1.0, reset="hard", up=None):
    i = current.clone().requires_grad_(True)
    s = hooked_spike(i, torch.tensor(theta, dtype=D), lam, None, reset, hook)
    (s * (torch.ones_like(s) if up is None else up)).sum().backward()
    return i.grad


# ------------------------------------------------------------------ the hooked kernel
class _Fixed(SpikeHook):
    def derivative(self, u, drive, lam, threshold):
        return surrogate_grad(u, Surrogate("triangle"), 1.0)


@pytest.mark.parametrize("reset,init", [("hard", 0.0), ("soft", 0.0), ("soft", 0.5)])
def test_hooked_kernel_with_a_fixed_surrogate_is_bptt(reset, init):
    """A hook that returns the triangle surrogate gives the BPTT kernel's gradients (current, theta, gain)."""
    g = torch.Generator().manual_seed(0)
    cur = (torch.rand(4, 3, 5, generator=g, dtype=D) * 2)
    out = []
    for fn in ("ref", "hook"):
        i = cur.clone().requires_grad_(True)
        th = torch.tensor(0.9, dtype=D, requires_grad=True)
        gain = torch.tensor([1.0, 0.7, 1.2, 0.9], dtype=D, requires_grad=True)
        if fn == "ref":
            s = multistep_spike(i, th, 0.8, gain, reset, Surrogate("triangle"), init=init)
        else:
            s = hooked_spike(i, th, 0.8, gain, reset, _Fixed(), init=init)
        (s * torch.arange(1, 61, dtype=D).view(4, 3, 5)).sum().backward()
        out.append((s.detach(), i.grad, th.grad, gain.grad))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ PDSG
def test_pdsg_sigma_is_the_running_std_per_sample():
    """sigma[t] = unbiased std of m[0..t] over one sample's neurons (linear layer)."""
    m = torch.tensor([[[1.0, 3.0]], [[5.0, 7.0]]], dtype=D)  # [T=2, B=1, N=2]
    sigma = pdsg_sigma(m)
    torch.testing.assert_close(sigma[0], torch.full((1, 2), math.sqrt(2.0), dtype=D))
    torch.testing.assert_close(sigma[1], torch.full((1, 2), math.sqrt(20.0 / 3), dtype=D))


def test_pdsg_sigma_per_channel_for_conv_and_over_batch_as_the_paper():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(3, 2, 4, 5, 5, generator=g, dtype=D)
    m[:, :, 1] *= 10  # channel 1 spreads 10x more
    s = pdsg_sigma(m)
    ref = m[:2, 0, 1].std()  # steps 0..1, sample 0, channel 1
    torch.testing.assert_close(s[1, 0, 1, 0, 0], ref)
    sb = pdsg_sigma(m, over_batch=True)
    torch.testing.assert_close(sb[2, 1, 3, 4, 4], m[:, :, 3].std())


def test_pdsg_gradient_is_the_shifted_gaussian():
    """lam = 0 (m = I): dL/dI[t] = N(I[t] - theta; sigma[t]/2, sigma[t]^2), sigma the running std."""
    cur = torch.tensor([[[1.0, 3.0]], [[5.0, 7.0]]], dtype=D)
    i = cur.clone().requires_grad_(True)
    multistep_spike(i, torch.tensor(2.0, dtype=D), 0.0, None, "hard", Surrogate("pdsg")).sum().backward()
    sig = torch.tensor([math.sqrt(2.0), math.sqrt(20.0 / 3)], dtype=D).view(2, 1, 1)
    u = cur - 2.0
    expected = torch.exp(-0.5 * ((u - sig / 2) / sig) ** 2) / (sig * math.sqrt(2 * math.pi))
    torch.testing.assert_close(i.grad, expected)


# ------------------------------------------------------------------ ASSG
def test_assg_running_statistics_and_sharpness_follow_the_paper():
    """M <- 0.9 M + 0.1 |u|, D <- 0.9 D + 0.1 ||u| - M|, alpha = a / (M + 1.5 D), atan alpha/2/(1+(pi alpha u/2)^2)."""
    hook = ASSG(A=0.425)
    u1 = torch.tensor([0.5, -2.0], dtype=D)
    hook.derivative(u1, u1, 1.0, torch.tensor(0.0))
    torch.testing.assert_close(hook.M, torch.tensor([0.95, 1.1], dtype=D))
    torch.testing.assert_close(hook.D, torch.tensor([0.045, 0.09], dtype=D))
    u2 = torch.tensor([1.0, 0.0], dtype=D)
    got = hook.derivative(u2, u2, 1.0, torch.tensor(0.0))
    M = 0.9 * torch.tensor([0.95, 1.1], dtype=D) + 0.1 * u2.abs()
    Dv = 0.9 * torch.tensor([0.045, 0.09], dtype=D) + 0.1 * (u2.abs() - M).abs()
    a = 2 * math.tan(math.pi * 0.425) / math.pi
    alpha = a / (M + 1.5 * Dv + 1e-4)
    torch.testing.assert_close(got, alpha / 2 / (1 + (math.pi / 2 * alpha * u2) ** 2))


def test_assg_state_restarts_with_each_attack_call():
    """The estimator gives each neuron a fresh hook per `with` block: statistics start at M = 1, D = 0."""
    model = copy.deepcopy(trained_toy_model("snn"))  # backward() below must not touch the shared model
    x, y = toy_data("test", 4)
    with estimator(model, "assg"):
        hooks = [m.grad_mode.hook for m in model.modules() if getattr(m, "grad_mode", None) is not None]
        x1 = x.clone().requires_grad_(True)
        model(x1).sum().backward()
        assert all(h.M is not None for h in hooks) and len({id(h) for h in hooks}) == len(hooks)
    with estimator(model, "assg"):
        assert all(m.grad_mode.hook.M is None for m in model.modules() if getattr(m, "grad_mode", None) is not None)


# ------------------------------------------------------------------ SA-PGD
def test_sapgd_step_schedule_halves_on_the_papers_checkpoints():
    s = step_schedule(100)
    ends = [22, 41, 57, 70, 80, 87, 93, 99]  # k = 22, 19, 16, 13, 10, 7, then the floor 6
    start = 0
    for j, end in enumerate(ends):
        assert s[start:end] == [0.5**j] * (end - start)
        start = end
    assert s[99] == 0.5**8 and len(s) == 100


def test_sapgd_direction_normalised_momentum():
    g = torch.tensor([[1.0, -3.0]], dtype=D)
    m, v, d = sapgd_direction(g, None, None)
    torch.testing.assert_close(m, torch.tensor([[0.5, -1.5]], dtype=D))
    torch.testing.assert_close(v, torch.tensor([[0.2, 1.8]], dtype=D))
    torch.testing.assert_close(d, torch.tensor([[0.5 / math.sqrt(0.2), -1.5 / math.sqrt(1.8)]], dtype=D))
    m2, v2, d2 = sapgd_direction(g, m, v)
    torch.testing.assert_close(d2, d * 1.5 / math.sqrt(1.8))


# ------------------------------------------------------------------ HART
def test_hart_gradient_is_time_averaged_and_temporally_cut():
    """m = [0.8, 1.3, 0.3] (lam 0.5, spike at t=1); triangle(w=1): [0.8, 0.7, 0.3]; upstream [1, 2, 3]."""
    cur = torch.tensor([[0.8], [0.9], [0.3]], dtype=D)
    up = torch.tensor([[1.0], [2.0], [3.0]], dtype=D)
    est = parse_estimator("hart:1")
    g = _grad(cur, est.hook(), 0.5, up=up)
    torch.testing.assert_close(g, torch.full((3, 1), (0.8 + 1.4 + 0.9) / 3, dtype=D))
    # gamma is in threshold units: theta = 2 and twice the current give the same gradient / 2
    g2 = _grad(2 * cur, est.hook(), 0.5, theta=2.0, up=up)
    torch.testing.assert_close(g2, g / 2)


# ------------------------------------------------------------------ RGA
def test_rga_slope_is_the_papers_piecewise_rate_derivative():
    x = torch.tensor([-0.1, 0.05, 0.1, 1.5, 2.0, 2.1], dtype=D)
    hi = (1 - 0.2 + 0.2 * 0.9) / 1.9
    torch.testing.assert_close(rga_slope(x, 0.9), torch.tensor([0, 0.2, hi, hi, hi, 0], dtype=D))


def test_rga_gradient_uses_the_mean_current_over_theta():
    """theta = 2, mean current 0.1 -> x = 0.05 < 1 - lam: dL/dI[t] = up[t] * 0.2 / 2 (no temporal term)."""
    cur = torch.tensor([[0.3, 3.0], [-0.1, 3.0]], dtype=D)  # neuron 0: mean 0.1; neuron 1: mean 3 -> x = 1.5
    up = torch.tensor([[1.0, 1.0], [2.0, 2.0]], dtype=D)
    g = _grad(cur, parse_estimator("rga").hook(), 0.9, theta=2.0, up=up)
    hi = (1 - 0.2 + 0.2 * 0.9) / 1.9
    torch.testing.assert_close(g, torch.tensor([[0.1, hi / 2], [0.2, hi]], dtype=D))


# ------------------------------------------------------------------ estimators
def test_hook_estimators_parse_label_and_reject_bad_options():
    assert parse_estimator("hart:0.5") == Estimator("hart", None, (("gamma", 0.5),))
    assert parse_estimator("assg:0.4").label() == "assg(A=0.4)"
    assert parse_estimator("rga").label() == "rga"
    with pytest.raises(ValueError, match="bad options"):
        Estimator("hart", None, (("width", 1.0),))
    with pytest.raises(ValueError, match="must lie in"):
        parse_estimator("assg:0.7")
    with pytest.raises(ValueError, match="a number"):
        parse_estimator("hart:wide")


# ------------------------------------------------------------------ strength on a masked model
@pytest.fixture(scope="module")
def sharp():
    model = trained_toy_model("snn")
    x, y = toy_data("test", 64)
    s = sharp_potential_model(model)
    with torch.no_grad():
        assert torch.equal(s(x).argmax(1), model(x).argmax(1))  # same network, potentials 64x farther out
        correct = model(x).argmax(1) == y
    return s, x[correct], y[correct]


def _acc(model, attack, x, y):
    with torch.no_grad():
        return float((model(attack(x, y)).argmax(1) == y).float().mean())


@pytest.mark.parametrize(
    "make",
    [
        lambda m: SAPGD(m, eps=0.1, steps=10),
        lambda m: HART(m, eps=0.1, steps=10),
        lambda m: RGA(m, eps=0.1, steps=10),
        lambda m: PGD(m, eps=0.1, steps=10, estimator="pdsg"),
    ],
    ids=["assg-sapgd", "hart", "rga", "pdsg"],
)
def test_adaptive_attacks_break_what_a_fixed_surrogate_misses(sharp, make):
    model, x, y = sharp
    fixed = _acc(model, PGD(model, eps=0.1, steps=10, estimator="triangle:1"), x, y)
    assert fixed > 0.8  # the fixed surrogate's gradient has (nearly) vanished
    assert _acc(model, make(model), x, y) < fixed - 0.5


def test_new_attacks_are_ensemble_members(sharp):
    """Registry names build the attacks with their own estimators."""
    model, x, y = sharp
    labels = [Member(a, None, {"steps": 5}).build(model, 0.1).label() for a in ("sa-pgd", "hart", "rga")]
    assert labels == ["sa-pgd-5@assg", "hart-pgd-5[gamma=0.5,1,2]", "rga-pgd-5@rga"]
    assert Member("sa-pgd", None, {"steps": 5}).label() == labels[0]
