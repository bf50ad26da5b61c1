"""SpikingJelly and snnTorch networks under robustsnn's estimators and evaluation (robustsnn.interop).

The peers are optional: install them into the test environment with
``pip install --no-deps spikingjelly snntorch``; these tests skip without them.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import synthetic_fmnist
from robustsnn.errors import UsageError
from robustsnn.estimators import estimator, parse_estimator
from robustsnn.interop import ForeignSNN, wrap

T = 3


def _sj():
    """SpikingJelly's activation_based modules (skips the test without the peer)."""
    pytest.importorskip("spikingjelly")
    from types import SimpleNamespace

    from spikingjelly.activation_based import functional, layer, neuron

    return SimpleNamespace(functional=functional, layer=layer, neuron=neuron)


class SJNet(nn.Module):
    """A SpikingJelly CNN; multi-step ('m') or single-step ('s', its own loop over time)."""

    def __init__(self, mode="m", v_reset=0.0):
        super().__init__()
        sj = _sj()
        self.mode = mode
        self.body = nn.Sequential(
            sj.layer.Conv2d(1, 4, 3, padding=1), sj.neuron.LIFNode(tau=2.0, v_reset=v_reset),
            sj.layer.AvgPool2d(4), sj.layer.Flatten(), sj.layer.Linear(4 * 7 * 7, 32),
            sj.neuron.IFNode(v_reset=None), sj.layer.Linear(32, 10),
        )
        sj.functional.set_step_mode(self, mode)
        with torch.no_grad():
            self.body[0].weight.mul_(6.0)
            self.body[4].weight.mul_(4.0)

    def forward(self, x):
        if self.mode == "s":
            return sum(self.body(x) for _ in range(T)) / T
        return self.body(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0)


class SnnTorchNet(nn.Module):
    def __init__(self, init_hidden=False):
        super().__init__()
        snn = pytest.importorskip("snntorch")
        self.init_hidden = init_hidden
        self.fc1 = nn.Linear(784, 64)
        self.lif1 = snn.Leaky(beta=0.9, init_hidden=init_hidden)
        self.fc2 = nn.Linear(64, 10)
        with torch.no_grad():
            self.fc1.weight.mul_(8.0)

    def forward(self, x):
        mem = None if self.init_hidden else self.lif1.reset_mem()
        out = 0
        for _ in range(T):
            cur = self.fc1(x.flatten(1))
            spk = self.lif1(cur) if self.init_hidden else self.lif1(cur, mem)
            if not self.init_hidden:
                spk, mem = spk
            out = out + self.fc2(spk)
        return out / T


def _input_grad(model, x, est=None):
    xr = x.clone().requires_grad_(True)
    if est is None:
        out = model(xr)
    else:
        with estimator(model, parse_estimator(est)):
            out = model(xr)
    F.cross_entropy(out, torch.arange(x.shape[0]) % 10).backward()
    return out.detach(), xr.grad


@pytest.fixture()
def x():
    return torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ SpikingJelly
def test_spikingjelly_multistep_lif_and_if_become_robustsnn_neurons_with_the_same_forward_and_gradient(x):
    sj = _sj()
    net = SJNet("m")
    w = wrap(net)
    assert isinstance(w, ForeignSNN) and w.converted == ["body.1", "body.5"] and w.slots == []
    sj.functional.reset_net(net)
    ref_out, ref_grad = _input_grad(net, x)  # SpikingJelly's own autograd with its Sigmoid surrogate
    out, grad = _input_grad(w, x, "bptt")  # bptt:default = the node's surrogate, mapped to ours
    assert torch.equal(out, ref_out)
    assert float(grad.abs().sum()) > 0
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-7)
    for est in ("bptr", "ann", "assg", "hart", "rga", "pdsg", "triangle:1"):  # every estimator runs on them
        o, g = _input_grad(w, x, est)
        assert torch.equal(o, ref_out) and torch.isfinite(g).all()


def test_spikingjelly_state_is_reset_before_every_forward(x):
    sj = _sj()
    net = SJNet("m")
    with torch.no_grad():
        first, second = net(x), net(x)  # the library keeps v between calls
        assert not torch.equal(first, second)
        sj.functional.reset_net(net)
        w = wrap(net)
        assert torch.equal(w(x), w(x)) and torch.equal(w(x), net(x))


