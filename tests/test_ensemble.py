"""The PGD_ens ensemble, presets and the evaluate() entry point."""

from __future__ import annotations

import json

import pytest
import torch

from robustsnn.attacks import PGD, Ensemble, Member, preset_members
from robustsnn.attacks.ensemble import as_member
from robustsnn.attacks.toy import toy_data, trained_toy_model
from robustsnn.estimators import SEED_ESTIMATORS
from robustsnn.evaluate import EvalResult, evaluate

MEMBERS = [
    Member("pgd", "triangle:1", {"steps": 5}),
    Member("pgd", "rectangle:0.25", {"steps": 5}),
    Member("pgd", "exp-d:2", {"steps": 5}),
    Member("pgd", "bptr", {"steps": 5}),
    Member("fgsm", "ste"),
    Member("noise", None, {"draws": 2}),
]


@pytest.fixture(scope="module")
def snn():
    return trained_toy_model("snn")


@pytest.fixture(scope="module")
def data():
    return toy_data("test", 64)


@pytest.fixture(scope="module")
def both_runs(snn, data):
    x, y = data
    fast = Ensemble(snn, MEMBERS, eps=0.03, batch_size=32).run(x, y)
    every = Ensemble(snn, MEMBERS, eps=0.03, batch_size=32, early_exit=False).run(x, y)
    return fast, every


def test_early_exit_gives_the_same_verdicts_as_running_every_member(both_runs):
    fast, every = both_runs
    assert 0.1 < fast.robust_acc < fast.clean_acc  # members break some samples, not all
    assert torch.equal(fast.robust, every.robust)
    assert torch.equal(fast.breaker, every.breaker)
    assert sum(r.attacked for r in fast.members) < sum(r.attacked for r in every.members)


def test_ensemble_accuracy_is_never_above_any_members(both_runs, snn, data):
    fast, every = both_runs
    x, y = data
    alone = [r.alone_acc for r in every.members]
    assert all(fast.robust_acc <= a + 1e-9 for a in alone)
    assert fast.robust_acc <= min(alone) and len(set(alone)) > 1
    # the worst case is exactly "no member fools it"
    assert torch.equal(every.robust, every.clean_correct & ~every.fooled.any(0))
    # and no member run on its own, outside the ensemble, does better than the ensemble
    for m in MEMBERS[:2]:
        attack = m.build(snn, 0.03, seed=0)
        with torch.no_grad():
            standalone = float((snn(attack(x, y, ids=torch.arange(len(y)))).argmax(1) == y).float().mean())
        assert fast.robust_acc <= standalone + 1e-9


def test_breaker_record_and_running_accuracy_are_consistent(both_runs, snn, data):
    fast, _ = both_runs
    x, y = data
    n = len(y)
    assert int((fast.breaker == -2).sum()) == int((~fast.clean_correct).sum())
    assert int((fast.breaker == -1).sum()) == int(fast.robust.sum())
    assert sum(r.broke for r in fast.members) == int((fast.clean_correct & ~fast.robust).sum())
    running = [r.running_acc for r in fast.members]
    assert running == sorted(running, reverse=True) and running[-1] == pytest.approx(fast.robust_acc)
    with torch.no_grad():
        pred = snn(fast.x_adv).argmax(1)
    broken = fast.breaker >= 0
    assert bool((pred[broken] != y[broken]).all())  # each recorded break is a real adversarial example
    assert bool((pred[fast.robust] == y[fast.robust]).all())
    assert float((fast.x_adv - x).abs().max()) <= 0.03 + 1e-6
    for k, r in enumerate(fast.members):
        assert r.broke == int((fast.breaker == k).sum()) and r.index == k
    assert n == fast.n


def test_members_accept_tuples_classes_and_built_attacks(snn, data):
    x, y = data[0][:16], data[1][:16]
    assert as_member(("pgd", "bptr", {"steps": 2})) == Member("pgd", "bptr", {"steps": 2})
    assert as_member((PGD, "ann")).attack == "pgd"
    ens = Ensemble(snn, [PGD(snn, eps=0.03, steps=2), ("fgsm", "triangle:0.5")], eps=0.03)
    assert ens.labels() == ["pgd-2@default", "fgsm@bptt:triangle(w=0.5)"]
    assert ens.run(x, y).n == 16
    with pytest.raises(ValueError, match="eps"):
        Ensemble(snn, [PGD(snn, eps=0.05)], eps=0.03)


