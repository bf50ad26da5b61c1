"""Compute-once encoder: with direct encoding the layers before the first neuron run once, not T times.

Every architecture, in training and evaluation, under every estimator (bptt, bptr, ann proxy),
gives the same logits, input and parameter gradients and batch-norm running statistics as
running the same layers on the T copies (``time_broadcast(False)``, the previous code path).
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from robustsnn import layers as L
from robustsnn.estimators import estimator
from robustsnn.models import build, spiking_layers

ARCHS = ["cnn", "vgg5", "vgg11", "vgg16", "resnet19", "resnet20", "wrn16_4"]
T, B = 3, 3


def _model(name, neuron="lif"):
    torch.manual_seed(0)
    return build(name, "snn", neuron=neuron, time_steps=T, image_size=16, in_channels=3, width=0.125,
                 threshold=0.5, init_potential=0.25 if neuron == "dlif" else 0.0).double()


def _pass(model, x, y, train, est, share):
    model.train(train)
    xr = x.clone().requires_grad_(True)
    with L.time_broadcast(share), estimator(model, est):
        logits = model(xr)
        F.cross_entropy(logits, y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return logits.detach(), xr.grad, grads, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name,neuron", [(a, "lif") for a in ARCHS] + [("cnn", "dlif")])
def test_compute_once_matches_repeated_input(name, neuron):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(B, 3, 16, 16, generator=g, dtype=torch.float64)  # float64: rounding cannot hide a bug
    y = torch.randint(0, 10, (B,), generator=g)
    shared = _model(name, neuron)
    ref = copy.deepcopy(shared)
    for train in (True, False):
        for est in ("bptt", "bptr", "ann"):
            a = _pass(shared, x, y, train, est, True)
            b = _pass(ref, x, y, train, est, False)
            torch.testing.assert_close(a[0], b[0], rtol=1e-12, atol=1e-12, msg=f"logits {train=} {est}")
            # gradients: summation order only (errors relative to the largest entry; BN over 3 samples)
            torch.testing.assert_close(a[1], b[1], rtol=1e-9, atol=1e-9 * float(b[1].abs().max()),
                                       msg=f"input grad {train=} {est}")
            assert a[2].keys() == b[2].keys()
            for k in a[2]:
                torch.testing.assert_close(a[2][k], b[2][k], rtol=1e-9, atol=1e-9 * float(b[2][k].abs().max()),
                                           msg=f"grad {k} {train=} {est}")
            for k in a[3]:  # running statistics (with T*B*H*W in the unbiased factor), weights
                torch.testing.assert_close(a[3][k], b[3][k], rtol=1e-12, atol=1e-14, msg=f"state {k}")


def test_first_neuron_sees_a_broadcast_current():
    """The conv + BN before the first neuron ran once: its input has stride 0 along T."""
    model = _model("cnn").float()
    seen = []
    first = spiking_layers(model)[0][1]
    first.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    for train in (True, False):
        model.train(train)
        model(torch.rand(B, 3, 16, 16))
    assert all(s.shape[0] == T and s.stride(0) == 0 for s in seen)
    with L.time_broadcast(False):
        model(torch.rand(B, 3, 16, 16))
    assert seen[-1].stride(0) != 0


def test_batchnorm_running_variance_counts_all_copies():
    """BN over T identical copies: same output, running var with n = T*B*H*W in n/(n-1)."""
    bn_a, bn_b = L.BatchNorm2d(4, momentum=None), L.BatchNorm2d(4, momentum=None)
    x0 = torch.randn(2, 4, 3, 3)
    rep = x0.unsqueeze(0).expand(5, *x0.shape)
    for _ in range(2):
        out_a = bn_a(rep)
        with L.time_broadcast(False):
            out_b = bn_b(rep)
    assert out_a.stride(0) == 0
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn_a.running_var, bn_b.running_var, rtol=1e-6, atol=0)
    torch.testing.assert_close(bn_a.running_mean, bn_b.running_mean, rtol=1e-6, atol=1e-8)
    assert int(bn_a.num_batches_tracked) == int(bn_b.num_batches_tracked) == 2
    n = 5 * 2 * 3 * 3
    expected = x0.var(dim=(0, 2, 3), correction=0) * n / (n - 1)
    torch.testing.assert_close(bn_a.running_var, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("dlif", [False, True])
def test_neuron_sums_the_gradient_of_a_repeated_current_once(reset, dlif):
    """A neuron fed a current repeated over time (the compute-once path) takes the gradient of the
    [B, ...] source, summed over the steps inside the compiled kernel: equal to the plain loop's
    on T explicit copies, for the current, the threshold and the DLIF gains."""
    from robustsnn import kernels
    from robustsnn.neurons import multistep_spike
    from robustsnn.surrogates import Surrogate
    from test_neurons import reference

    if kernels.get() is None:
        pytest.skip("no compiled kernel here: the repeated current takes the expand path")
    g = torch.Generator().manual_seed(1)
    steps = 5
    src = (torch.rand(4, 3, 6, generator=g, dtype=torch.float64) * 1.6 - 0.2).requires_grad_(True)
    theta = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    gain = (1 + 0.3 * torch.rand(steps, generator=g, dtype=torch.float64)).requires_grad_(True) if dlif else None
    repeated = L._broadcast(src, steps)
    assert L.repeated_source(repeated) is src
    spikes = multistep_spike(repeated, theta, 0.9, gain, reset, Surrogate("triangle", 1.0), init=0.25)
    assert spikes.grad_fn.next_functions[0][0].variable is src  # the neuron's input is src itself: no ExpandBackward
    up = torch.randn(spikes.shape, generator=g, dtype=torch.float64)
    wrt = [src, theta] + ([gain] if dlif else [])
    ours = torch.autograd.grad((spikes * up).sum(), wrt)

    copies = src.detach().clone().requires_grad_(True)
    theta2 = theta.detach().clone().requires_grad_(True)
    gain2 = gain.detach().clone().requires_grad_(True) if dlif else None
    ref = reference(copies.unsqueeze(0).repeat(steps, 1, 1, 1), theta2, 0.9, gain2, reset, "triangle", 1.0, 1.0,
                    init=0.25)
    assert torch.equal(spikes, ref)
    want = torch.autograd.grad((ref * up).sum(), [copies, theta2] + ([gain2] if dlif else []))
    for a, b in zip(ours, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with L.time_broadcast(False):  # sharing off: the expand path, same gradient
        assert L.repeated_source(repeated) is None
