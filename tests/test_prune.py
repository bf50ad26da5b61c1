"""Pruning: LWM (layer-wise, global), random, HYDRA scores, and masks through training and checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustsnn import checkpoint
from robustsnn.data import ArrayDataset, DatasetInfo
from robustsnn.errors import UsageError
from robustsnn.models import build
from robustsnn.sparsity import masked_modules
from robustsnn.sparsity.hydra import SCORE, attach_scores, finalize_scores, init_scores, scored_layers
from robustsnn.sparsity.prune import keep_count, prunable_layers, prune_lwm, prune_random
from robustsnn.train import TrainConfig, fit

INFO = DatasetInfo("synthetic", 3, 1, 8, (0.5,), (0.25,))


def tiny(kind: str = "ann", seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    kw.setdefault("width", 0.25)
    return build("cnn", kind, image_size=8, num_classes=3, time_steps=2, mean=(0.5,), std=(0.25,), **kw)


def synthetic(n: int = 96, seed: int = 0) -> ArrayDataset:
    """Three classes told apart by which third of the image is bright."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randint(0, 60, (n, 1, 8, 8), generator=g)
    for c in range(3):
        x[y == c, :, :, c * 2 : c * 2 + 3] += 150
    return ArrayDataset(x.to(torch.uint8), y, INFO)


def nonzero(m: nn.Module) -> int:
    return int((m.weight != 0).sum())


# ----------------------------------------------------------------------------- LWM and random


def test_prunable_layers_are_all_conv_and_linear_in_order():
    model = tiny()
    names = [n for n, _ in prunable_layers(model)]
    assert names == ["body.0", "body.4", "body.9", "body.11"]
    assert [n for n, _ in prunable_layers(model, first=False, last=False)] == ["body.4", "body.9"]


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_lwm_layerwise_exact_per_layer_and_keeps_largest(sparsity):
    model = tiny()
    before = {n: m.weight.detach().clone() for n, m in prunable_layers(model)}
    reached = prune_lwm(model, sparsity, scope="layer")
    for name, m in prunable_layers(model):
        w0 = before[name]
        k = keep_count(w0.numel(), sparsity)
        assert nonzero(m) == k == int(m.weight_mask.sum())
        assert reached[name] == pytest.approx(1 - k / w0.numel())
        kept, pruned = w0[m.weight_mask.bool()].abs(), w0[~m.weight_mask.bool()].abs()
        assert kept.min() >= pruned.max()
        assert torch.equal(m.weight[m.weight_mask.bool()], w0[m.weight_mask.bool()])  # survivors untouched


def test_lwm_global_keeps_largest_magnitudes_overall():
    model = tiny()
    layers = prunable_layers(model)
    before = torch.cat([m.weight.detach().abs().flatten() for _, m in layers])
    reached = prune_lwm(model, 0.9, scope="global")
    masks = torch.cat([m.weight_mask.flatten() for _, m in layers]).bool()
    assert int(masks.sum()) == keep_count(before.numel(), 0.9)
    assert before[masks].min() >= before[~masks].max()
    assert len({round(s, 3) for s in reached.values()}) > 1  # one threshold, different per-layer sparsities
    assert sum(nonzero(m) for _, m in layers) == int(masks.sum())


def test_random_exact_count_and_seeded():
    a, b = tiny(), tiny()
    prune_random(a, 0.8, torch.Generator().manual_seed(3))
    prune_random(b, 0.8, torch.Generator().manual_seed(3))
    for (n, ma), (_, mb) in zip(prunable_layers(a), prunable_layers(b)):
        assert int(ma.weight_mask.sum()) == keep_count(ma.weight.numel(), 0.8)
        assert torch.equal(ma.weight_mask, mb.weight_mask)
    c = tiny()
    prune_random(c, 0.8, torch.Generator().manual_seed(4))
    assert not torch.equal(prunable_layers(a)[1][1].weight_mask, prunable_layers(c)[1][1].weight_mask)


def test_first_and_last_can_stay_dense():
    model = tiny()
    prune_lwm(model, 0.9, first=False, last=False)
    assert [n for n, _ in masked_modules(model)] == ["body.4", "body.9"]


def test_pruning_composes_with_existing_mask():
    model = tiny()
    prune_lwm(model, 0.5)
    first = {n: m.weight_mask.clone() for n, m in prunable_layers(model)}
    prune_random(model, 0.9, torch.Generator().manual_seed(0))
    for n, m in prunable_layers(model):
        assert bool((m.weight_mask <= first[n]).all())  # only weights that survived before survive now


