"""Robust objectives, MPPD, Parseval: formulas on fixed tensors and a robustness gain."""

import math

import pytest
import torch
import torch.nn.functional as F

from robustsnn.attacks.pgd import PGD
from robustsnn.errors import UsageError
from robustsnn.train import TrainConfig, fit, make_objective, parseval_step
from robustsnn.train.mppd import capture_currents, perturbation_energy, select_layers
from robustsnn.train.robust import mart_loss, trades_loss

from helpers import synthetic_fmnist, tiny_snn


def test_mppd_energy_matches_hand_computation():
    # T=3, one neuron, lam=0.5; dI = clean - pert = [1, 2, -1]
    clean = torch.tensor([[[1.0]], [[2.0]], [[0.0]]])
    pert = torch.tensor([[[0.0]], [[0.0]], [[1.0]]])
    # Y0 = 1, Y1 = 0.5*1 + 2 = 2.5, Y2 = 0.5*2.5 - 1 = 0.25 -> V = (1 + 6.25 + 0.0625) / 3
    v = perturbation_energy(clean, pert, 0.5)
    assert math.isclose(float(v), (1 + 6.25 + 0.0625) / 3, rel_tol=1e-6)


def test_mppd_sends_no_gradient_to_the_clean_branch():
    clean = torch.randn(4, 2, 3, requires_grad=True)
    pert = torch.randn(4, 2, 3, requires_grad=True)
    perturbation_energy(clean, pert, 0.9).backward()
    assert clean.grad is None
    assert pert.grad.abs().sum() > 0


def test_mppd_records_the_last_spiking_layer_before_the_gain():
    model = tiny_snn(neuron="dlif")
    with torch.no_grad():
        model.body[10].gain.fill_(3.0)
    layers = select_layers(model)
    assert layers[0][1] is model.body[10]
    with capture_currents(layers) as rec:
        model(torch.rand(2, 1, 28, 28))
    current = rec[0][0]
    assert current.shape == (2, 2, 32)
    # the recorded current is the Linear layer's output itself, not 3 * it (before a[t])
    outs = []
    h = model.body[9].register_forward_hook(lambda _m, _i, o: outs.append(o))
    with capture_currents(layers) as rec2:
        model(torch.rand(2, 1, 28, 28))
    h.remove()
    assert torch.equal(rec2[0][0], outs[0])


def test_objective_with_mppd_adds_rho_times_v():
    torch.manual_seed(0)
    model = tiny_snn().train()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    base = make_objective("gaussian", sigma=0.1, mppd=0.0)
    reg = make_objective("gaussian", sigma=0.1, mppd=2.0)
    torch.manual_seed(1)
    l0, _ = base(model, x, y)
    torch.manual_seed(1)
    l1, _ = reg(model, x, y)
    torch.manual_seed(1)
    xp = x + 0.1 * torch.randn_like(x)
    layers = select_layers(model)
    with capture_currents(layers) as rec:
        model(x), model(xp)
    v = perturbation_energy(rec[0][0], rec[0][1], model.config.neuron.lam)
    assert float(v.detach()) > 0
    torch.testing.assert_close(l1, l0 + 2.0 * v)


def test_parseval_step_equals_its_formula():
    torch.manual_seed(0)
    model = tiny_snn(kind="ann")
    conv_w = model.body[0].weight.detach().clone().view(model.body[0].weight.shape[0], -1)
    lin_w = model.body[12 - 1].weight.detach().clone()  # readout Linear(32 -> 10) has < 200 rows
    parseval_step(model, 0.01)
    expected_conv = 1.01 * conv_w - 0.01 * conv_w @ conv_w.t() @ conv_w
    expected_lin = 1.01 * lin_w - 0.01 * lin_w @ lin_w.t() @ lin_w
    torch.testing.assert_close(model.body[0].weight.view_as(expected_conv), expected_conv)
    torch.testing.assert_close(model.body[11].weight, expected_lin)


def test_parseval_samples_30_percent_of_rows_of_large_linear_layers():
    lin = torch.nn.Linear(4, 400, bias=False)
    before = lin.weight.detach().clone()
    parseval_step(torch.nn.Sequential(lin), 0.01, generator=torch.Generator().manual_seed(0))
    changed = (lin.weight != before).any(1).sum()
    assert int(changed) == 120


def test_trades_and_mart_match_their_formulas_on_fixed_tensors():
    zc = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    za = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    y = torch.tensor([0, 1])
    pc, pa = F.softmax(zc, 1), F.softmax(za, 1)
    ce = -(math.log(pc[0, 0]) + math.log(pc[1, 1])) / 2
    kl = [sum(float(pc[i, j] * (math.log(pc[i, j]) - math.log(pa[i, j]))) for j in range(3)) for i in range(2)]
    assert math.isclose(float(trades_loss(zc, za, y, 6.0)), ce + 6.0 * sum(kl) / 2, rel_tol=1e-5)
    # MART: CE(za) + NLL(log(1 - pa), best wrong class of pa) + beta * mean(KL_i * (1 - pc[i, y_i]))
    ce_adv = -(math.log(pa[0, 0]) + math.log(pa[1, 1])) / 2
    # sample 0: top-2 of pa are classes 0/1 (tie), top is y=0? argsort puts the best last.
    top = pa.argsort(1)[:, -2:]
    other = [int(top[i, -2]) if int(top[i, -1]) == int(y[i]) else int(top[i, -1]) for i in range(2)]
    boost = -(math.log(1.0001 - pa[0, other[0]]) + math.log(1.0001 - pa[1, other[1]])) / 2
    robust = (kl[0] * (1 - pc[0, 0]) + kl[1] * (1 - pc[1, 1])) / 2
    assert other[1] == 2
    assert math.isclose(float(mart_loss(zc, za, y, 4.0)), ce_adv + boost + 4.0 * float(robust), rel_tol=1e-4)


def test_bad_objective_options_are_refused():
    with pytest.raises(UsageError, match="255"):
        make_objective("pgd", eps=8)
    with pytest.raises(UsageError, match="unknown objective"):
        make_objective("madry")
    with pytest.raises(UsageError, match="beta"):
        make_objective("pgd", beta=6)


def test_adversarial_training_is_more_robust_than_natural(tmp_path):
    """On a small separable problem, PGD accuracy at eps=0.2 of an RFGSM-trained SNN beats the natural one."""
    data = synthetic_fmnist(384, seed=1)
    test = synthetic_fmnist(128, seed=2)
    results = {}
    for name, params in [("natural", {}), ("fgsm", {"eps": 0.2})]:
        model = tiny_snn()
        cfg = TrainConfig(epochs=4, batch_size=32, lr=0.05, seed=0, objective=name, objective_params=params)
        fit(model, data, None, cfg, tmp_path / name, progress=False)
        model.eval()
        x, y = test.images.float() / 255, test.labels
        x_adv = PGD(model, eps=0.2, steps=10, estimator="triangle:1")(x, y)
        with torch.no_grad():
            results[name] = (float((model(x).argmax(1) == y).float().mean()),
                             float((model(x_adv).argmax(1) == y).float().mean()))
    assert results["fgsm"][0] > 0.8, results
    assert results["fgsm"][1] > results["natural"][1] + 0.2, results
