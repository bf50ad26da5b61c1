"""The ordered ensemble behind the `strongest` preset, and the preset itself."""

import pytest
import torch
from torch import nn

from robustsnn.attacks import Ensemble, Member, preset_members
from robustsnn.attacks.ensemble import MemberRecord
from robustsnn.attacks.presets import essential_members
from robustsnn.attacks.strongest import OrderedEnsemble, order_members
from robustsnn.attacks.toy import sharp_potential_model, toy_data, trained_toy_model


@pytest.fixture(scope="module")
def setup():
    model = sharp_potential_model(trained_toy_model("snn"))
    x, y = toy_data("test", 24)
    return model, x, y


MEMBERS = [
    Member("fgsm", "triangle:1"),  # masked on the sharp model: breaks nothing (no random start to tip a borderline image)
    Member("pgd", "rga", {"steps": 5}),
    Member("fgsm", "pdsg"),
]


def test_ordered_ensemble_without_pruning_gives_the_plain_ensembles_verdicts(setup):
    """Randomness is keyed by the sample's index in the whole set: reordering changes no verdict."""
    model, x, y = setup
    plain = Ensemble(model, MEMBERS, eps=0.1).run(x, y)
    ordered = OrderedEnsemble(model, MEMBERS, eps=0.1, calibration_size=8, prune=False).run(x, y)
    assert torch.equal(plain.robust, ordered.robust)
    assert torch.equal(plain.clean_correct, ordered.clean_correct)
    assert sum(r.broke for r in ordered.members) == int((ordered.breaker >= 0).sum())
    for j, r in enumerate(ordered.members):  # breaker indices point at the listed order
        assert r.index == j and r.broke == int((ordered.breaker == j).sum())
        assert r.seconds > 0 and r.calibration["samples"] == 8
    # the broken images really fool the model and stay in the budget
    hit = ordered.breaker >= 0
    with torch.no_grad():
        assert (model(ordered.x_adv[hit]).argmax(1) != y[hit]).all()
    assert float((ordered.x_adv - x).abs().amax()) <= 0.1 + 1e-6


def test_members_that_break_nothing_on_the_calibration_batch_are_dropped(setup):
    """The masked fixed-surrogate FGSM breaks nothing in phase 1: phase 2 skips it; RGA leads."""
    model, x, y = setup
    res = OrderedEnsemble(model, MEMBERS, eps=0.1, calibration_size=12).run(x, y)
    assert res.members[0].label == "pgd-5@rga"
    masked = next(r for r in res.members if r.label == "fgsm@bptt:triangle(w=1)")
    assert masked.calibration["attacked"] > 0 and masked.calibration["broke"] == 0
    for r in res.members:  # dropped exactly when it attacked something in phase 1 and broke nothing
        idle = r.calibration["attacked"] > 0 and r.calibration["broke"] == 0
        assert r.calibration["pruned"] == idle
        if idle:
            assert r.attacked == r.calibration["attacked"] and r.index > 0


def test_order_members_rule():
    """Breakers by breaks per second, then kept idle white-box members, black-box last."""
    recs = [MemberRecord(0, "a", True, attacked=10, broke=2, seconds=2.0),
            MemberRecord(1, "b", True, attacked=8, broke=0, seconds=1.0),
            MemberRecord(2, "c", True, attacked=8, broke=4, seconds=1.0),
            MemberRecord(3, "sq", False, attacked=4, broke=0, seconds=1.0),
            MemberRecord(4, "d", True, attacked=0, broke=0, seconds=0.0)]
    assert order_members(recs) == [2, 0, 4]
    assert order_members(recs, essential=[1, 3]) == [2, 0, 1, 4, 3]
    assert order_members(recs, prune=False) == [2, 0, 1, 4, 3]


def test_strongest_preset_lists_every_attack_family():
    members = preset_members("strongest")
    attacks = [m.attack for m in members]
    for a in ("pgd", "sa-pgd", "hart", "rga", "apgd-dlr", "apgd-t", "square"):
        assert a in attacks
    assert sum(m.attack == "pgd" for m in members) == 20  # the 19 of PGD_ens + PDSG
    assert [members[i].attack for i in essential_members(members)] == ["sa-pgd", "apgd-dlr", "apgd-t", "square"]
    assert not members[-1].white_box
    assert [m.attack for m in members if m.focus] == ["apgd-dlr", "apgd-t", "square"]  # the closers: lowest margins only
    apgdt = next(m for m in members if m.attack == "apgd-t")
    # the closing APGD-T tries the top-3 targets and says so; standard keeps AutoAttack's 9
    assert apgdt.params["n_target_classes"] == 3 and apgdt.build(nn.Identity(), 0.1).n_target_classes == 3
    assert "[3 targets]" in apgdt.label()
    assert all("targets]" not in m.label() for m in preset_members("standard"))