def test_spikingjelly_single_step_nodes_get_surrogate_slots(x):
    sj = _sj()
    net = SJNet("s")
    w = wrap(net)
    assert w.converted == [] and w.slots == ["body.1", "body.5"]
    sj.functional.reset_net(net)
    ref_out, ref_grad = _input_grad(net, x)
    out, grad = _input_grad(w, x, "sigmoid:1")  # our sigmoid (scale 4) is SpikingJelly's Sigmoid()
    assert torch.equal(out, ref_out)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-7)
    _, own = _input_grad(w, x, "bptt")  # bptt:default calls the library's own surrogate
    torch.testing.assert_close(own, ref_grad, rtol=1e-4, atol=1e-7)
    with pytest.raises(UsageError, match="body.1: the bptr estimator"):
        _input_grad(w, x, "bptr")


def test_spikingjelly_reset_to_a_nonzero_potential_is_not_converted(x):
    w = wrap(SJNet("m", v_reset=0.2))
    assert w.converted == ["body.5"] and w.slots == ["body.1"]
    with pytest.raises(UsageError, match="body.1: the hart estimator"):
        _input_grad(w, x, "hart")


# ------------------------------------------------------------------ snnTorch
def test_snntorch_leaky_gets_our_surrogate_and_its_state_reset(x):
    net = SnnTorchNet()
    w = wrap(net)
    assert w.library == "snntorch" and w.slots == ["lif1"]
    ref_out, ref_grad = _input_grad(net, x)  # snnTorch's default surrogate: atan(alpha=2)
    out, grad = _input_grad(w, x, "atan:1")  # ours, scale 2: the same shape
    assert torch.equal(out, ref_out) and float(grad.abs().sum()) > 0
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-7)
    for est in ("assg", "pdsg", "triangle:0.5"):
        assert torch.isfinite(_input_grad(w, x, est)[1]).all()
    with pytest.raises(UsageError, match="lif1: the ann estimator"):
        _input_grad(w, x, "ann")
    hidden = SnnTorchNet(init_hidden=True)
    with torch.no_grad():
        assert not torch.equal(hidden(x), hidden(x))  # init_hidden keeps the membrane between calls
        wh = wrap(hidden)
        assert torch.equal(wh(x), wh(x))


# ------------------------------------------------------------------ evaluate, CLI
def _train(net, data, steps=60):
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = data.images.float() / 255, data.labels
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (32,), generator=g)
        opt.zero_grad()
        if isinstance(net, SJNet):
            _sj().functional.reset_net(net)
        F.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    return net.eval()


@pytest.mark.parametrize("make", [lambda: SJNet("m"), lambda: SnnTorchNet()], ids=["spikingjelly", "snntorch"])
def test_evaluate_accepts_a_foreign_network_and_attacks_it(make):
    import robustsnn

    torch.manual_seed(0)
    data = synthetic_fmnist(256)
    net = _train(make(), data)
    res = robustsnn.evaluate(net, (data.images[:24], data.labels[:24]), preset="quick", eps=0.3, n=24,
                             diagnostics=False)
    assert res.clean_acc > 0.5
    assert res.robust_acc < res.clean_acc - 0.2


SCRIPT = '''
import torch
from torch import nn
from spikingjelly.activation_based import layer, neuron, functional

def build():
    torch.manual_seed(0)
    net = nn.Sequential(layer.Flatten(), layer.Linear(784, 32), neuron.LIFNode(tau=2.0), layer.Linear(32, 10))
    functional.set_step_mode(net, "m")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x.unsqueeze(0).repeat(2, 1, 1, 1, 1)).mean(0)

    return Net()
'''


def test_cli_evaluates_a_model_file(tmp_path):
    _sj()
    from typer.testing import CliRunner

    from robustsnn.cli import app
    from test_data import make_mnist_like

    make_mnist_like(tmp_path / "data", "test", 16, 0, False)
    script = tmp_path / "net.py"
    script.write_text(SCRIPT)
    out = tmp_path / "r.json"
    args = ["evaluate", "--model-file", f"{script}:build", "--data", "fashion-mnist", "--data-dir", str(tmp_path / "data"),
            "--preset", "quick", "--n", "8", "--no-diagnostics", "--no-progress", "--no-cache", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    d = json.loads(out.read_text())
    assert d["n"] == 8 and d["settings"]["spiking"]
    bad = CliRunner().invoke(app, [*args[:2], f"{script}:missing", *args[3:]])
    assert bad.exit_code != 0 and "defines no 'missing'" in str(bad.exception or bad.output)


def test_presets_drop_the_estimators_a_surrogate_slot_cannot_give():
    import robustsnn

    data = synthetic_fmnist(16)
    res = robustsnn.evaluate(SnnTorchNet(), (data.images, data.labels), preset="pgd-ens", eps=0.1, n=8,
                             diagnostics=False)
    labels = [m["label"] for m in res.results[0].members]
    assert len(labels) == 17 and not any(lbl.endswith(("@bptr", "@ann")) for lbl in labels)
    assert any("2 members dropped" in note for note in res.notes)
