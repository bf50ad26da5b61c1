"""Efficiency accounting: spike rates, MAC / SOP counts checked by hand, energy, model left unchanged."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustsnn import build
from robustsnn import layers as L
from robustsnn.data import ArrayDataset, dataset_info
from robustsnn.encoding import direct_encode
from robustsnn.metrics import EnergyModel, compare_energy, count_ops, efficiency, fanout, iter_images, spike_rates
from robustsnn.neurons import NeuronConfig, SpikingNeuron
from robustsnn.sparsity import set_mask

T = 2

# Hand-set network: conv 2x2 (1 -> 2 channels, no padding) on a 3x3 image, IF neurons
# (theta = 1, hard reset), flatten (index = 4 c + 2 i + j), linear 8 -> 3.
CONV_W = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[0.0, 0.5], [0.0, 0.5]]]])  # 1 + 2 non-zero weights
FC_W = torch.tensor(
    [
        [1.0, 0, 0, 1, 1, 0, 0, 1],
        [1.0, 0, 0, 1, 0, 0, 0, 0],
        [0.0, 0, 0, 1, 0, 1, 0, 0],
    ]
)  # column non-zeros: c0 2, c1 0, c2 0, c3 3, c4 1, c5 1, c6 0, c7 1; 8 in all
IMAGE = torch.tensor([[0.6, 0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
# Currents, same at both steps: channel 0 = x[i, j] -> [[0.6, 0.2], [0, 1.0]];
# channel 1 = 0.5 x[i, j+1] + 0.5 x[i+1, j+1] -> [[0.6, 0], [0.5, 0]].
# t = 0: m0 = [[.6, .2], [0, 1]]  -> spike ch0 (1,1)                      (flat index 3)
#        m1 = [[.6, 0], [.5, 0]]  -> none
# t = 1: m0 = [[1.2, .4], [0, 1]] -> spikes ch0 (0,0), (1,1)              (flat 0, 3)
#        m1 = [[1.2, 0], [1, 0]]  -> spikes ch1 (0,0), (1,0)              (flat 4, 6)


class Tiny(nn.Module):
    def __init__(self, vary: bool = False):
        super().__init__()
        self.vary = vary
        self.conv = L.Conv2d(1, 2, 2, bias=False)
        self.neuron = SpikingNeuron(NeuronConfig(kind="if", threshold=1.0), T)
        self.flatten = L.Flatten()
        self.fc = L.Linear(8, 3, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(CONV_W)
            self.fc.weight.copy_(FC_W)

    def forward(self, x):
        x = direct_encode(x, T)
        if self.vary:  # an analog input that changes over time
            x = x * torch.tensor([1.0, 0.5]).view(T, 1, 1, 1, 1)
        return self.fc(self.flatten(self.neuron(self.conv(x)))).mean(0)


def image_batch():
    return IMAGE.view(1, 1, 3, 3).clone()


def test_tiny_net_spike_rates_by_hand():
    r = spike_rates(Tiny(), image_batch())
    (layer,) = r["layers"]
    assert layer["neurons"] == 8 and layer["steps"] == 2
    assert layer["rate"] == pytest.approx(5 / 16)  # 1 + 4 spikes over 8 neurons x 2 steps
    assert layer["rate_per_step"] == pytest.approx([1 / 8, 4 / 8])
    assert layer["spikes_per_image"] == 5
    assert r["rate"] == pytest.approx(5 / 16)


def test_tiny_net_operation_counts_by_hand():
    ops = count_ops(Tiny(), image_batch())
    conv, fc = ops["layers"]
    assert (conv["input"], fc["input"]) == ("analog", "spikes")
    # conv: constant analog input -> MACs once; 4 output positions x non-zero weights (1 + 2).
    assert conv["macs"] == 4 * (1 + 2) and conv["macs_dense"] == 4 * 8 and conv["sops"] == 0
    # fc: t=0 spike at flat 3 (3 non-zero weights); t=1 spikes at 0, 3, 4, 6 (2 + 3 + 1 + 0).
    assert fc["sops_per_step"] == [3, 2 + 3 + 1 + 0]
    assert fc["sops"] == 3 + 6
    assert fc["sops_dense"] == 5 * 3  # every spike reaches all 3 outputs
    assert fc["macs"] == 0
    assert fc["input_rate"] == pytest.approx(5 / 16)
    assert conv["ann_macs"] == 12 and fc["ann_macs"] == 8  # ANN: every fc input x its column's non-zeros
    assert conv["ann_macs_dense"] == 32 and fc["ann_macs_dense"] == 24
    t = ops["totals"]
    assert t["snn"] == {"macs": 12, "sops": 9}
    assert t["snn_dense"] == {"macs": 32, "sops": 15}
    assert t["ann"] == {"macs": 12 + 8, "sops": 0}
    assert t["ann_dense"] == {"macs": 32 + 24, "sops": 0}


def test_time_varying_analog_input_is_counted_every_step():
    ops = count_ops(Tiny(vary=True), image_batch())
    assert ops["layers"][0]["input"] == "analog"
    assert ops["layers"][0]["macs"] == T * 12


def test_counts_are_averaged_per_image_and_analog_zeros_still_cost():
    # A black image (binary input on its own!) in its own batch: no spikes, but the analog
    # first layer still costs its dense MACs, and every count is divided by 2 images.
    data = torch.cat([image_batch(), torch.zeros(1, 1, 3, 3)])
    ops = count_ops(Tiny(), data, batch_size=1)
    conv, fc = ops["layers"]
    assert ops["images"] == 2
    assert conv["input"] == "analog" and conv["macs"] == 12
    assert fc["sops"] == (3 + 6) / 2 and fc["sops_per_step"] == [3 / 2, 6 / 2]
    rates = spike_rates(Tiny(), data, batch_size=1)
    assert rates["layers"][0]["rate"] == pytest.approx(5 / 32)


def test_energy_by_hand_and_configurable():
    ops = count_ops(Tiny(), image_batch())
    e = compare_energy(ops)
    assert e["variants"]["snn"]["energy_pj"] == pytest.approx(4.6 * 12 + 0.9 * 9)
    assert e["variants"]["snn_dense"]["energy_pj"] == pytest.approx(4.6 * 32 + 0.9 * 15)
    assert e["variants"]["ann"]["energy_pj"] == pytest.approx(4.6 * 20)
    assert e["variants"]["ann_dense"]["energy_pj"] == pytest.approx(4.6 * 56)
    assert e["savings"]["ann_dense"] == pytest.approx(4.6 * 56 / (4.6 * 12 + 0.9 * 9))
    custom = compare_energy(ops, EnergyModel(e_mac_pj=3.1, e_ac_pj=0.1))
    assert custom["variants"]["snn"]["energy_pj"] == pytest.approx(3.1 * 12 + 0.1 * 9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        EnergyModel().e_ac_pj = 0.0
    with pytest.raises(ValueError):
        EnergyModel(e_mac_pj=-1)


def test_fanout_with_padding_by_hand():
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    expected = torch.tensor([[4.0, 6, 4], [6, 9, 6], [4, 6, 4]])  # corner / edge / centre
    assert torch.equal(fanout(conv, (1, 3, 3))[0], expected)
    with torch.no_grad():
        conv.weight[0, 0, 1, 1] = 0.0  # centre tap pruned: every input loses exactly one
    assert torch.equal(fanout(conv, (1, 3, 3))[0], expected - 1)
    assert torch.equal(fanout(conv, (1, 3, 3), dense=True)[0], expected)


class SpikeSource(nn.Module):
    """Feeds fixed (or pooled) spikes [T, B, C, H, W] to a strided, padded, masked conv, then a linear."""

    def __init__(self, spikes, pool=False):
        super().__init__()
        self.spikes = spikes
        self.neuron = SpikingNeuron(NeuronConfig(kind="if"), spikes.shape[0])
        self.pool = L.AvgPool2d(2) if pool else nn.Identity()
        self.conv = L.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
        self.fc = L.Linear(4 * 2 * 2 if pool else 4 * 4 * 4, 5)

    def forward(self, x):
        s = self.neuron(self.spikes * 2.0)  # threshold 1: reproduces the spikes exactly
        return self.fc(self.conv(self.pool(s)).flatten(2))


@pytest.mark.parametrize("pool", [False, True])
def test_sops_match_the_convolution_formula(pool):
    g = torch.Generator().manual_seed(0)
    spikes = (torch.rand(3, 2, 3, 8, 8, generator=g) < 0.3).float()
    model = SpikeSource(spikes, pool)
    set_mask(model.conv, (torch.rand(model.conv.weight.shape, generator=g) < 0.4).float())
    ops = count_ops(model, torch.zeros(2, 1, 4, 4))
    conv = ops["layers"][0]
    x = model.pool(spikes)
    assert conv["input"] == ("pooled" if pool else "spikes")
    # SOPs = sum_t sum conv2d(x[t] != 0, W != 0): one per (input event, non-zero weight, output) triple.
    pattern = (model.conv.weight != 0).float()
    per_step = [float(F.conv2d((x[t] != 0).float(), pattern, stride=2, padding=1).sum()) / 2 for t in range(3)]
    assert conv["sops_per_step"] == per_step
    dense = sum(float(F.conv2d((x[t] != 0).float(), torch.ones_like(pattern), stride=2, padding=1).sum()) for t in range(3)) / 2
    assert conv["sops_dense"] == dense
    assert conv["sops"] < conv["sops_dense"]
    # every input active at every step would cost exactly T x the ANN's MACs (padding not counted)
    ones = F.conv2d(torch.ones(1, *x.shape[2:]), pattern, stride=2, padding=1).sum()
    assert conv["ann_macs"] == float(ones)


def masked_snn(sparsity=0.8, **kw):
    torch.manual_seed(0)
    model = build("cnn", kind="snn", time_steps=T, width=0.25, threshold=0.2, **kw)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            set_mask(m, (torch.rand(m.weight.shape, generator=g) >= sparsity).float())
    return model


def test_cnn_counts_kinds_bounds_and_ann_twin():
    model = masked_snn()
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    ops = count_ops(model, x, batch_size=4)
    kinds = [r["input"] for r in ops["layers"]]
    assert kinds == ["analog", "pooled", "spikes", "spikes"]
    assert ops["layers"][1]["sops"] > 0  # the test is not vacuous
    for r in ops["layers"][1:]:
        assert 0 < r["nonzero"] < r["weights"]
        assert r["sops"] <= r["sops_dense"] <= T * r["ann_macs_dense"]
        assert r["sops"] <= T * r["ann_macs"]
    # The ANN twin with the same weights, counted on its own, gives the same MACs.
    ann = build("cnn", kind="ann", time_steps=T, width=0.25)
    for m in ann.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_buffer("weight_mask", torch.empty_like(m.weight))
    ann.load_state_dict(model.state_dict())
    ann_ops = count_ops(ann, x)
    assert ann_ops["kind"] == "ann" and "snn" not in ann_ops["totals"]
    assert ann_ops["totals"]["ann"] == ops["totals"]["ann"]
    assert ann_ops["totals"]["ann_dense"] == ops["totals"]["ann_dense"]
    r = efficiency(ann, x)
    assert r["spikes"] is None and r["time_steps"] is None and set(r["energy"]["variants"]) == {"ann", "ann_dense"}
    assert r["energy"]["variants"]["ann"]["energy_pj"] == pytest.approx(4.6 * ops["totals"]["ann"]["macs"])


def test_poisson_input_is_spikes_counted_every_step():
    model = masked_snn(encoding="poisson")
    torch.manual_seed(3)
    ops = count_ops(model, torch.rand(2, 1, 28, 28))
    first = ops["layers"][0]
    assert first["input"] == "spikes" and first["macs"] == 0 and first["sops"] > 0


def test_recording_leaves_the_model_bit_identical():
    model = masked_snn()
    model.train()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.eval()
        out_before = model(x)
        model.train()
    efficiency(model, x, n=3)
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), out_before)


def test_hooks_removed_after_an_error():
    model = masked_snn()
    with pytest.raises(Exception):
        count_ops(model, torch.rand(2, 3, 28, 28))  # wrong channel count: the forward fails
    assert all(not m._forward_hooks for m in model.modules())


def test_efficiency_report_is_json_and_consistent():
    model = masked_snn()
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    r = efficiency(model, x, n=4, batch_size=3)
    json.loads(json.dumps(r))
    assert r["images"] == 4 and r["kind"] == "snn" and r["time_steps"] == T
    assert [l["layer"] for l in r["spikes"]["layers"]] == ["body.2", "body.6", "body.10"]
    assert r["ops"]["totals"] == count_ops(model, x[:4])["totals"]
    assert r["spikes"] == {k: v for k, v in spike_rates(model, x[:4]).items() if k != "images"}
    e = r["energy"]["variants"]
    assert e["snn"]["energy_pj"] < e["snn_dense"]["energy_pj"] and e["ann"]["energy_pj"] < e["ann_dense"]["energy_pj"]
    assert r["memory"]["nonzero"] == sum(l["nonzero"] for l in r["ops"]["layers"])


def test_data_forms_agree():
    g = torch.Generator().manual_seed(6)
    pixels = torch.randint(0, 256, (7, 1, 28, 28), generator=g, dtype=torch.uint8)
    ds = ArrayDataset(pixels, torch.zeros(7, dtype=torch.int64), dataset_info("fashion-mnist"))
    x = pixels.float() / 255
    batches = [(x[:3], None), (x[3:],)]
    from_ds = torch.cat(list(iter_images(ds, n=5, batch_size=2)))
    assert torch.equal(from_ds, x[:5])
    assert torch.equal(torch.cat(list(iter_images(batches, n=5))), x[:5])
    assert torch.equal(torch.cat(list(iter_images(x, batch_size=4))), x)
    model = masked_snn()
    a, b = spike_rates(model, ds, n=5), spike_rates(model, batches, n=5)
    assert a == b and a["images"] == 5


def test_ann_proxy_mode_is_refused():
    from robustsnn.estimators import estimator

    model = masked_snn()
    with estimator(model, "ann"):
        with pytest.raises(ValueError, match="non-binary"):
            spike_rates(model, torch.rand(2, 1, 28, 28))