@pytest.mark.parametrize("bad", [1.0, -0.1, 90, "x"])
def test_bad_sparsity_is_a_usage_error(bad):
    with pytest.raises(UsageError):
        prune_lwm(tiny(), bad)


def test_bad_scope_is_a_usage_error():
    with pytest.raises(UsageError, match="scope"):
        prune_lwm(tiny(), 0.5, scope="neuron")


# ----------------------------------------------------------------------------- HYDRA


def test_score_init_formula():
    w = torch.randn(4, 3, 3, 3)
    s = init_scores(w)
    assert torch.allclose(s, (6 / 27) ** 0.5 * w / w.abs().max())


def test_hydra_forward_uses_topk_of_scores_and_only_scores_get_gradients():
    model = tiny()
    keys = list(model.state_dict())
    x = torch.rand(5, 1, 8, 8)
    scores = attach_scores(model, 0.75)
    assert len(scores) == 4
    # Parameter names and state_dict keys are the plain ones plus the scores.
    assert [k for k in model.state_dict() if not k.endswith(SCORE)] == keys
    assert all(p is s for p, s in zip([p for n, p in model.named_parameters() if n.endswith(SCORE)], scores))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [f"{n}.{SCORE}" for n, _ in prunable_layers(model)]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for s in scores:
            s.copy_(torch.randn(s.shape, generator=g))
    # The effective weight is w * (exactly the top-k of |s|).
    for (name, m), s in zip(scored_layers(model), scores):
        w = m._parameters["weight"]
        k = keep_count(w.numel(), 0.75)
        top = torch.zeros(w.numel())
        top[s.detach().abs().flatten().topk(k).indices] = 1
        assert int((m.weight != 0).sum()) == k
        assert torch.equal(m.weight.detach(), w.detach() * top.view_as(w))
    model.train()
    model(x).sum().backward()
    for (_, m), s in zip(scored_layers(model), scores):
        assert s.grad is not None and s.grad.abs().sum() > 0
        assert m._parameters["weight"].grad is None
    assert all(p.grad is None for n, p in model.named_parameters() if not n.endswith(SCORE))


def test_hydra_finalize_fixes_topk_mask_and_restores_the_model():
    model = tiny()
    keys = list(model.state_dict())
    classes = [type(m) for _, m in prunable_layers(model)]
    scores = attach_scores(model, 0.9)
    with torch.no_grad():
        for s in scores:
            s.copy_(torch.randn(s.shape))
    expected = [s.detach().abs() for s in scores]
    dense = [m._parameters["weight"].detach().clone() for _, m in prunable_layers(model)]
    reached = finalize_scores(model)
    for (name, m), cls, e, w in zip(prunable_layers(model), classes, expected, dense):
        k = keep_count(e.numel(), 0.9)
        assert type(m) is cls and not hasattr(m, SCORE)
        assert int(m.weight_mask.sum()) == k
        assert e[m.weight_mask.bool()].min() >= e[~m.weight_mask.bool()].max()
        assert torch.equal(m.weight, w * m.weight_mask)
        assert reached[name] == pytest.approx(1 - k / e.numel())
    assert [k for k in model.state_dict() if not k.endswith("weight_mask")] == keys
    assert all(p.requires_grad for p in model.parameters())


def test_hydra_refuses_masked_model_and_double_attach():
    model = tiny()
    attach_scores(model, 0.5)
    with pytest.raises(UsageError, match="already"):
        attach_scores(model, 0.5)
    finalize_scores(model)
    with pytest.raises(UsageError, match="mask"):
        attach_scores(model, 0.5)


def test_hydra_score_phase_with_the_trainer(tmp_path):
    """fit() trains only the scores; its checkpoints load, and finalize works on the loaded model."""
    model = tiny()
    data = synthetic()
    dense = {n: p.detach().clone() for n, p in model.named_parameters()}
    scores = attach_scores(model, 0.8)
    init = [s.detach().clone() for s in scores]
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.1, seed=0)
    fit(model, data, None, cfg, tmp_path / "scores", progress=False)
    assert any(not torch.equal(s, i) for s, i in zip(scores, init))
    for n, p in model.named_parameters():
        if not n.endswith(SCORE):
            assert torch.equal(p, dense[n]), n  # frozen: no update, no weight decay
    loaded = checkpoint.load(tmp_path / "scores")
    with pytest.raises(UsageError, match="sparsity"):
        finalize_scores(loaded)
    finalize_scores(loaded, sparsity=0.8)
    finalize_scores(model)
    for (_, a), (_, b) in zip(masked_modules(model), masked_modules(loaded)):
        assert torch.equal(a.weight_mask, b.weight_mask)


