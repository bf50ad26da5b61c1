"""Attacks: budgets, restored model state, estimators, EOT, and strength against references."""

from __future__ import annotations

import pytest
import torch

from robustsnn import build
from robustsnn.attacks import (
    APGD,
    APGDT,
    FAB,
    FGSM,
    PGD,
    RFGSM,
    GaussianNoise,
    RFGSMStable,
    Square,
    Transfer,
    check_eps,
)
from robustsnn.attacks.eot import predict
from robustsnn.attacks.toy import toy_data, trained_toy_model
from robustsnn.neurons import SpikingNeuron


@pytest.fixture(scope="module")
def snn():
    return trained_toy_model("snn")


@pytest.fixture(scope="module")
def ann():
    return trained_toy_model("ann")


@pytest.fixture(scope="module")
def test_batch():
    return toy_data("test", 200)


def acc(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# ------------------------------------------------------------------ budgets
@pytest.mark.parametrize("bad", [8, 1.5, 255])
def test_eps_above_one_is_refused_with_a_unit_hint(snn, bad):
    with pytest.raises(ValueError, match=rf"eps={bad:g} is above 1: budgets are in pixel units \[0,1\]; did you mean {bad:g}/255\?"):
        PGD(snn, eps=bad)


def test_negative_eps_is_refused_and_l2_may_exceed_one(snn):
    with pytest.raises(ValueError, match="negative"):
        check_eps(-0.1)
    assert check_eps(1.5, "L2") == 1.5  # an L2 length, e.g. MNIST's usual budget
    with pytest.raises(ValueError, match="pixels in \\[0, 1\\]"):
        PGD(snn, eps=0.1)(torch.full((2, 1, 28, 28), 2.0), torch.zeros(2, dtype=torch.long))


CASES = [
    (FGSM, {}),
    (RFGSM, {}),
    (RFGSM, {"loss": "kl"}),
    (PGD, {"steps": 3}),
    (PGD, {"steps": 3, "norm": "L2"}),
    (PGD, {"steps": 2, "restarts": 2, "estimator": "bptr"}),
    (PGD, {"steps": 2, "estimator": "ann"}),
    (APGD, {"steps": 3}),
    (APGD, {"steps": 3, "loss": "dlr", "norm": "L2"}),
    (APGDT, {"steps": 3, "n_target_classes": 2}),
    (FAB, {"steps": 3, "n_target_classes": 2}),
    (Square, {"n_queries": 20}),
    (Transfer, {"steps": 2}),
    (GaussianNoise, {"draws": 2}),
]


@pytest.mark.parametrize("cls,kw", CASES, ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(CASES)])
def test_attack_stays_in_budget_and_restores_the_model(snn, test_batch, cls, kw):
    x, y = test_batch[0][:24], test_batch[1][:24]
    norm = kw.get("norm", "Linf")
    eps = 1.0 if norm == "L2" else 0.1
    snn.train()  # the attack must switch to eval (BN statistics untouched) and switch back
    bn_before = [b.clone() for n, b in snn.named_buffers() if "running" in n]
    modes_before = [n.grad_mode for n in snn.modules() if isinstance(n, SpikingNeuron)]
    try:
        x_adv = cls(snn, eps=eps, **kw)(x, y)
        assert snn.training and all(m.training for m in snn.modules())
    finally:
        snn.eval()
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-5) + 1e-6
    assert all(torch.equal(a, b) for a, b in zip(bn_before, [b for n, b in snn.named_buffers() if "running" in n]))
    assert [n.grad_mode for n in snn.modules() if isinstance(n, SpikingNeuron)] == modes_before
    assert all(p.requires_grad and p.grad is None for p in snn.parameters())  # FAB calls backward()


def test_rfgsm_variants_follow_their_definitions(snn, test_batch):
    x, y = test_batch[0][:32], test_batch[1][:32]
    # Tramer's: a random sign step of alpha, then eps - alpha along the gradient sign, projected
    a = RFGSM(snn, eps=0.1, alpha=0.04)(x, y)
    assert float((a - x).abs().max()) <= 0.1 + 1e-6
    # the robust-stable seed's: Gaussian start of std sigma and one step of eps, no projection
    b = RFGSMStable(snn, eps=0.05, sigma=0.01)(x, y)
    inner = (b - x)[(x > 0.2) & (x < 0.8)].abs()  # away from the [0, 1] clip
    assert float(inner.max()) > 0.05  # the noise is not projected away ...
    assert float(inner.max()) < 0.05 + 6 * 0.01  # ... and the step is eps
    # the inner loss is pluggable: KL to the clean prediction gives another direction than CE
    kl = RFGSM(snn, eps=0.1, loss="kl")(x, y)
    ce = RFGSM(snn, eps=0.1, loss="ce")(x, y)
    assert not torch.equal(kl, ce)
    custom = RFGSM(snn, eps=0.1, loss=lambda z, y, c: -z.gather(1, y[:, None]).squeeze(1))(x, y)
    assert custom.shape == x.shape


