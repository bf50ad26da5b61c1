"""The repository as committed: the model zoo loads, is small and is documented; nothing else heavy."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import robustsnn

ROOT = Path(__file__).resolve().parents[1]


def _tracked(pattern: str) -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", pattern], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_the_model_zoo_is_the_only_committed_weights_and_is_documented():
    weights = _tracked("results/*.safetensors")
    # the issue-12 full-data rows keep their checkpoints for evaluations in a later session (README, Model zoo)
    full = [w for w in weights if w.startswith("results/fmnist_full/") and re.search(r"_60k3(_seed\d+)?/model/", w)]
    zoo_weights = [w for w in weights if w not in full]
    assert 1 <= len(zoo_weights) <= 4, zoo_weights
    assert sum((ROOT / w).stat().st_size for w in zoo_weights) <= 10 * 2**20
    assert len(full) <= 15 and all((ROOT / w).stat().st_size <= 2 * 2**20 for w in full), full
    readme = (ROOT / "README.md").read_text()
    zoo = readme[readme.index("## Model zoo"):]
    if full:
        assert "`results/fmnist_full/*_60k3/model`" in zoo
    for w in weights:
        ckpt = str(Path(w).parent)
        assert f"`{ckpt}`" in zoo or w in full, f"{ckpt} is committed but not listed in the README's model zoo"
        model = robustsnn.load(ROOT / ckpt)
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert _tracked("results/*report.html") == [] and _tracked("results/*report.md") == []


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_table_marks_a_run_stopped_between_epochs_and_shows_none_of_its_numbers(tmp_path):
    """A run collected mid-training (history shorter than its recipe's epochs) is no result yet."""
    import json

    table = _script("results_table")
    for name, done in (("finished", 3), ("stopped", 1)):
        run = tmp_path / "fmnist" / name
        (run / "model").mkdir(parents=True)
        history = [{"epoch": e + 1, "test_acc": 0.8, "test_images": 10000} for e in range(done)]
        (run / "model" / "config.json").write_text(json.dumps(
            {"recipe": {"epochs": 3}, "history": history, "options": {"neuron": "lif", "objective": "natural"}}))
    rows = {r.split(" | ")[0].lstrip("| "): r for r in table.matrix_rows(tmp_path / "fmnist")[2:]}
    assert "80.0" in rows["finished"] and "unfinished" not in rows["finished"]
    assert "unfinished: epoch 1 of 3" in rows["stopped"] and "80.0" not in rows["stopped"]


def test_regulariser_table_pairs_pgd_ens_and_standard_on_the_same_images(tmp_path):
    """rho = 1 against rho = 0 (same neuron, same Parseval): clean, PGD_ens and standard differences, paired."""
    import json

    table = _script("results_table")
    # breaker per image: -2 = wrong when clean, -1 = survived, k >= 0 = broken by member k
    evals = {"lif_mppd0_60k3": ([-1, -1, -1, 0, -2, -1], [-1, 3, -1, 0]),
             "lif_mppd1_60k3": ([-1, 0, -2, 0, -2, -1], [-1, -1, 3, 0])}
    for name, (ens, std) in evals.items():
        run = tmp_path / name
        (run / "model").mkdir(parents=True)
        (run / "model" / "config.json").write_text(json.dumps({"recipe": {"epochs": 1}, "history": [{"epoch": 1}],
            "options": {"neuron": "lif", "parseval": 0, "mppd": float(name[8])}}))
        for preset, breaker in (("pgd-ens", ens), ("standard", std)):
            (run / f"eval-{preset}.json").write_text(json.dumps({"n": len(breaker), "results": [{"breaker": breaker}]}))
    rows = table.regulariser_rows(tmp_path)
    assert len(rows) == 3
    cells = [c.strip() for c in rows[2].strip("|").split("|")]
    assert cells[:4] == ["MPPD rho = 1 against 0", "lif_mppd1_60k3", "lif_mppd0_60k3", "6"]
    # clean: 4 of 6 vs 5 of 6; PGD_ens: 2 of 6 vs 4 of 6; standard: 2 of 4 vs 2 of 4 (different images)
    assert cells[4].startswith("-16.7 ± ") and cells[5].startswith("-33.3 ± ")
    assert cells[6] == "+0.0 ± 40.8 (n=4)"


def test_weight_norms_show_the_growth_the_results_notes_report():
    """docs/results.md: MPPD rho = 1 without Parseval grew the first dense layer about 16x, Parseval held it."""
    norms = _script("weight_norms").weight_norms
    full = ROOT / "results" / "fmnist_full"
    plain, grown, held = (norms(full / row / "model")["body.9.weight"] for row in (
        "lif_rfgsm_mppd0_60k3", "lif_rfgsm_mppd1_clip5_60k3", "lif_rfgsm_parseval_mppd1_clip5_60k3"))
    assert grown > 10 * plain and held == pytest.approx(11.4, abs=0.05)
    w = robustsnn.load(full / "lif_rfgsm_mppd0_60k3" / "model").state_dict()["body.9.weight"]
    assert plain == pytest.approx(float(w.norm()))
