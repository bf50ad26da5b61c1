"""Encoders and readout."""

import torch

from robustsnn.encoding import direct_encode, poisson_encode, readout
from helpers import tiny_snn


def test_poisson_rate_equals_pixel_intensity_and_gradient_is_straight_through():
    torch.manual_seed(0)
    x = torch.tensor([[0.0, 0.25, 0.5, 1.0]]).requires_grad_(True)
    s = poisson_encode(x, 4000)
    assert set(s.detach().unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(s.detach().mean(0), x.detach(), atol=0.03, rtol=0)
    assert s[:, 0, 0].sum() == 0 and s[:, 0, 3].sum() == 4000
    s.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 4000.0))


def test_direct_encoding_repeats_and_readout_averages():
    x = torch.rand(3, 1, 2, 2)
    rep = direct_encode(x, 5)
    assert rep.shape == (5, 3, 1, 2, 2) and all(torch.equal(rep[t], x) for t in range(5))
    steps = torch.arange(10.0).view(5, 2, 1)
    torch.testing.assert_close(readout(steps), torch.tensor([[4.0], [5.0]]))


def test_model_logits_are_the_mean_of_per_step_logits():
    model = tiny_snn(time_steps=3).eval()
    x = torch.rand(4, 1, 28, 28)
    steps = model.forward_steps(x)
    assert steps.shape == (3, 4, 10)
    torch.testing.assert_close(model(x), steps.mean(0))


def test_poisson_model_is_stochastic_direct_model_is_not():
    x = torch.rand(4, 1, 28, 28)
    direct = tiny_snn().eval()
    assert torch.equal(direct(x), direct(x))
    poisson = tiny_snn(encoding="poisson").eval()
    first_layer = []
    poisson.body[2].register_forward_hook(lambda _m, _i, out: first_layer.append(out))
    poisson.forward_steps(x)
    poisson.forward_steps(x)
    assert not torch.equal(first_layer[0], first_layer[1]), "Poisson input must change the first layer's spikes"