# ------------------------------------------------------------------ strength
def test_pgd_drives_a_trained_snn_and_ann_to_near_zero_at_large_eps(snn, ann, test_batch):
    x, y = test_batch
    for model in (snn, ann):
        assert acc(model, x, y) > 0.7
        assert acc(model, PGD(model, eps=0.3, steps=10)(x, y), y) <= 0.02


def test_accuracy_falls_with_eps_and_pgd_beats_fgsm(snn, test_batch):
    x, y = test_batch[0][:100], test_batch[1][:100]
    accs = [acc(snn, PGD(snn, eps=e, steps=10)(x, y), y) for e in (0.02, 0.05, 0.1)]
    assert accs[0] > accs[1] > accs[2]
    assert acc(snn, PGD(snn, eps=0.05, steps=10)(x, y), y) < acc(snn, FGSM(snn, eps=0.05)(x, y), y)


def test_our_pgd_agrees_with_autoattack_apgd_ce_on_an_ann(ann, test_batch):
    from pyautoattack.autopgd_base import APGDAttack

    x, y = test_batch
    eps = 0.05
    ours = acc(ann, PGD(ann, eps=eps, steps=20, restarts=2)(x, y), y)
    ref_attack = APGDAttack(ann, n_iter=50, norm="Linf", eps=eps, seed=0, loss="ce", device=x.device)
    reference = acc(ann, ref_attack.perturb(x, y), y)
    assert 0.15 < reference < 0.7  # a budget where the comparison means something
    assert abs(ours - reference) <= 0.05, (ours, reference)
    # our wrapper runs AutoAttack's iterations unchanged (only the random start is drawn per sample)
    wrapped = acc(ann, APGD(ann, eps=eps, steps=50, seed=0)(x, y), y)
    assert abs(wrapped - reference) <= 0.03


@pytest.mark.parametrize("cls,kw", [(APGD, {"steps": 5}), (APGDT, {"steps": 5, "n_target_classes": 2})])
def test_apgd_verdicts_do_not_depend_on_the_other_samples_of_the_batch(snn, test_batch, cls, kw):
    x, y = test_batch[0][:48], test_batch[1][:48]
    attack = cls(snn, eps=0.05, **kw)
    together = attack(x, y)
    apart = torch.cat([attack(x[i:i + 8], y[i:i + 8]) for i in range(0, 48, 8)])
    assert torch.allclose(together, apart, atol=1e-5)
    fooled = lambda a: snn(a).argmax(1) != y
    assert torch.equal(fooled(together), fooled(apart)) and 0 < int(fooled(together).sum()) < 48
    # ... and the start is random: another seed gives other adversarial images
    assert not torch.allclose(cls(snn, eps=0.05, seed=1, **kw)(x, y), together)


def test_estimator_changes_the_snn_attack_but_not_the_ann_attack(snn, ann, test_batch):
    x, y = test_batch[0][:32], test_batch[1][:32]
    a = PGD(snn, eps=0.05, steps=3, estimator="triangle:1")(x, y)
    b = PGD(snn, eps=0.05, steps=3, estimator="rectangle:0.25")(x, y)
    assert not torch.equal(a, b)
    c = PGD(ann, eps=0.05, steps=3, estimator="triangle:1")(x, y)
    d = PGD(ann, eps=0.05, steps=3, estimator="rectangle:0.25")(x, y)
    assert torch.equal(c, d)


def test_randomness_is_per_sample_and_seeded(snn, test_batch):
    x, y = test_batch[0][:40], test_batch[1][:40]
    ids = torch.arange(40)
    full = PGD(snn, eps=0.05, steps=3, seed=3)(x, y, ids=ids)
    part = PGD(snn, eps=0.05, steps=3, seed=3)(x[10:20], y[10:20], ids=ids[10:20])
    assert torch.allclose(full[10:20], part, atol=1e-5)
    other = PGD(snn, eps=0.05, steps=3, seed=4)(x, y, ids=ids)
    assert not torch.equal(full, other)
    # without ids every call draws fresh (reproducible) noise, as training needs
    atk = RFGSM(snn, eps=0.1)
    assert not torch.equal(atk(x, y), atk(x, y))


def test_poisson_model_gets_eot_gradients_and_majority_votes(test_batch):
    torch.manual_seed(0)
    model = build("cnn", kind="snn", time_steps=2, width=0.25, encoding="poisson").eval()
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    x, y = test_batch[0][:8], test_batch[1][:8]
    attack = PGD(model, eps=0.1, steps=2)
    assert attack.eot == 8  # default for a stochastic model
    attack(x, y)
    assert len(calls) == 2 * 8 + 8  # every step averages 8 passes; the final check too
    calls.clear()
    predict(model, x, votes=5)
    assert len(calls) == 5
    # two votes of 9 agree far more often than two single passes
    a, b = predict(model, x, votes=9), predict(model, x, votes=9)
    assert a.shape == (8,) and int((a == b).sum()) >= 6
