"""ANN -> SNN conversion: percentile thresholds, layer-by-layer balancing, BN adaptation, masks, agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustsnn import checkpoint
from robustsnn import layers as L
from robustsnn.convert import adapt_batchnorm, convert, percentile
from robustsnn.data import DataNotFoundError, batches, load_dataset
from robustsnn.errors import UsageError
from robustsnn.models import build, register, spiking_layers
from robustsnn.sparsity import masked_modules
from robustsnn.sparsity.prune import prune_lwm


@register("_test_mlp")
def _mlp(config, act):
    """16 -> 6 -> 5 -> K without biases or BN: the currents are known in closed form."""
    return nn.Sequential(L.Flatten(), L.Linear(16, 6, bias=False), act(), L.Linear(6, 5, bias=False), act(),
                         L.Linear(5, config.num_classes, bias=False))


def mlp_ann(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build("_test_mlp", "ann", image_size=4, num_classes=3)


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build("cnn", "ann", image_size=8, num_classes=3, width=0.25, mean=(0.4,), std=(0.3,))


def reference_if(current: torch.Tensor, theta: float) -> torch.Tensor:
    """IF neurons with hard reset, written out: m = v + I; s = [m >= theta]; v = m (1 - s)."""
    v = torch.zeros_like(current[0])
    out = []
    for i in current:
        m = v + i
        s = (m >= theta).float()
        out.append(s)
        v = m * (1 - s)
    return torch.stack(out)


def test_percentile_is_the_nearest_rank_without_interpolation():
    t = torch.randn(1234, generator=torch.Generator().manual_seed(0))
    for q in (0, 50, 99.7, 100):
        assert percentile(t, q) == pytest.approx(float(np.percentile(t.numpy(), q, method="nearest")))
    assert percentile(torch.arange(1001.0), 99.7) == 997.0


def test_thresholds_are_the_percentiles_of_the_known_currents_layer_by_layer():
    ann = mlp_ann()
    w1, w2 = ann.body[1].weight.detach(), ann.body[3].weight.detach()
    g = torch.Generator().manual_seed(1)
    xa, xb = torch.rand(5, 1, 4, 4, generator=g), torch.rand(7, 1, 4, 4, generator=g)
    xb[:, :, :2] = 1.0  # a second batch with a different distribution
    T, q, scale = 6, 99.7, 0.5
    snn = convert(ann, [xa, xb, torch.ones(3, 1, 4, 4)], time_steps=4, calib_time_steps=T, percentile=q,
                  scale=scale, n_calib_batches=2)

    def pct(z):
        return float(np.percentile(z.numpy(), q, method="nearest"))

    # Layer 1: current = W1 x at every step (direct encoding); theta_1 = max over batches of its percentile.
    cur1 = [(x.flatten(1) @ w1.T).expand(T, -1, -1) for x in (xa, xb)]
    p1 = [pct(c) for c in cur1]
    assert p1[0] != p1[1]
    theta1 = max(p1)
    # Layer 2: current = W2 spikes_1, with the spikes of layer 1 at theta_1 (set before balancing layer 2).
    p2 = [pct(reference_if(c, theta1) @ w2.T) for c in cur1]
    theta2 = max(p2)
    (n1, s1), (n2, s2) = spiking_layers(snn)
    assert float(s1.threshold.detach()) == pytest.approx(scale * theta1, rel=1e-6)
    assert float(s2.threshold.detach()) == pytest.approx(scale * theta2, rel=1e-6)
    # Learnable thresholds, IF neurons, weights copied verbatim.
    assert isinstance(s1.threshold, nn.Parameter) and s1.threshold.requires_grad
    assert s1.config.kind == "if" and s1.config.lam == 1.0 and s1.config.reset == "hard"
    assert snn.config.time_steps == 4
    assert torch.equal(snn.body[1].weight, ann.body[1].weight)


def test_options_reach_the_neurons():
    ann = mlp_ann()
    snn = convert(ann, [torch.rand(4, 1, 4, 4)], time_steps=3, calib_time_steps=5, reset="soft",
                  learn_threshold=False, threshold_floor=0.1, surrogate="exp:2")
    for _, n in spiking_layers(snn):
        assert n.config.reset == "soft" and n.config.threshold_floor == 0.1 and n.config.surrogate.name == "exp"
        assert not isinstance(n.threshold, nn.Parameter)


def test_bn_adaptation_reestimates_statistics_and_keeps_affine():
    ann = tiny_cnn()
    with torch.no_grad():
        for m in ann.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    g = torch.Generator().manual_seed(0)
    cal = [torch.rand(6, 1, 8, 8, generator=g) for _ in range(3)]
    snn = convert(ann, cal, time_steps=3, calib_time_steps=5, n_calib_batches=3)
    bn, ann_bn = snn.body[1], ann.body[1]
    # The first BN sees the analog conv1 output, the same at every step: its new statistics
    # are those of conv1(normalise(x)) pooled over the calibration batches.
    z = torch.cat([ann.body[0](ann.normalize(x)) for x in cal]).detach().double()
    assert torch.allclose(bn.running_mean.double(), z.mean((0, 2, 3)), atol=1e-5)
    n = 3 * z.numel() // z.shape[1]  # T * B * H * W values per channel; unbiased as torch's BN
    assert torch.allclose(bn.running_var.double(), z.var((0, 2, 3), unbiased=False) * n / (n - 1), rtol=1e-5)
    for a, b in ((bn, ann_bn), (snn.body[5], ann.body[5])):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert not torch.allclose(snn.body[5].running_mean, ann.body[5].running_mean)
    assert not snn.training
    # Without adaptation the ANN's statistics stay.
    kept = convert(ann, cal, time_steps=3, calib_time_steps=5, bn_adapt=False)
    assert torch.equal(kept.body[5].running_mean, ann.body[5].running_mean)
    # adapt_batchnorm works on an ANN too (e.g. after pruning) and keeps the model in eval mode.
    assert adapt_batchnorm(ann, cal) == 2
    assert torch.allclose(ann.body[1].running_mean.double(), z.mean((0, 2, 3)), atol=1e-5)


def test_masks_transfer_and_survive_a_checkpoint(tmp_path):
    ann = tiny_cnn()
    prune_lwm(ann, 0.9)
    snn = convert(ann, [torch.rand(4, 1, 8, 8)], time_steps=2, calib_time_steps=4)
    assert [n for n, _ in masked_modules(snn)] == [n for n, _ in masked_modules(ann)]
    for (_, a), (_, s) in zip(masked_modules(ann), masked_modules(snn)):
        assert torch.equal(a.weight_mask, s.weight_mask) and torch.equal(a.weight, s.weight)
    checkpoint.save(tmp_path / "snn", snn)
    loaded = checkpoint.load(tmp_path / "snn")
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), snn(x))
    assert [float(n.threshold.detach()) for _, n in spiking_layers(loaded)] == [float(n.threshold.detach()) for _, n in spiking_layers(snn)]


def test_bad_input_is_refused():
    ann = mlp_ann()
    x = [torch.rand(2, 1, 4, 4)]
    snn = build("_test_mlp", "snn", image_size=4, num_classes=3)
    with pytest.raises(UsageError, match="ANN"):
        convert(snn, x)
    with pytest.raises(UsageError, match="DLIF"):
        convert(ann, x, neuron="dlif")
    with pytest.raises(UsageError, match=r"\[0, 1\]"):
        convert(ann, [x[0] * 255])
    with pytest.raises(UsageError, match="no calibration"):
        convert(ann, [])
    with pytest.raises(UsageError, match="percentile"):
        convert(ann, x, percentile=0)


@pytest.fixture(scope="module")
def fashion_ann():
    try:
        train = load_dataset("fashion-mnist", "train", download=False).subset(2000)
        test = load_dataset("fashion-mnist", "test", download=False).subset(150)
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST not installed")
    torch.manual_seed(0)
    ann = build("cnn", "ann", width=0.25, mean=train.info.mean, std=train.info.std)
    opt = torch.optim.SGD(ann.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(3):  # 120 steps
        for x, y in batches(train, 50, shuffle=True, seed=0, epoch=epoch):
            loss = F.cross_entropy(ann(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return ann.eval(), train, test


def test_long_simulation_agrees_with_the_ann(fashion_ann):
    """Rate coding: at T = 64 (thresholds balanced at T_c = 32, no scaling) the SNN predicts as the ANN."""
    ann, train, test = fashion_ann
    cal = [x for x, _ in batches(train, 24, shuffle=True, seed=1)]
    snn = convert(ann, cal, time_steps=64, calib_time_steps=32, n_calib_batches=2, scale=1.0)
    x = test.images.float() / 255
    with torch.no_grad():
        ann_pred, snn_pred = ann(x).argmax(1), snn(x).argmax(1)
    assert (ann_pred == test.labels).float().mean() > 0.7  # the ANN learned something
    assert (snn_pred == ann_pred).float().mean() >= 0.9


def test_cli_convert(tmp_path):
    import typer
    from typer.testing import CliRunner

    from robustsnn.cli import convert as convert_cli
    from robustsnn.data import dataset_info

    info = dataset_info("fashion-mnist")
    torch.manual_seed(0)
    ann = build("cnn", "ann", width=0.25, mean=info.mean, std=info.std)
    prune_lwm(ann, 0.5)
    checkpoint.save(tmp_path / "ann", ann, dataset=info.name)
    app = typer.Typer()
    convert_cli.register(app)
    app.command("noop")(lambda: None)
    args = ["convert", str(tmp_path / "ann"), "--out", str(tmp_path / "snn"), "--time-steps", "4", "--calib-steps", "8",
            "--calib-batches", "2", "--calib-batch-size", "8", "--eval-images", "20", "--reset", "soft"]
    try:
        res = CliRunner().invoke(app, args)
    except DataNotFoundError:  # pragma: no cover
        pytest.skip("Fashion-MNIST not installed")
    if isinstance(res.exception, DataNotFoundError):
        pytest.skip("Fashion-MNIST not installed")
    assert res.exit_code == 0, res.output
    snn = checkpoint.load(tmp_path / "snn")
    assert snn.config.kind == "snn" and snn.config.time_steps == 4 and snn.config.neuron.reset == "soft"
    assert len(masked_modules(snn)) == 4
    meta = checkpoint.read_meta(tmp_path / "snn")
    assert meta["conversion"]["percentile"] == 99.7 and len(meta["conversion"]["thresholds"]) == 3
    res = CliRunner().invoke(app, ["convert", str(tmp_path / "snn"), "--out", str(tmp_path / "x")])
    assert isinstance(res.exception, UsageError)
