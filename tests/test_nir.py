"""NIR export and import (robustsnn.interop.nirgraph); the snnTorch read-back needs snntorch + nirtorch."""

import numpy as np
import pytest
import torch

from robustsnn.errors import UsageError
from robustsnn.models import build
from robustsnn.neurons import SpikingNeuron
from robustsnn.sparsity import set_mask

nir = pytest.importorskip("nir")
from robustsnn.interop.nirgraph import from_nir, to_nir  # noqa: E402

MEAN, STD = (0.286,), (0.353,)


def _snn(neuron="lif", T=4, seed=0, **kw):
    torch.manual_seed(seed)
    m = build("cnn", kind="snn", neuron=neuron, time_steps=T, width=0.25, mean=MEAN, std=STD, **kw).eval()
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():  # non-trivial batch norm (folded into the conv) and a pruning mask
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) * 0.4 - 0.2)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
        if isinstance(mod, torch.nn.Linear) and mod.out_features > 10:
            with torch.no_grad():
                mod.weight.mul_(20.0)  # an untrained hidden layer would hardly spike
            set_mask(mod, (torch.rand(mod.weight.shape, generator=g) > 0.7).float())
    return m


def _rates(model, x):
    rates = []
    hooks = [n.register_forward_hook(lambda mod, i, o: rates.append(float(o.mean())))
             for n in model.modules() if isinstance(n, SpikingNeuron)]
    with torch.no_grad():
        out = model.forward_steps(x)
    for h in hooks:
        h.remove()
    return out, rates


@pytest.fixture()
def x():
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("neuron", ["lif", "if"])
def test_export_then_import_gives_the_same_spikes(neuron, x, tmp_path):
    model = _snn(neuron)
    graph = to_nir(model)
    kinds = [type(n).__name__ for n in graph.nodes.values()]
    assert kinds.count("LIF" if neuron == "lif" else "IF") == 3 and "BatchNorm2d" not in kinds
    affine = next(n for n in graph.nodes.values() if isinstance(n, nir.Affine) and n.weight.shape[0] > 10)
    assert (affine.weight == 0).mean() > 0.6  # the mask is exported as zeros
    nir.write(tmp_path / "net.nir", graph)
    back = from_nir(nir.read(tmp_path / "net.nir"))
    ref, rates = _rates(model, x)
    assert all(0 < r < 1 for r in rates)  # the hidden layers really spike
    with torch.no_grad():
        torch.testing.assert_close(back.forward_steps(x), ref, rtol=0, atol=1e-5)


def test_lif_parameters_follow_the_euler_mapping():
    model = _snn("lif")
    lif = next(n for n in to_nir(model, dt=1e-3).nodes.values() if isinstance(n, nir.LIF))
    lam = model.config.neuron.lam
    np.testing.assert_allclose(lif.tau, 1e-3 / (1 - lam))
    np.testing.assert_allclose(lif.r * 1e-3 / lif.tau, 1.0)  # gain 1
    np.testing.assert_allclose(lif.v_threshold, 1.0)


def test_dlif_gains_and_soft_reset():
    model = _snn("dlif")
    with torch.no_grad():
        for n in model.modules():
            if isinstance(n, SpikingNeuron):
                n.gain.fill_(0.5)
    lif = next(n for n in to_nir(model).nodes.values() if isinstance(n, nir.LIF))
    np.testing.assert_allclose(lif.r * 1e-4 / lif.tau, 0.5)
    with torch.no_grad():
        next(n for n in model.modules() if isinstance(n, SpikingNeuron)).gain[1] = 2.0
    with pytest.raises(UsageError, match="vary over time"):
        to_nir(model)
    with pytest.raises(UsageError, match="reset by subtraction"):
        to_nir(_snn("lif", reset="soft"))


def test_snntorch_reads_our_export_with_identical_spikes(x):
    pytest.importorskip("snntorch")
    pytest.importorskip("nirtorch")
    from snntorch.import_nir import import_from_nir

    model = _snn("lif")
    ref, rates = _rates(model, x)
    assert all(0 < r < 1 for r in rates)
    net = import_from_nir(to_nir(model))
    norm = (x - MEAN[0]) / STD[0]
    for i in range(x.shape[0]):  # snnTorch's graph runs one unbatched sample, one step per call
        for m in net.modules():
            if hasattr(m, "reset_mem"):
                m.reset_mem()
        with torch.no_grad():
            steps = torch.stack([net(norm[i])[0] for _ in range(model.config.time_steps)])
        torch.testing.assert_close(steps, ref[:, i], rtol=0, atol=1e-5)


def test_cli_exports_a_checkpoint_as_nir(tmp_path):
    from typer.testing import CliRunner

    from robustsnn import checkpoint
    from robustsnn.cli import app

    ckpt = checkpoint.save(tmp_path / "run" / "model", _snn("lif"), dataset="fashion-mnist")
    result = CliRunner().invoke(app, ["export", str(ckpt), str(tmp_path / "net.nir"), "--nir"])
    assert result.exit_code == 0, result.output
    graph = nir.read(tmp_path / "net.nir")
    assert sum(isinstance(n, nir.LIF) for n in graph.nodes.values()) == 3