def test_presets_list_their_members(snn):
    ann = trained_toy_model("ann")
    ens = preset_members("pgd-ens", snn)
    assert len(ens) == 19 and [m.estimator for m in ens] == list(SEED_ESTIMATORS)
    assert all(m.attack == "pgd" and m.params["steps"] == 20 for m in ens)
    std = preset_members("standard", snn, calibrated=[SEED_ESTIMATORS[3], SEED_ESTIMATORS[4], SEED_ESTIMATORS[0]])
    assert std[:19] == ens
    assert [m.label() for m in std[19:]] == [
        "apgd-t@bptt:triangle(w=0.5)", "apgd-t@bptt:triangle(w=0.25)", "square-5000"
    ]
    assert [m.label() for m in preset_members("standard", snn, SEED_ESTIMATORS[3])[19:]] == [
        "apgd-t@bptt:triangle(w=0.5)", "square-5000"
    ]
    assert [m.label() for m in preset_members("quick", snn)] == ["pgd-10@bptt:triangle(w=1)"]
    aa = [m.attack for m in preset_members("autoattack", snn)]
    assert aa == ["apgd-ce", "apgd-t", "fab-t", "square"]
    full = preset_members("full", snn)
    assert [m.attack for m in full[-3:]] == ["square", "transfer", "noise"]
    assert all(m.white_box for m in full[:-3])  # black box last: their breaks are masking evidence
    # estimators collapse on an ANN
    assert [m.label() for m in preset_members("standard", ann)] == ["pgd-20@default", "apgd-t@default", "square-5000"]
    with pytest.raises(ValueError, match="unknown preset"):
        preset_members("strong")


def test_evaluate_returns_a_result_that_round_trips_through_json(snn, data, tmp_path):
    x, y = data
    res = evaluate(snn, (x, y), preset="quick", eps="0.02,0.05", n=48, seed=1, command="pytest", diagnostics=False)
    assert res.eps == [0.02, 0.05] and res.n == 48 and res.preset == "quick"
    assert res.at(0.05).robust_acc <= res.at(0.02).robust_acc <= res.clean_acc
    r = res.at(0.02)
    assert len(r.breaker) == 48 and r.members[0]["label"] == "pgd-10@bptt:triangle(w=1)"
    assert r.members[0]["broke"] == sum(1 for b in r.breaker if b == 0)
    path = res.save(tmp_path / "out" / "result.json")
    d = json.loads(path.read_text())
    assert d["format"] == "robustsnn-eval" and d["version"] and d["seed"] == 1 and d["command"] == "pytest"
    assert d["model"]["kind"] == "snn" and d["members"][0]["attack"] == "pgd"
    assert not list(path.parent.glob(".*"))  # atomic write leaves no temporary file
    back = EvalResult.load(path)
    assert back.robust_acc == res.robust_acc and back.results[1].breaker == res.results[1].breaker
    again = evaluate(snn, (x, y), preset="quick", eps=[0.02, 0.05], n=48, seed=1, diagnostics=False)
    assert again.results[1].breaker == res.results[1].breaker  # one seed fixes everything
    with pytest.raises(ValueError, match="did you mean 8/255"):
        evaluate(snn, (x, y), eps=8)


def test_autoattack_preset_calibrates_the_estimator(snn, data):
    x, y = data
    res = evaluate(snn, (x, y), preset="autoattack", eps=0.1, n=24, calibration_size=12, diagnostics=False)
    cal = res.results[0].calibration
    assert len(cal["table"]) == 19 and cal["estimator"] == cal["ranking"][0]
    assert sorted(cal["ranking"]) == sorted(row["estimator"] for row in cal["table"])
    best = min(row["acc"] for row in cal["table"])
    assert next(r for r in cal["table"] if r["estimator"] == cal["estimator"])["acc"] == best
    labels = [m["label"] for m in res.results[0].members]
    assert labels[0] == f"apgd-ce@{cal['estimator']}" and labels[-1] == "square-5000"
    assert res.robust_acc <= 0.1


def test_stochastic_models_are_evaluated_with_eot_and_majority_votes(data):
    from robustsnn import build

    torch.manual_seed(0)
    poisson = build("cnn", kind="snn", time_steps=2, width=0.25, encoding="poisson").eval()
    x, y = data
    res = evaluate(poisson, (x, y), preset="quick", eps=0.1, n=12, diagnostics=False, seed=3)
    assert res.settings["stochastic"] and res.settings["votes"] == 9 and res.settings["eot"] == 8
    assert any("EOT" in note for note in res.notes)
    again = evaluate(poisson, (x, y), preset="quick", eps=0.1, n=12, diagnostics=False, seed=3)
    assert again.results[0].breaker == res.results[0].breaker  # the seed also fixes the Poisson encoder


