"""Trainer, checkpoints and resume."""

import json
import math

import pytest
import torch

import robustsnn
from robustsnn import checkpoint
from robustsnn.errors import CheckpointError, UsageError
from robustsnn.train import TrainConfig, accuracy, fit
from robustsnn.train.objectives import make_objective

from helpers import synthetic_fmnist, tiny_snn


def _cfg(**kw):
    base = dict(epochs=2, batch_size=32, lr=0.05, seed=3, train_subset=None)
    base.update(kw)
    return TrainConfig(**base)


def test_training_learns_a_separable_task(tmp_path):
    data = synthetic_fmnist(320)
    model = tiny_snn()
    before = accuracy(model, data)
    hist = fit(model, data, data, _cfg(epochs=4), tmp_path, progress=False)
    assert hist[-1]["test_acc"] > 0.9 > before
    log = json.loads((tmp_path / "log.json").read_text())
    assert [e["epoch"] for e in log["history"]] == [1, 2, 3, 4]


def test_resume_ends_with_the_same_weights(tmp_path):
    data = synthetic_fmnist(192)
    full = tiny_snn(neuron="dlif")
    fit(full, data, None, _cfg(epochs=3), tmp_path / "a", progress=False)

    part = tiny_snn(neuron="dlif")
    fit(part, data, None, _cfg(epochs=3), tmp_path / "b", progress=False, stop_after_epoch=1)
    assert checkpoint.read_meta(tmp_path / "b" / "model")["epoch"] == 1
    fresh = tiny_snn(neuron="dlif")  # a new process would start from a fresh model
    fit(fresh, data, None, _cfg(epochs=3), tmp_path / "b", progress=False, resume=True)

    a, b = full.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["body.2.gain"], torch.ones(2)), "DLIF gain should have trained"


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        fit(tiny_snn(), synthetic_fmnist(64), None, _cfg(), tmp_path, progress=False, resume=True)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = tiny_snn(neuron="dlif", learn_threshold=True)
    with torch.no_grad():
        model.body[2].gain.mul_(1.5)
        model.body[2].threshold.fill_(0.6)
    model.eval()
    x = torch.rand(8, 1, 28, 28)
    checkpoint.save(tmp_path / "ck", model, dataset="fashion-mnist")
    loaded = robustsnn.load(tmp_path / "ck")
    assert torch.equal(model(x), loaded(x))
    assert loaded.config == model.config
    assert not any(p.name.endswith((".pt", ".pth", ".pkl")) for p in (tmp_path / "ck").iterdir())


def test_checkpoint_keeps_masks(tmp_path):
    from robustsnn.sparsity import set_mask

    model = tiny_snn()
    conv = model.body[0]
    mask = (torch.rand_like(conv.weight) > 0.5).float()
    set_mask(conv, mask)
    checkpoint.save(tmp_path / "ck", model)
    loaded = robustsnn.load(tmp_path / "ck")
    assert torch.equal(loaded.body[0].weight_mask, mask)
    assert (loaded.body[0].weight[mask == 0] == 0).all()


def test_foreign_and_damaged_checkpoints_are_refused(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "config.json").write_text('{"hello": 1}')
    (tmp_path / "foreign" / "weights.safetensors").write_bytes(b"xx")
    with pytest.raises(CheckpointError, match="not a robustsnn checkpoint"):
        robustsnn.load(tmp_path / "foreign")
    checkpoint.save(tmp_path / "ck", tiny_snn())
    (tmp_path / "ck" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="damaged"):
        robustsnn.load(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        robustsnn.load(tmp_path / "missing")


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path):
    model = tiny_snn()
    checkpoint.save(tmp_path / "ck", model, epoch=1)

    def boom(_tmp):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path / "ck", model, epoch=2, extra_files=boom)
    assert checkpoint.read_meta(tmp_path / "ck")["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


@pytest.mark.parametrize("clip", [1e-3, 1e9])
def test_grad_clip_bounds_the_step_and_records_the_norm(tmp_path, clip):
    """One plain SGD step (no decay, first momentum step = the gradient) moves the parameters
    by lr x min(norm, clip); the recorded norm is the unclipped one."""
    data = synthetic_fmnist(64)
    model = tiny_snn()
    before = [p.detach().clone() for p in model.parameters()]
    hist = fit(model, data, None, _cfg(epochs=1, batch_size=64, weight_decay=0.0, grad_clip=clip), tmp_path, progress=False)
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    norm = hist[0]["grad_norm_max"]
    assert norm == pytest.approx(hist[0]["grad_norm_mean"])
    assert float(moved) / 0.05 == pytest.approx(min(norm, clip), rel=1e-4)
    assert hist[0]["clipped_steps"] == int(norm > clip)
    assert (clip < norm) == (clip == 1e-3)  # the small clip really clips, the large one does not


def test_a_diverged_loss_stops_training_and_keeps_the_last_epoch(tmp_path):
    """A NaN loss in epoch 2 raises a one-line error naming the step; epoch 1's checkpoint stays."""
    from robustsnn.train.trainer import TrainingDiverged

    data = synthetic_fmnist(64)
    steps = {"n": 0}

    def poison_after_epoch_1(model):  # 2 steps per epoch: after step 3, the readout becomes NaN
        steps["n"] += 1
        if steps["n"] == 3:
            with torch.no_grad():
                list(model.parameters())[-1].fill_(float("nan"))  # the readout (a spike absorbs NaN)

    model = tiny_snn()
    with pytest.raises(TrainingDiverged, match=r"became nan at step 2 of epoch 2; the checkpoint of epoch 1 .* is kept"):
        fit(model, data, None, _cfg(epochs=3, batch_size=32), tmp_path, progress=False, post_step=[poison_after_epoch_1])
    assert checkpoint.read_meta(tmp_path / "model")["epoch"] == 1
    saved = robustsnn.load(tmp_path / "model")
    assert all(torch.isfinite(p).all() for p in saved.parameters())


def test_nan_weights_with_a_finite_loss_stop_training_and_keep_the_last_epoch(tmp_path):
    """NaN first-layer weights leave the loss finite (a NaN potential never fires): the epoch check catches them."""
    from robustsnn.train.trainer import TrainingDiverged

    data = synthetic_fmnist(64)
    steps, losses = {"n": 0}, []

    def poison_first_layer(model):
        steps["n"] += 1
        if steps["n"] == 3:
            with torch.no_grad():
                list(model.parameters())[0].fill_(float("nan"))

    def record_loss(net, x, y):
        loss, logits = make_objective("natural")(net, x, y)
        losses.append(float(loss.detach()))
        return loss, logits

    model = tiny_snn()
    with pytest.raises(TrainingDiverged, match=r"weights became NaN or Inf in epoch 2 \(.*\) although the loss stayed finite; "
                                               r"the checkpoint of epoch 1 .* is kept"):
        fit(model, data, None, _cfg(epochs=3, batch_size=32), tmp_path, progress=False,
            post_step=[poison_first_layer], objective=record_loss)
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)  # the loss alone would not have stopped it
    assert checkpoint.read_meta(tmp_path / "model")["epoch"] == 1
    assert checkpoint.nonfinite_entries(robustsnn.load(tmp_path / "model").state_dict()) == []


def test_bad_recipe_values_are_refused():
    with pytest.raises(UsageError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(UsageError, match="lr"):
        TrainConfig(lr=-1)
    with pytest.raises(UsageError, match="grad_clip"):
        TrainConfig(grad_clip=-1)