# ----------------------------------------------------------------------------- masks through training


@pytest.mark.parametrize("kind", ["ann", "snn"])
def test_pruned_weights_stay_exactly_zero_through_finetuning_and_checkpoints(tmp_path, kind):
    model = tiny(kind)
    prune_lwm(model, 0.8)
    masks = {n: m.weight_mask.clone() for n, m in masked_modules(model)}
    before = {n: m.weight.detach().clone() for n, m in masked_modules(model)}
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=5e-3, seed=1)
    fit(model, synthetic(64), None, cfg, tmp_path, progress=False)  # 8 SGD steps
    for n, m in masked_modules(model):
        assert torch.equal(m.weight_mask, masks[n])
        assert bool((m.weight[~masks[n].bool()] == 0).all()), n
        assert not torch.equal(m.weight, before[n])  # the survivors did train
    loaded = checkpoint.load(tmp_path)
    assert [n for n, _ in masked_modules(loaded)] == list(masks)
    for (n, a), (_, b) in zip(masked_modules(model), masked_modules(loaded)):
        assert torch.equal(a.weight_mask, b.weight_mask) and torch.equal(a.weight, b.weight)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), loaded(x))
    # Resuming continues with the masks in force.
    cfg3 = TrainConfig(epochs=3, batch_size=16, lr=0.05, momentum=0.9, weight_decay=5e-3, seed=1)
    fit(loaded, synthetic(64), None, cfg3, tmp_path, resume=True, progress=False)
    for n, m in masked_modules(loaded):
        assert bool((m.weight[~masks[n].bool()] == 0).all()), n


# ----------------------------------------------------------------------------- CLI


def _fashion_checkpoint(path):
    from robustsnn.data import dataset_info

    info = dataset_info("fashion-mnist")
    torch.manual_seed(0)
    model = build("cnn", "ann", width=0.25, mean=info.mean, std=info.std)
    checkpoint.save(path, model, dataset=info.name)
    return path


def _app():
    import typer

    from robustsnn.cli import prune as prune_cli

    app = typer.Typer()
    prune_cli.register(app)

    @app.command("noop")
    def _noop():  # a second command keeps typer from collapsing the app into one command
        pass

    return app


def test_cli_prune_lwm_and_bad_sparsity(tmp_path):
    from typer.testing import CliRunner

    ckpt = _fashion_checkpoint(tmp_path / "ann")
    runner = CliRunner()
    res = runner.invoke(_app(), ["prune", str(ckpt), "--sparsity", "0.9", "--method", "lwm-global", "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    model = checkpoint.load(tmp_path / "p")
    total = sum(m.weight.numel() for _, m in masked_modules(model))
    kept = sum(int(m.weight_mask.sum()) for _, m in masked_modules(model))
    assert kept == keep_count(total, 0.9)
    assert checkpoint.read_meta(tmp_path / "p")["pruning"]["method"] == "lwm-global"
    res = runner.invoke(_app(), ["prune", str(ckpt), "--sparsity", "90", "--out", str(tmp_path / "q")])
    assert isinstance(res.exception, UsageError) and "0.9" in str(res.exception)


def test_cli_prune_hydra_with_finetuning(tmp_path):
    from typer.testing import CliRunner

    ckpt = _fashion_checkpoint(tmp_path / "ann")
    args = ["prune", str(ckpt), "--sparsity", "0.8", "--method", "hydra", "--epochs", "1", "--finetune-epochs", "1",
            "--train-subset", "64", "--test-subset", "32", "--batch-size", "32", "--no-progress", "--out", str(tmp_path / "h")]
    res = CliRunner().invoke(_app(), args)
    assert res.exit_code == 0, res.output
    model = checkpoint.load(tmp_path / "h")
    assert len(masked_modules(model)) == 4 and not scored_layers(model)
    for _, m in masked_modules(model):
        assert int(m.weight_mask.sum()) == keep_count(m.weight.numel(), 0.8)
        assert bool((m.weight[~m.weight_mask.bool()] == 0).all())
    assert (tmp_path / "h" / "scores" / "model").is_dir()
    meta = checkpoint.read_meta(tmp_path / "h")
    assert meta["pruning"]["method"] == "hydra" and meta["epoch"] == 1
