"""Sparse storage: exact byte formulas, pack/unpack round trip, sparse export that loads to the same outputs."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from helpers import run_cli
from robustsnn import build, checkpoint
from robustsnn.errors import CheckpointError
from robustsnn.metrics import memory_report
from robustsnn.sparsity import set_mask
from robustsnn.sparsity.storage import (
    export_sparse,
    load_sparse,
    pack_state_dict,
    plan_state_dict,
    plan_tensor,
    unpack_state_dict,
)


def pruned_snn(sparsity=0.9, seed=0):
    torch.manual_seed(seed)
    model = build("cnn", kind="snn", neuron="dlif", time_steps=2, width=0.25, threshold=0.3)
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            set_mask(m, (torch.rand(m.weight.shape, generator=g) >= sparsity).float())
    with torch.no_grad():  # give the batch-norm buffers non-default values
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_byte_formulas_by_hand():
    w = torch.zeros(4, 6)
    w[0, 1], w[2, 5], w[3, 0] = 1.0, -2.0, 3.0  # 3 non-zeros in 24
    p = plan_tensor(w)
    assert p["bytes"] == {"dense": 24 * 4, "csr": 3 * 4 + 3 * 4 + (4 + 1) * 4, "bitmap": 3 * 4 + 3}
    assert p["encoding"] == "bitmap" and p["sparse_bytes"] == 15 and p["nonzero"] == 3
    w = torch.zeros(2, 100)
    w[1, 7] = 1.0  # 1 non-zero in 200: CSR 4 + 4 + 3 * 4 = 20 beats bitmap 4 + 25
    p = plan_tensor(w)
    assert p["bytes"]["csr"] == 20 and p["bytes"]["bitmap"] == 29 and p["encoding"] == "csr"
    assert plan_tensor(torch.ones(3, 5))["encoding"] == "dense"  # nothing pruned: plain is cheapest
    # a mask equal to the stored pattern is free; an arbitrary one costs a bitmap
    w = torch.zeros(8, 8)
    w[0, 0] = 1.0
    mask = torch.zeros(8, 8)
    mask[0, :2] = 1.0  # w[0, 1] is an in-mask zero: stored as a value, so the pattern is the mask
    p = plan_tensor(w, mask)
    assert p["mask"] == "pattern" and p["stored"] == 2 and p["sparse_bytes"] == min(2 * 4 + 8, 2 * 8 + 9 * 4)


def test_pack_unpack_round_trip_is_exact_and_bytes_match_the_plan():
    model = pruned_snn()
    sd = model.state_dict()
    # a weight that escaped its mask: the mask is then stored on its own
    odd = sd["body.11.weight"].clone()
    odd[0, 0] = 0.5
    sd["body.11.weight_mask"][0, 0] = 0.0
    sd["body.11.weight"] = odd
    tensors, layout = pack_state_dict(sd)
    json.dumps(layout)
    encodings = {k: (e["encoding"], e["mask"]["encoding"]) for k, e in layout["tensors"].items()}
    assert encodings["body.9.weight"] in {("csr", "pattern"), ("bitmap", "pattern")}
    assert encodings["body.11.weight"][1] == "bitmap"
    assert not any(k.endswith("weight_mask") for k in tensors)
    assert sum(t.numel() * t.element_size() for t in tensors.values()) == plan_state_dict(sd)["sparse_bytes"]
    back = unpack_state_dict(tensors, layout)
    assert back.keys() == sd.keys()
    for k in sd:
        assert back[k].dtype == sd[k].dtype and torch.equal(back[k], sd[k]), k


def test_both_sparse_encodings_round_trip():
    g = torch.Generator().manual_seed(0)
    for shape, density in (((5, 3, 3, 3), 0.3), ((3, 1000), 0.001), ((7, 13), 0.5)):  # odd sizes: bitmap padding
        w = torch.randn(shape, generator=g) * (torch.rand(shape, generator=g) < density)
        tensors, layout = pack_state_dict({"fc.weight": w, "fc.bias": torch.randn(shape[0])})
        assert layout["tensors"]["fc.weight"]["encoding"] in ("csr", "bitmap")
        assert torch.equal(unpack_state_dict(tensors, layout)["fc.weight"], w)
    seen = set()
    for density in (0.001, 0.3):
        w = torch.randn(4, 2000, generator=g) * (torch.rand(4, 2000, generator=g) < density)
        seen.add(plan_tensor(w)["encoding"])
    assert seen == {"csr", "bitmap"}


def test_memory_report_counts_weights_and_bytes():
    model = pruned_snn()
    m = memory_report(model)
    weights = [t for k, t in model.state_dict().items() if k.endswith(".weight") and t.dim() >= 2]
    assert m["weights"] == sum(w.numel() for w in weights)
    assert m["nonzero"] == sum(int((w != 0).sum()) for w in weights)
    assert m["dense_bytes"] == 4 * sum(t.numel() for k, t in model.state_dict().items()
                                       if not k.endswith("weight_mask") and t.is_floating_point()) + 8 * 2  # 2 BN counters
    assert m["checkpoint_bytes"] == m["dense_bytes"] + 4 * m["weights"]  # fp32 masks
    assert m["sparse_bytes"] == m["other_bytes"] + sum(l["sparse_bytes"] for l in m["layers"])
    assert m["bytes_ratio"] > 4 and m["weight_ratio"] > 5


def test_export_sparse_loads_to_the_same_outputs(tmp_path):
    model = pruned_snn()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = model(x)
    checkpoint.save(tmp_path / "dense", model, dataset="fashion-mnist")
    r = export_sparse(tmp_path / "dense", tmp_path / "sparse")
    meta = json.loads((tmp_path / "sparse" / "config.json").read_text())
    assert meta["sparse"]["format"] == "robustsnn-sparse" and meta["dataset"] == "fashion-mnist"
    assert r["sparse_bytes"] == memory_report(model)["sparse_bytes"]
    dense_file = (tmp_path / "dense" / "weights.safetensors").stat().st_size
    assert r["file_bytes"] < dense_file / 4
    loaded = load_sparse(tmp_path / "sparse")
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # exporting a sparse checkpoint again is idempotent
    export_sparse(tmp_path / "sparse", tmp_path / "again")
    first, second = (load_file(str(tmp_path / d / "weights.safetensors")) for d in ("sparse", "again"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert json.loads((tmp_path / "again" / "config.json").read_text())["sparse"] == meta["sparse"]


def test_damaged_sparse_checkpoint_is_a_clear_error(tmp_path):
    model = pruned_snn()
    tensors, layout = pack_state_dict(model.state_dict())
    key = next(k for k in tensors if k.endswith("@values"))
    broken = dict(tensors)
    del broken[key]
    with pytest.raises(CheckpointError, match="lacks tensor"):
        unpack_state_dict(broken, layout)
    broken = dict(tensors)
    broken[key] = broken[key][:-1]
    with pytest.raises(CheckpointError):
        unpack_state_dict(broken, layout)
    with pytest.raises(CheckpointError):
        unpack_state_dict(tensors, {"format": "something-else"})


def test_a_checkpoint_with_nan_weights_is_refused_by_name_unless_allowed(tmp_path):
    """A diverged run's weights do not load silently: the error names the tensor; allow_nonfinite loads them."""
    model = pruned_snn()
    with torch.no_grad():
        model.state_dict()["body.0.weight"].view(-1)[5] = float("inf")
        list(model.parameters())[-1].fill_(float("nan"))
    checkpoint.save(tmp_path / "m", model)
    assert checkpoint.nonfinite_entries(model.state_dict()) == ["body.0.weight", [k for k, _ in model.named_parameters()][-1]]
    with pytest.raises(CheckpointError, match=r"hold NaN or Inf \(body\.0\.weight, .*\): the run that wrote them diverged"):
        checkpoint.load(tmp_path / "m")
    loaded = checkpoint.load(tmp_path / "m", allow_nonfinite=True)
    assert torch.isinf(loaded.state_dict()["body.0.weight"]).sum() == 1


_run_cli = run_cli


def _write_fmnist_test_split(folder, n=6):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.numpy().tobytes())
    (folder / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + bytes(range(n)))


def test_cli_export_and_efficiency(monkeypatch, capsys, tmp_path):
    model = pruned_snn()
    checkpoint.save(tmp_path / "dense", model, dataset="fashion-mnist")
    code, out, err = _run_cli(monkeypatch, capsys, "export", tmp_path / "dense", tmp_path / "sparse", "--sparse")
    assert code == 0, err
    assert "smaller" in out and (tmp_path / "sparse" / "config.json").exists()
    _write_fmnist_test_split(tmp_path / "data")
    code, out, err = _run_cli(monkeypatch, capsys, "efficiency", tmp_path / "sparse", "--n", "4",
                              "--data-dir", tmp_path / "data", "--json", tmp_path / "eff.json")
    assert code == 0, err
    r = json.loads((tmp_path / "eff.json").read_text())
    assert r["images"] == 4 and r["dataset"] == "fashion-mnist" and r["command"].startswith("robustsnn efficiency")
    assert "energy per image" in out and "SOPs" in out
    code, _, err = _run_cli(monkeypatch, capsys, "export", tmp_path / "nothing", tmp_path / "o", "--sparse")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
