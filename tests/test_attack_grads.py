"""No wasted gradients: attacks never compute parameter gradients, inference paths build no graph.

The one place that guarantees it is :func:`robustsnn.attacks.base.attack_mode`, used by every
attack call: parameters are frozen while the attack runs and their ``requires_grad`` flags
(mixed ones included) come back afterwards, also when the attack raises.
"""

from __future__ import annotations

import pytest
import torch

from robustsnn.attacks import APGD, FAB, FGSM, PGD, RFGSM, Square, Transfer
from robustsnn.attacks.base import attack_mode
from robustsnn.attacks.eot import predict
from robustsnn.attacks.toy import toy_data, trained_toy_model
from robustsnn.neurons import SpikingNeuron
from robustsnn.train.trainer import accuracy

from helpers import synthetic_fmnist, tiny_snn


@pytest.fixture(scope="module")
def snn():
    return trained_toy_model("snn")


@pytest.fixture(scope="module")
def batch():
    x, y = toy_data("test", 16)
    return x, y


def _watch(model):
    """Forward hook recording (grad enabled, any parameter requiring grad) at every model call."""
    seen = []
    h = model.register_forward_hook(
        lambda m, i, o: seen.append((torch.is_grad_enabled(), any(p.requires_grad for p in m.parameters()))))
    return seen, h


@pytest.mark.parametrize("cls,kw", [(FGSM, {}), (RFGSM, {}), (PGD, {"steps": 2}), (APGD, {"steps": 2}),
                                    (FAB, {"steps": 2, "n_target_classes": 2}), (Square, {"n_queries": 5}),
                                    (Transfer, {"steps": 1})])
def test_attacks_freeze_parameters_and_restore_mixed_flags(snn, batch, cls, kw):
    x, y = batch
    params = list(snn.parameters())
    frozen = params[0]
    frozen.requires_grad_(False)  # a caller's own choice must survive the attack
    seen, h = _watch(snn)
    try:
        cls(snn, eps=0.1, **kw)(x, y)
    finally:
        h.remove()
        flags = [p.requires_grad for p in params]
        frozen.requires_grad_(True)
    assert seen or cls is Transfer  # a transfer attack only queries its source model
    assert not any(any_param for _, any_param in seen), "a parameter required grad during the attack"
    assert flags == [p is not frozen for p in params]
    assert all(p.grad is None for p in params)


def test_flags_modes_and_estimators_restored_after_an_exception(snn, batch):
    x, y = batch
    snn.train()
    before = [n.grad_mode for n in snn.modules() if isinstance(n, SpikingNeuron)]

    def boom(logits, y, clean=None):
        raise RuntimeError("loss failed")

    try:
        with pytest.raises(RuntimeError, match="loss failed"):
            PGD(snn, eps=0.1, steps=2, loss=boom, estimator="bptr")(x, y)
        assert all(p.requires_grad and p.grad is None for p in snn.parameters())
        assert all(m.training for m in snn.modules())
        assert [n.grad_mode for n in snn.modules() if isinstance(n, SpikingNeuron)] == before
        with pytest.raises(KeyError):
            with attack_mode(snn, "ann"):
                assert not any(p.requires_grad for p in snn.parameters())
                raise KeyError("inside")
        assert all(p.requires_grad for p in snn.parameters())
    finally:
        snn.eval()


def test_inference_paths_build_no_graph():
    """Clean accuracy (trainer) and clean predictions (evaluation) run without autograd."""
    model = tiny_snn()
    data = synthetic_fmnist(12)
    seen, h = _watch(model)
    try:
        accuracy(model, data, batch_size=8)
        predict(model, torch.rand(4, 1, 28, 28), votes=1)
        PGD(model, eps=0.1, steps=1).logits(torch.rand(4, 1, 28, 28))
    finally:
        h.remove()
    assert len(seen) == 4 and not any(enabled for enabled, _ in seen)
