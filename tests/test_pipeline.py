"""The conversion pipeline: all stages end to end, and a killed run continues where it stopped."""

import json
from pathlib import Path

import pytest

import robustsnn
from robustsnn.errors import UsageError
from robustsnn.pipeline import PipelineConfig, run_pipeline

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
pytestmark = pytest.mark.skipif(not FMNIST.exists(), reason="needs Debian's dataset-fashion-mnist (make test installs it)")


def _tiny(**kw):
    base = dict(width=0.25, train_subset=192, snn_train_subset=128, ann_epochs=1, prune_finetune_epochs=1,
                hydra_epochs=1, snn_epochs=1, ann_attack_steps=1, time_steps=2, calib_batches=2, calib_time_steps=8,
                calib_batch_size=16, eval_preset="quick", eval_n=24, efficiency_n=16, sparsity=0.9, pruning="lwm",
                stage_eval_n=16)
    base.update(kw)
    return PipelineConfig(**base)


def test_pipeline_runs_every_stage_and_resumes_after_a_kill(tmp_path):
    cfg = _tiny()
    state = run_pipeline(cfg, tmp_path, progress=False, stop_after="prune")  # "killed" after pruning
    assert [s["name"] for s in state["stages"]] == ["ann", "prune"]
    ann_mtime = (tmp_path / "ann" / "model" / "weights.safetensors").stat().st_mtime_ns
    state = run_pipeline(cfg, tmp_path, progress=False)
    assert [s["name"] for s in state["stages"]] == ["ann", "prune", "convert", "finetune", "evaluate", "efficiency", "report"]
    assert (tmp_path / "ann" / "model" / "weights.safetensors").stat().st_mtime_ns == ann_mtime, "finished stage ran again"
    final = robustsnn.load(tmp_path / "finetune" / "model")
    assert final.config.kind == "snn" and final.config.time_steps == 2
    # the mask chosen by pruning survives conversion and SNN finetuning
    pruned = robustsnn.load(tmp_path / "prune" / "model")
    for (name, a), (_, b) in zip(pruned.named_modules(), final.named_modules()):
        if hasattr(a, "weight_mask"):
            assert (b.weight_mask == a.weight_mask).all(), name
            assert (b.weight[b.weight_mask == 0] == 0).all(), name
    ev = json.loads((tmp_path / "eval-quick.json").read_text())
    assert ev["results"][0]["robust_acc"] <= ev["results"][0]["clean_acc"]
    assert (tmp_path / "report.html").exists() and (tmp_path / "efficiency.json").exists()


def test_stop_after_a_stage_that_finished_earlier_stops_there(tmp_path):
    run_pipeline(_tiny(), tmp_path, progress=False, stop_after="ann")
    state = run_pipeline(_tiny(), tmp_path, progress=False, stop_after="ann")
    assert [s["name"] for s in state["stages"]] == ["ann"]


def test_changed_settings_are_not_mixed_into_an_old_run(tmp_path):
    run_pipeline(_tiny(), tmp_path, progress=False, stop_after="ann")
    with pytest.raises(UsageError, match="other settings"):
        run_pipeline(_tiny(sparsity=0.95), tmp_path, progress=False)


def test_new_measurement_settings_rerun_only_the_measuring_stages(tmp_path):
    run_pipeline(_tiny(), tmp_path, progress=False)
    weights = tmp_path / "finetune" / "model" / "weights.safetensors"
    before = weights.stat().st_mtime_ns
    state = run_pipeline(_tiny(eval_preset="pgd-ens", eval_n=8), tmp_path, progress=False)
    assert weights.stat().st_mtime_ns == before, "a training stage ran again"
    assert [s["name"] for s in state["stages"]][-2:] == ["evaluate", "report"]
    ev = json.loads((tmp_path / "eval-pgd-ens.json").read_text())
    assert ev["n"] == 8 and len(ev["results"][0]["members"]) >= 1
    assert state["changes"][-1]["eval_preset"] == ["quick", "pgd-ens"]


def test_keep_first_and_last_dense_prunes_only_the_middle_layers(tmp_path):
    from robustsnn.sparsity.prune import prunable_layers

    state = run_pipeline(_tiny(prune_first=False, prune_last=False, sparsity=0.8), tmp_path, progress=False,
                         stop_after="prune")
    pruned = robustsnn.load(tmp_path / "prune" / "model")
    layers = prunable_layers(pruned)
    first, *middle, last = layers
    for name, module in (first, last):
        assert not hasattr(module, "weight_mask") or bool(module.weight_mask.all()), f"{name} was pruned"
    for name, module in middle:
        kept = module.weight_mask.float().mean().item()
        assert kept == pytest.approx(0.2, abs=0.02), name
    assert set(state["stages"][-1]["layers"]) == {name for name, _ in middle}


def test_a_run_started_before_a_setting_existed_continues(tmp_path):
    run_pipeline(_tiny(), tmp_path, progress=False, stop_after="ann")
    state_file = tmp_path / "pipeline.json"
    data = json.loads(state_file.read_text())
    del data["config"]["prune_first"]  # written by a version without the setting
    state_file.write_text(json.dumps(data))
    state = run_pipeline(_tiny(), tmp_path, progress=False, stop_after="prune")
    assert [s["name"] for s in state["stages"]] == ["ann", "prune"]
    with pytest.raises(UsageError, match="prune_first"):
        run_pipeline(_tiny(prune_first=False), tmp_path, progress=False)


def test_bad_pipeline_settings_are_refused():
    with pytest.raises(UsageError, match="sparsity"):
        PipelineConfig(sparsity=90)
    with pytest.raises(UsageError, match="pruning"):
        PipelineConfig(pruning="magnitude")


def test_every_training_stage_records_clean_and_robust_accuracy_and_the_budgets_are_equal(tmp_path):
    state = run_pipeline(_tiny(), tmp_path / "conv", progress=False, stop_after="finetune")
    by_name = {s["name"]: s for s in state["stages"]}
    for stage in ("ann", "prune", "convert", "finetune"):
        acc = by_name[stage]["accuracy"]
        assert acc["n"] == 16 and acc["preset"] == "quick" and acc["eps"] == 0.1
        assert 0.0 <= acc["robust"] <= acc["clean"] <= 1.0, stage
    recipe = by_name["convert"]["recipe"]
    assert recipe["thresholds"] == "clip" and recipe["reset"] == "soft" and recipe["init_potential"] == 0.5
    snn = robustsnn.load(tmp_path / "conv" / "snn" / "model")
    assert snn.config.neuron.spike_amplitude == "threshold"
    ann = robustsnn.load(tmp_path / "conv" / "ann" / "model")
    assert ann.config.activation == "qcfs" and ann.config.levels == 2  # L = T by default
    conv = state["image_passes"]["conversion"]
    assert conv == {"ann": 192, "prune": 192, "finetune": 128, "total": 512}
    base = run_pipeline(_tiny(baseline="random"), tmp_path / "base", progress=False, stop_after="baseline")
    rec = next(s for s in base["stages"] if s["name"] == "baseline")
    assert rec["epochs"] == 4 and rec["image_passes"] == 512 == base["image_passes"]["baseline"]["total"]
    assert "accuracy" in rec