def test_evaluate_strongest_lists_every_member_with_its_cost():
    import robustsnn

    model = trained_toy_model("snn")
    x, y = toy_data("test", 16)
    res = robustsnn.evaluate(model, (x, y), preset="strongest", eps=0.1, n=16, diagnostics=False, calibration_size=8)
    members = res.results[0].members
    assert len(members) == len(preset_members("strongest"))
    assert all("seconds" in m and m["calibration"]["samples"] == 4 for m in members)
    ens = robustsnn.evaluate(model, (x, y), preset="pgd-ens", eps=0.1, n=16, diagnostics=False)
    assert res.robust_acc <= ens.robust_acc


class _Recorder:
    """A fake white-box attack: records which samples it was given and returns them unchanged."""

    white_box = True

    def __init__(self, eps=0.1):
        self.eps, self.norm, self.seen = eps, "Linf", []

    def label(self):
        return "recorder"

    def __call__(self, x, y, ids=None):
        self.seen.extend(ids.tolist())
        return x


def test_margin_is_the_smallest_over_clean_and_every_member(setup):
    """EnsembleResult.margin: z_y - max_{j != y} z_j, the minimum over the clean image and every
    member's returned image; negative exactly where a member broke the sample."""
    from robustsnn.attacks.ensemble import logit_margin

    model, x, y = setup
    res = Ensemble(model, MEMBERS[1:], eps=0.1, early_exit=False).run(x, y)
    with torch.no_grad():
        clean = logit_margin(model(x), y)
    ok = res.clean_correct
    assert torch.isnan(res.margin[~ok]).all()
    assert (res.margin[ok] <= clean[ok] + 1e-6).all()
    assert ((res.margin[ok] < 0) == ~res.robust[ok]).all()
    # the minimum over members: rerun each member alone and compare
    lows = [Ensemble(model, [m], eps=0.1).run(x, y).margin for m in MEMBERS[1:]]
    torch.testing.assert_close(res.margin[ok], torch.minimum(*lows)[ok])


def test_focused_member_attacks_only_the_lowest_margin_survivors(setup):
    from robustsnn.attacks.ensemble import FOCUS_MIN, lowest_margin

    model, x, y = setup
    rec = _Recorder()
    ens = Ensemble(model, MEMBERS[1:], eps=0.1)
    ens.specs.append(Member("square", None, {"n_queries": 1}, focus=0.25))
    ens.attacks.append(rec)
    res = ens.run(x, y)
    survivors = res.robust.nonzero().squeeze(1)
    m = res.margin[survivors]
    keep = min(len(survivors), max(FOCUS_MIN, -(-len(survivors) // 4)))
    expected = survivors[m.argsort(stable=True)[:keep]].sort().values
    assert sorted(rec.seen) == expected.tolist()
    assert res.members[-1].attacked == keep and res.members[-1].label.endswith("[lowest-margin 25%]")
    pool = torch.arange(20)
    margin = torch.arange(20, 0, -1).float()
    assert lowest_margin(pool, margin, 0.5).tolist() == list(range(10, 20))
    assert lowest_margin(pool, margin, 0.1).tolist() == list(range(12, 20))  # FOCUS_MIN = 8
    assert lowest_margin(pool, torch.full((20,), float("nan")), 0.1).tolist() == list(range(20))
    with pytest.raises(ValueError, match="focus"):
        Member("square", None, focus=1.5)


def test_focused_members_close_the_order():
    recs = [MemberRecord(0, "a", True, attacked=10, broke=2, seconds=2.0),
            MemberRecord(1, "apgd-t", True, attacked=8, broke=3, seconds=1.0, spec={"focus": 0.25}),
            MemberRecord(2, "sq", False, attacked=8, broke=0, seconds=1.0, spec={"focus": 0.25}),
            MemberRecord(3, "c", True, attacked=8, broke=1, seconds=0.25)]
    assert order_members(recs, essential=[1, 2]) == [3, 0, 1, 2]
    assert order_members(recs) == [3, 0, 1]