def test_cli_evaluate_prints_the_table_and_writes_json(tmp_path):
    from typer.testing import CliRunner

    from robustsnn import checkpoint
    from robustsnn.cli import app

    ckpt = checkpoint.save(tmp_path / "run" / "model", trained_toy_model("ann"), dataset="fashion-mnist")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        app, ["evaluate", str(ckpt), "--preset", "quick", "--eps", "0.05,8/255", "--n", "32", "--no-diagnostics",
              "--no-progress", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "ensemble (worst case)" in result.output and "pgd-10" in result.output
    d = json.loads(out.read_text())
    assert d["eps"] == [0.05, 8 / 255] and d["n"] == 32 and d["dataset"] == "fashion-mnist"
    assert d["command"].startswith("robustsnn") and d["model"]["kind"] == "ann"
    assert (tmp_path / "eval-cache").is_dir()
    assert not any(m["cached"] for r in d["results"] for m in r["members"])
    # the same command again takes its finished members from eval-cache/ next to the result
    args = ["evaluate", str(ckpt), "--preset", "quick", "--eps", "0.05,8/255", "--n", "32", "--no-diagnostics", "--no-progress"]
    assert CliRunner().invoke(app, [*args, "--out", str(tmp_path / "r2.json")]).exit_code == 0
    d2 = json.loads((tmp_path / "r2.json").read_text())
    assert all(m["cached"] for r in d2["results"] for m in r["members"])
    assert [r["breaker"] for r in d2["results"]] == [r["breaker"] for r in d["results"]]
    assert any("from the cache" in note for note in d2["notes"])
    assert CliRunner().invoke(app, [*args, "--no-cache", "--out", str(tmp_path / "r3.json")]).exit_code == 0
    d3 = json.loads((tmp_path / "r3.json").read_text())
    assert not any(m["cached"] for r in d3["results"] for m in r["members"])
    bad = CliRunner().invoke(app, ["evaluate", str(ckpt), "--eps", "8", "--n", "4"])
    assert bad.exit_code != 0 and "did you mean 8/255" in str(bad.exception or bad.output)


def test_a_killed_ensemble_resumes_from_its_member_cache_with_the_same_verdicts(snn, data, tmp_path, monkeypatch):
    x, y = data
    ref = Ensemble(snn, MEMBERS, eps=0.03, batch_size=32).run(x, y)

    killed = Ensemble(snn, MEMBERS, eps=0.03, batch_size=32, cache_dir=tmp_path)

    def power_cut(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(killed.attacks[3], "perturb", power_cut)
    with pytest.raises(KeyboardInterrupt):
        killed.run(x, y)

    again = Ensemble(snn, MEMBERS, eps=0.03, batch_size=32, cache_dir=tmp_path)
    for a in again.attacks[:3]:  # finished members must come from the cache, not run again
        monkeypatch.setattr(a, "perturb", power_cut)
    res = again.run(x, y)
    assert [r.cached for r in res.members] == [True, True, True, False, False, False]
    assert torch.equal(res.breaker, ref.breaker) and torch.equal(res.robust, ref.robust)
    assert torch.equal(res.x_adv, ref.x_adv)
    assert [r.broke for r in res.members] == [r.broke for r in ref.members]

    # a longer member list that starts with the same members reuses all of them
    longer = MEMBERS + [Member("fgsm", "triangle:1")]
    res_long = Ensemble(snn, longer, eps=0.03, batch_size=32, cache_dir=tmp_path).run(x, y)
    assert [r.cached for r in res_long.members] == [True] * 6 + [False]


def test_the_member_cache_is_not_reused_when_anything_that_decides_the_outcome_changes(snn, data, tmp_path):
    x, y = data
    Ensemble(snn, MEMBERS[:2], eps=0.03, batch_size=32, cache_dir=tmp_path).run(x, y)
    other_eps = Ensemble(snn, MEMBERS[:2], eps=0.05, batch_size=32, cache_dir=tmp_path).run(x, y)
    assert not any(r.cached for r in other_eps.members)
    other_data = Ensemble(snn, MEMBERS[:2], eps=0.03, batch_size=32, cache_dir=tmp_path).run(x[:40], y[:40])
    assert not any(r.cached for r in other_data.members)
    changed = trained_toy_model("snn")
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3
    other_model = Ensemble(changed, MEMBERS[:2], eps=0.03, batch_size=32, cache_dir=tmp_path).run(x, y)
    assert not any(r.cached for r in other_model.members)
    other_order = Ensemble(snn, MEMBERS[1::-1], eps=0.03, batch_size=32, cache_dir=tmp_path).run(x, y)
    assert not any(r.cached for r in other_order.members)
    same = Ensemble(snn, MEMBERS[:2], eps=0.03, batch_size=32, cache_dir=tmp_path).run(x, y)
    assert all(r.cached for r in same.members)
