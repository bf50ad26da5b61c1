"""Gradient-masking diagnostics trip on a model that hides its gradient and stay quiet on normal ones."""

from __future__ import annotations

import warnings

import pytest
import torch

from robustsnn.attacks import PGD, RobustnessWarning
from robustsnn.attacks.diagnostics import check_eps_monotone, check_estimator_gap, zero_gradient_share
from robustsnn.attacks.ensemble import EnsembleResult, MemberRecord
from robustsnn.attacks.toy import GradientMaskedModel, toy_data, trained_toy_model
from robustsnn.evaluate import evaluate


@pytest.fixture(scope="module")
def data():
    return toy_data("test", 64)


def tripped(res) -> set[str]:
    return {c["name"] for c in res.diagnostics["checks"] if c["tripped"]}


@pytest.mark.parametrize("kind", ["snn", "ann"])
def test_a_hard_step_with_zero_gradient_trips_the_diagnostics(kind, data):
    masked = GradientMaskedModel(trained_toy_model(kind))  # round(): zero derivative everywhere
    x, y = data
    with pytest.warns(RobustnessWarning):
        res = evaluate(masked, (x, y), preset="quick", eps=0.1, n=64, calibration_size=32, probe_queries=100)
    # white-box PGD sees no gradient and reports a robustness the model does not have
    assert res.robust_acc > 0.5
    assert {"zero_gradients", "black_box", "large_eps"} <= tripped(res)
    zero = next(c for c in res.diagnostics["checks"] if c["name"] == "zero_gradients")
    assert zero["value"] == 1.0
    assert res.warnings and all(isinstance(w, str) for w in res.warnings)
    assert res.to_dict()["diagnostics"]["tripped"] is True


def test_diagnostics_stay_quiet_on_normal_models(data):
    x, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", RobustnessWarning)
        ann = evaluate(trained_toy_model("ann"), (x, y), preset="quick", eps=[0.05, 0.1], n=64, calibration_size=32)
        snn = evaluate(trained_toy_model("snn"), (x, y), preset="pgd-ens", eps=0.1, n=64, calibration_size=32)
    for res in (ann, snn):
        assert not tripped(res) and res.warnings == []
        names = {c["name"] for c in res.diagnostics["checks"]}
        assert {"zero_gradients", "black_box", "large_eps", "more_steps", "eps_monotone"} <= names
    assert "estimator_gap" in {c["name"] for c in snn.diagnostics["checks"]}  # 19 white-box members
    assert ann.at(0.1).robust_acc < ann.at(0.05).robust_acc


def test_zero_gradient_share_counts_only_samples_masked_under_every_estimator(data):
    snn = trained_toy_model("snn")
    x, y = data[0][:16], data[1][:16]
    share, per = zero_gradient_share(snn, x, y, [None, "triangle:0.25", "bptr"])
    assert share == 0.0 and set(per) == {"default", "bptt:triangle(w=0.25)", "bptr"}
    masked = GradientMaskedModel(snn)
    share, per = zero_gradient_share(masked, x, y, [None, "ste"])
    assert share == 1.0 and all(v == 1.0 for v in per.values())
    assert torch.equal(PGD(masked, eps=0.1, steps=3, random_start=False)(x, y), x)  # PGD cannot move


def test_accuracy_rising_with_eps_trips_the_monotonicity_check():
    rising = check_eps_monotone([(0.05, 0.30), (0.1, 0.40), (0.2, 0.10)], n=200)
    assert rising.tripped and "0.05" in rising.message and "0.1" in rising.message
    assert not check_eps_monotone([(0.05, 0.30), (0.1, 0.301)], n=200).tripped  # within one sample
    assert not check_eps_monotone([(0.05, 0.30), (0.1, 0.2), (0.2, 0.0)], n=200).tripped
    assert check_eps_monotone([(0.1, 0.3)], n=200) is None


def _ensemble(*accs_white_box, n: int = 1000) -> EnsembleResult:
    accs = [acc for acc, _ in accs_white_box]
    members = [MemberRecord(i, f"member{i}", wb, attacked=n, running_acc=acc, broke=round(((accs[i - 1] if i else 1.0) - acc) * n))
               for i, (acc, wb) in enumerate(accs_white_box)]
    zeros = torch.zeros(n, dtype=torch.bool)
    return EnsembleResult(0.1, "linf", ~zeros, zeros, torch.full((n,), -2), torch.zeros(n, 1), members)


def test_estimator_gap_trips_when_later_estimators_break_what_the_first_left():
    # the 60 000 x 3 LIF run with MPPD rho = 1: PGD-20 with its own surrogate left 47.9 %, the ensemble 4.4 %
    masked = check_estimator_gap(_ensemble((0.479, True), (0.159, True), (0.044, True), (0.03, False)))
    assert masked.tripped and masked.value == pytest.approx(0.435) and masked.threshold == pytest.approx(0.479 / 4)
    assert "member0 alone left 47.9%" in masked.message and masked.details["white_box_acc"] == 0.044
    # a typical robust row: 59.2 % -> 53.1 % (the black-box member's breaks do not count here)
    assert not check_estimator_gap(_ensemble((0.592, True), (0.531, True), (0.30, False))).tripped
    assert not check_estimator_gap(_ensemble((0.04, True), (0.025, True))).tripped  # under the 2-point floor
    # two images of 64: above the 2-point floor, but noise; four are not
    assert not check_estimator_gap(_ensemble((3 / 64, True), (1 / 64, True), n=64)).tripped
    assert check_estimator_gap(_ensemble((5 / 64, True), (1 / 64, True), n=64)).tripped
    assert check_estimator_gap(_ensemble((0.5, True), (0.1, False))) is None  # one white-box member
    # strongest runs Square between white-box members: its breaks are not the estimators'
    assert not check_estimator_gap(_ensemble((0.5, True), (0.1, False), (0.09, True))).tripped
