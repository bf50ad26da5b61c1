"""The architecture zoo: VGG-5/11/16, ResNet-19/20, WRN-16-4/28-4 as ANN and SNN twins."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustsnn import layers as L
from robustsnn.estimators import estimator
from robustsnn.models import available, build, spiking_layers
from robustsnn.neurons import ReLU, SpikingNeuron

ZOO = ["vgg5", "vgg11", "vgg16", "resnet19", "resnet20", "wrn16_4", "wrn28_4"]
# Spiking layers per architecture: conv/fc activations, two per residual block.
N_SPIKING = {"vgg5": 4, "vgg11": 9, "vgg16": 14, "resnet19": 1 + 2 * 8 + 1, "resnet20": 1 + 2 * 9, "wrn16_4": 2 * 6 + 1,
             "wrn28_4": 2 * 12 + 1}
SHAPES = [(28, 1), (32, 3), (64, 3)]  # (image size, channels)
T, B, K = 2, 2, 10


def small(name: str, kind: str = "snn", size: int = 32, channels: int = 3, **kw) -> nn.Module:
    kw.setdefault("width", 0.25)
    kw.setdefault("time_steps", T)
    return build(name, kind, image_size=size, in_channels=channels, num_classes=K, **kw)


def images(size: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, channels, size, size, generator=g)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_all_registered():
    assert set(ZOO) <= set(available())


@pytest.mark.parametrize("size,channels", SHAPES)
@pytest.mark.parametrize("kind", ["ann", "snn"])
@pytest.mark.parametrize("name", ZOO)
def test_output_shape(name, kind, size, channels):
    torch.manual_seed(0)
    model = small(name, kind, size, channels)
    x = images(size, channels)
    out = model(x)
    assert out.shape == (B, K)
    assert torch.isfinite(out).all()
    steps = model.forward_steps(x)
    assert steps.shape == ((T if kind == "snn" else 1), B, K)


@pytest.mark.parametrize("name", ZOO)
def test_twins_share_state_dict_keys(name):
    ann, lif, if_ = small(name, "ann"), small(name, "snn", neuron="lif"), small(name, "snn", neuron="if")
    keys = list(ann.state_dict())
    assert keys == list(lif.state_dict()) == list(if_.state_dict())
    assert [n for n, _ in ann.named_parameters()] == [n for n, _ in lif.named_parameters()]


@pytest.mark.parametrize("name", ZOO)
def test_ann_weights_load_into_snn_strict(name):
    torch.manual_seed(1)
    ann, snn = small(name, "ann"), small(name, "snn")
    ann.train()
    ann(images())  # move the BN running statistics away from their init
    snn.load_state_dict(ann.state_dict(), strict=True)
    for (k, a), (_, s) in zip(ann.state_dict().items(), snn.state_dict().items()):
        assert torch.equal(a, s), k
    snn.eval()
    assert torch.isfinite(snn(images())).all()


@pytest.mark.parametrize("name", ZOO)
def test_spiking_layers_match_ann_activations(name):
    ann, snn = small(name, "ann"), small(name, "snn")
    relus = [m for m in ann.modules() if isinstance(m, ReLU)]
    neurons = spiking_layers(snn)
    assert len(relus) == len(neurons) == N_SPIKING[name]
    # every activation is its own module (no reuse of one module at several places)
    all_mods = [m for _, m in snn.named_modules(remove_duplicate=False)]
    assert len(all_mods) == len({id(m) for m in all_mods})
    assert [n.replace("threshold", "") for n in ann.state_dict() if n.endswith("threshold")] == [
        n + "." for n, _ in neurons
    ]


@pytest.mark.parametrize("name", ZOO)
def test_forward_order_and_linear_readout(name):
    """Spiking layers fire in spiking_layers() order; the last module run is the Linear readout."""
    snn = small(name, "snn").eval()
    calls: list[nn.Module] = []
    leaves = [m for m in snn.modules() if not list(m.children())]
    handles = [m.register_forward_hook(lambda mod, i, o: calls.append(mod)) for m in leaves]
    try:
        snn(images())
    finally:
        for h in handles:
            h.remove()
    assert [id(m) for m in calls if isinstance(m, SpikingNeuron)] == [id(m) for _, m in spiking_layers(snn)]
    assert isinstance(calls[-1], L.Linear) and calls[-1].out_features == K


@pytest.mark.parametrize("name", ZOO)
def test_dlif_gain_per_layer(name):
    snn = small(name, "snn", neuron="dlif", time_steps=3)
    neurons = spiking_layers(snn)
    assert len(neurons) == N_SPIKING[name]
    params = dict(snn.named_parameters())
    for n, m in neurons:
        assert isinstance(m.gain, nn.Parameter) and m.gain.shape == (3,)
        assert params[n + ".gain"] is m.gain
    assert snn(images()).shape == (B, K)


@pytest.mark.parametrize("name", ZOO)
def test_snn_forward_is_stateless(name):
    torch.manual_seed(2)
    snn = small(name, "snn")
    x = images(seed=3)
    for train in (True, False):
        snn.train(train)
        with torch.no_grad():
            a, b = snn(x), snn(x)
        assert torch.equal(a, b), f"train={train}"


@pytest.mark.parametrize("name", ZOO)
def test_input_gradient_in_eval_mode(name):
    torch.manual_seed(4)
    snn = small(name, "snn").eval()
    x = images(seed=5).requires_grad_(True)
    y = torch.arange(B) % K
    with estimator(snn, "bptt", surrogate="ste"):
        loss = F.cross_entropy(snn(x), y)
        (grad,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


@pytest.mark.parametrize(
    "name,expected",
    [
        ("resnet20", 0.2725e6),  # He et al.: 0.27 M
        ("resnet19", 12.70e6),  # TET / tdBN: ~12.6 M
        ("vgg11", 11.26e6),
        ("vgg16", 14.99e6),
        ("vgg5", 8.62e6),
        ("wrn16_4", 2.749e6),  # Zagoruyko & Komodakis: 2.7 M
        ("wrn28_4", 5.849e6),  # WRN-28-10's 36.5 M (Zagoruyko & Komodakis) times (4/10)^2
    ],
)
def test_parameter_count_at_width_1(name, expected):
    model = build(name, "ann", in_channels=3, image_size=32, num_classes=10)
    assert n_params(model) == pytest.approx(expected, rel=0.005)


def test_width_scales_channels():
    full = build("resnet20", "ann", in_channels=3, image_size=32)
    half = build("resnet20", "ann", in_channels=3, image_size=32, width=0.5)
    convs = [m for m in half.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == 8 and convs[-1].out_channels == 32
    assert n_params(half) == pytest.approx(n_params(full) / 4, rel=0.05)
