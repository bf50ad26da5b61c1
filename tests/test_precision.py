"""Optional bf16 autocast: off by default, really on when asked, neurons integrate in float32."""

import pytest
import torch

from robustsnn.errors import UsageError
from robustsnn.evaluate import evaluate
from robustsnn.neurons import NeuronConfig, SpikingNeuron
from robustsnn.precision import autocast, check_precision
from robustsnn.train.trainer import TrainConfig, fit

from helpers import run_cli, synthetic_fmnist, tiny_snn


def _conv_dtypes(model):
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    h = conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    return seen, h


def test_precision_names_and_errors():
    assert check_precision("bfloat16") == "bf16" and check_precision("FP32") == "fp32"
    with pytest.raises(UsageError, match="choose one of fp32, bf16"):
        TrainConfig(precision="fp8")


def test_fit_runs_under_bf16_autocast_only_when_asked(tmp_path):
    data = synthetic_fmnist(16)
    for precision, expected in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model = tiny_snn()
        seen, h = _conv_dtypes(model)
        cfg = TrainConfig(epochs=1, batch_size=8, lr=0.01, precision=precision)
        hist = fit(model, data, None, cfg, tmp_path / precision, progress=False)
        h.remove()
        assert seen and set(seen) == {expected}
        assert torch.isfinite(torch.tensor(hist[-1]["loss"]))
        assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


def test_neuron_integrates_a_bf16_current_in_float32():
    """Same spikes as float32 integration of the same (bf16-representable) current; a bf16 membrane
    would lose the leak steps of 0.99 * v."""
    layer = SpikingNeuron(NeuronConfig("lif", leak=0.99, threshold=1.0), 16)
    current = torch.full((16, 1), 0.0703125).to(torch.bfloat16)  # exactly representable
    s16 = layer(current)
    s32 = layer(current.float())
    assert s16.dtype == torch.bfloat16
    assert torch.equal(s16.float(), s32) and s32.sum() > 0


def test_evaluate_bf16_matches_fp32_verdicts_mostly_and_says_so():
    model = tiny_snn().eval()
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    kw = dict(members=[("pgd", "bptt", {"steps": 2})], eps=0.05, diagnostics=False, warn=False)
    seen, h = _conv_dtypes(model)
    r16 = evaluate(model, (x, y), precision="bf16", **kw)
    h.remove()
    assert set(seen) == {torch.bfloat16}
    assert r16.settings["precision"] == "bf16" and any("bf16" in n for n in r16.notes)
    with autocast("fp32"):
        r32 = evaluate(model, (x, y), **kw)
    assert "precision" not in r32.settings


def test_cli_refuses_unknown_precision(monkeypatch, capsys, tmp_path):
    code, out, err = run_cli(monkeypatch, capsys, "train", "--precision", "fp8", "--out", tmp_path / "r",
                             "--data-dir", tmp_path / "nothing-here")  # refused before any data is read
    assert code != 0 and "unknown precision" in (out + err)
