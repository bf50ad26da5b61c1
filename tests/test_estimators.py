"""Gradient estimators: exact forward, different backward, restored afterwards."""

import pytest
import torch
import torch.nn.functional as F

from robustsnn.estimators import SEED_ESTIMATORS, estimator, parse_estimator
from robustsnn.models import build_from_config, spiking_layers
from robustsnn.train import TrainConfig, fit

from helpers import synthetic_fmnist, tiny_snn


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = synthetic_fmnist(320)
    model = tiny_snn()
    fit(model, data, None, TrainConfig(epochs=4, batch_size=32, lr=0.05, seed=3), tmp_path_factory.mktemp("t"), progress=False)
    return model.eval(), data


def _input_grad(model, x, y, **est):
    x = x.clone().requires_grad_(True)
    with estimator(model, **est):
        out = model(x)
        F.cross_entropy(out, y).backward()
    return out.detach(), x.grad


def test_eval_mode_keeps_input_gradients(trained):
    model, data = trained
    assert not model.training
    x, y = data.images[:32].float() / 255, data.labels[:32]
    _, g = _input_grad(model, x, y, mode="bptt")
    assert g.abs().sum() > 0
    assert (g != 0).float().mean() > 0.1


def test_estimators_change_only_the_backward(trained):
    model, data = trained
    x, y = data.images[:32].float() / 255, data.labels[:32]
    outs, grads = {}, {}
    for spec in ["bptt", "triangle:0.25", "exp-d:1", "bptr", "ann"]:
        e = parse_estimator(spec)
        outs[spec], grads[spec] = _input_grad(model, x, y, mode=e)
    for spec in outs:
        assert torch.equal(outs[spec], outs["bptt"]), spec
    assert not torch.allclose(grads["bptt"], grads["triangle:0.25"])
    assert not torch.allclose(grads["bptt"], grads["bptr"])


def test_ann_proxy_gradient_is_the_relu_twins(trained):
    """Value from the exact SNN; gradient = ReLU twin's Jacobian^T x dLoss/dlogits at the SNN's logits."""
    model, data = trained
    x, y = data.images[:16].float() / 255, data.labels[:16]
    out, g_proxy = _input_grad(model, x, y, mode="ann")
    ann = build_from_config(model.config.with_(kind="ann"))
    ann.load_state_dict(model.state_dict())
    ann.eval()
    dloss_dlogits = (torch.softmax(out, 1) - F.one_hot(y, 10).float()) / len(y)
    xa = x.clone().requires_grad_(True)
    (ann(xa) * dloss_dlogits).sum().backward()
    torch.testing.assert_close(g_proxy, xa.grad, rtol=1e-4, atol=1e-7)


def test_modes_are_restored_even_after_an_error(trained):
    model, _ = trained
    with pytest.raises(RuntimeError):
        with estimator(model, "bptr"):
            assert all(n.grad_mode.mode == "bptr" for _, n in spiking_layers(model))
            raise RuntimeError("boom")
    assert all(n.grad_mode.mode == "bptt" and n.grad_mode.surrogate is None for _, n in spiking_layers(model))


def test_seed_ensemble_has_19_distinct_estimators():
    labels = [e.label() for e in SEED_ESTIMATORS]
    assert len(labels) == 19 == len(set(labels))


def test_unknown_estimator_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown surrogate"):
        parse_estimator("bptt:nonsense")
