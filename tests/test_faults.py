"""Faults: ``kill -9`` of train, evaluate and pipeline at random points, and damaged files.

Each kill test runs the command three times on a tiny Fashion-MNIST-format data set
written to a temporary folder: once uninterrupted (in-process, ``robustsnn.cli.main``),
once as a real process (``python -m robustsnn``) killed with SIGKILL at a random point
(after a random number of finished epochs / members / stages plus a random part of the
next one), and once more in-process to finish. The
rerun must keep everything that had finished (not one epoch, member or stage redone)
and end bit-identical to the uninterrupted run. The random point is printed on failure;
``ROBUSTSNN_FAULT_SEED=N`` repeats it.

The fuzz tests feed the checkpoint and member-cache readers random bytes, truncations
and swapped files: they may refuse (one-line :class:`RobustSNNError`) or, for the cache,
recompute, but never crash with anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import robustsnn
from robustsnn import checkpoint
from robustsnn.attacks.cache import MemberCache
from robustsnn.errors import RobustSNNError

from helpers import tiny_snn, write_fmnist_idx

SRC = Path(__file__).resolve().parents[1] / "src"
SEED = int(os.environ.get("ROBUSTSNN_FAULT_SEED", random.SystemRandom().randrange(1 << 30)))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_fmnist_idx(tmp_path_factory.mktemp("data"), n_train=128, n_test=32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny SNN trained on the synthetic set: it classifies well, so attacks have work to do."""
    from robustsnn.train import TrainConfig, fit

    from helpers import synthetic_fmnist

    out = tmp_path_factory.mktemp("trained")
    model = tiny_snn()
    fit(model, synthetic_fmnist(256), None, TrainConfig(epochs=3, batch_size=32, lr=0.05, seed=3), out, progress=False)
    return out / "model"


def _env() -> dict:
    # the same number of threads as this process: in-process and killed runs must agree bit for bit
    threads = str(torch.get_num_threads())
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": threads, "ROBUSTSNN_DATA": "/nonexistent"}
    env.pop("ROBUSTSNN_DEBUG", None)
    return env


def _cmd(*args) -> list[str]:
    return [sys.executable, "-m", "robustsnn", *map(str, args)]


def _run(cwd: Path, *args) -> tuple[int, str]:
    """``robustsnn ARGS`` in-process with ``cwd`` as working directory: (exit code, stderr)."""
    import contextlib
    import io

    from robustsnn.cli import main

    err = io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    finally:
        os.chdir(old)
    return code, err.getvalue()


def _ok(cwd: Path, *args) -> None:
    code, err = _run(cwd, *args)
    assert code == 0, f"{args}\n{err}"


def _kill_at(cwd: Path, args, finished, wait_for: int, extra: float) -> None:
    """Start the command, wait until ``finished()`` >= wait_for, sleep ``extra`` s, SIGKILL it."""
    proc = subprocess.Popen(_cmd(*args), cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and finished() < wait_for and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(extra)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _same_tensors(a: Path, b: Path) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


# ---------------------------------------------------------------- train


def test_killed_train_resumes_without_losing_an_epoch_and_ends_identical(data, tmp_path):
    rng = random.Random(SEED)
    args = ["train", "--width", "0.25", "-T", "2", "--epochs", "4", "--train-subset", "96", "--test-subset", "16",
            "--batch-size", "16", "--data-dir", data, "--no-progress", "--out", "run"]
    (tmp_path / "ref").mkdir()
    (tmp_path / "cut").mkdir()
    _ok(tmp_path / "ref", *args)
    ref = tmp_path / "ref" / "run" / "model"
    epoch_s = max(e["seconds"] for e in json.loads((ref / "config.json").read_text())["history"])

    cut = tmp_path / "cut" / "run" / "model"
    wait_for, extra = rng.randrange(0, 4), rng.uniform(0, 1.5 * epoch_s)
    point = f"killed after {wait_for} epochs + {extra:.3f} s (ROBUSTSNN_FAULT_SEED={SEED})"

    def epochs_done():
        meta = _read_json(cut / "config.json")
        return meta.get("epoch", 0) if meta else 0

    _kill_at(tmp_path / "cut", args, epochs_done, wait_for, extra)
    meta = _read_json(cut / "config.json") if (cut / "config.json").exists() else None
    if meta is None:  # killed in the window of a swap: the reader puts the previous version back
        try:
            meta = checkpoint.read_meta(cut)
        except RobustSNNError:
            meta = None
    history_at_kill = meta["history"] if meta else []

    code, err = _run(tmp_path / "cut", *args, "--resume")
    if history_at_kill:
        assert code == 0, f"{point}\n{err}"
    else:  # nothing had finished: --resume says so in one line, the plain command starts over
        assert code in (0, 2) and "Traceback" not in err, f"{point}\n{err}"
        if code == 2:
            assert "nothing to resume" in err, point
            _ok(tmp_path / "cut", *args)
    final = checkpoint.read_meta(cut)
    assert final["epoch"] == 4, point
    assert final["history"][: len(history_at_kill)] == history_at_kill, f"a finished epoch ran again: {point}"
    _same_tensors(ref / "weights.safetensors", cut / "weights.safetensors")
    _same_tensors(ref / "optimizer.safetensors", cut / "optimizer.safetensors")


# ---------------------------------------------------------------- evaluate (inside an ensemble member)


def test_killed_evaluate_keeps_finished_members_and_ends_with_the_same_verdicts(data, trained, tmp_path):
    rng = random.Random(SEED + 1)
    args = ["evaluate", trained, "--preset", "pgd-ens", "--eps", "0.05", "--n", "8",
            "--data-dir", data, "--no-diagnostics", "--no-progress", "--out", "r.json"]
    (tmp_path / "ref").mkdir()
    (tmp_path / "cut").mkdir()
    _ok(tmp_path / "ref", *args)
    ref = json.loads((tmp_path / "ref" / "r.json").read_text())
    n_members = len(ref["results"][0]["members"])
    assert n_members >= 5 and ref["results"][0]["robust_acc"] < ref["results"][0]["clean_acc"], "too weak a test"
    cache = tmp_path / "cut" / "eval-cache"

    def members_done():
        return len(list(cache.glob("*/*.json")))

    wait_for = rng.randrange(0, n_members)
    extra = rng.uniform(0, 0.05)
    point = f"killed after {wait_for} members + {extra:.3f} s (ROBUSTSNN_FAULT_SEED={SEED})"
    _kill_at(tmp_path / "cut", args, members_done, wait_for, extra)
    done = members_done()

    _ok(tmp_path / "cut", *args)
    res = json.loads((tmp_path / "cut" / "r.json").read_text())
    cached = [m["cached"] for m in res["results"][0]["members"]]
    assert all(cached[:done]) and not any(cached[done:]), f"{done} members had finished, cached {cached}: {point}"
    for a, b in zip(ref["results"], res["results"]):
        assert a["breaker"] == b["breaker"] and a["robust_acc"] == b["robust_acc"], point
        assert [m["broke"] for m in a["members"]] == [m["broke"] for m in b["members"]], point


# ---------------------------------------------------------------- pipeline (inside a stage)

PIPELINE = """\
width: 0.25
train_subset: 96
snn_train_subset: 64
ann_epochs: 2
prune_finetune_epochs: 1
hydra_epochs: 1
snn_epochs: 1
ann_attack_steps: 1
time_steps: 2
calib_batches: 2
calib_time_steps: 8
calib_batch_size: 16
eval_preset: quick
eval_n: 16
efficiency_n: 16
sparsity: 0.9
pruning: lwm
"""
STAGE_FILES = {"ann": "ann", "prune": "prune", "convert": "snn", "finetune": "finetune",
               "evaluate": "eval-quick.json", "efficiency": "efficiency.json", "report": "report.md"}


def _files(root: Path, prefix: str) -> dict[str, tuple[int, str]]:
    base = root / prefix
    paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()) if base.exists() else []
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in paths}


def test_killed_pipeline_keeps_finished_stages_and_ends_identical(data, tmp_path):
    rng = random.Random(SEED + 2)
    (tmp_path / "p.yaml").write_text(PIPELINE)
    args = ["pipeline", "--config", tmp_path / "p.yaml", "--data-dir", data, "--no-progress", "--out", "run"]
    (tmp_path / "ref").mkdir()
    (tmp_path / "cut").mkdir()
    _ok(tmp_path / "ref", *args)
    cut = tmp_path / "cut" / "run"

    def stages_done():
        state = _read_json(cut / "pipeline.json")
        return len(state["stages"]) if state else 0

    wait_for, extra = rng.randrange(0, len(STAGE_FILES)), rng.uniform(0, 0.4)
    point = f"killed after {wait_for} stages + {extra:.3f} s (ROBUSTSNN_FAULT_SEED={SEED})"
    _kill_at(tmp_path / "cut", args, stages_done, wait_for, extra)
    state = _read_json(cut / "pipeline.json") or {"stages": []}
    finished = [s["name"] for s in state["stages"]]
    kept = {name: _files(cut, STAGE_FILES[name]) for name in finished}

    _ok(tmp_path / "cut", *args)
    for name, files in kept.items():
        assert files and _files(cut, STAGE_FILES[name]) == files, f"finished stage {name} ran again: {point}"
    ref = tmp_path / "ref" / "run"
    _same_tensors(ref / "finetune" / "model" / "weights.safetensors", cut / "finetune" / "model" / "weights.safetensors")
    a, b = json.loads((ref / "eval-quick.json").read_text()), json.loads((cut / "eval-quick.json").read_text())
    assert [r["breaker"] for r in a["results"]] == [r["breaker"] for r in b["results"]], point
    assert [s["name"] for s in json.loads((cut / "pipeline.json").read_text())["stages"]] == list(STAGE_FILES)


# ---------------------------------------------------------------- the swap window, deterministically


def test_a_save_killed_between_its_two_renames_loses_nothing(tmp_path, monkeypatch):
    import robustsnn.io as io_mod

    model = tiny_snn()
    checkpoint.save(tmp_path / "ck", model, epoch=1)
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the old version is aside, the new one not yet in place
            raise SystemExit("killed")
        return real(src, dst)

    monkeypatch.setattr(io_mod.os, "replace", replace)
    with pytest.raises(SystemExit):
        checkpoint.save(tmp_path / "ck", model, epoch=2)
    monkeypatch.setattr(io_mod.os, "replace", real)
    assert not (tmp_path / "ck").exists()
    assert checkpoint.read_meta(tmp_path / "ck")["epoch"] == 1  # put back by the reader
    checkpoint.save(tmp_path / "ck", model, epoch=3)
    assert checkpoint.read_meta(tmp_path / "ck")["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ck"], "leftovers of the killed save"


# ---------------------------------------------------------------- fuzz: checkpoint and member-cache readers


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("good") / "ck"
    model = tiny_snn()
    from robustsnn.sparsity import set_mask

    set_mask(model.body[0], (torch.rand_like(model.body[0].weight) > 0.5).float())
    checkpoint.save(p, model, dataset="fashion-mnist")
    sparse = p.parent / "sparse"
    _ok(p.parent, "export", p, sparse, "--sparse")
    return p


def _damage(blob: bytes, how: str, at: float, noise: bytes) -> bytes:
    i = int(at * len(blob))
    if how == "truncate":
        return blob[:i]
    if how == "random":
        return noise
    if how == "flip":
        return blob[:i] + noise[:8] + blob[i + 8:]
    return blob[:i] + noise + blob[i:]  # insert


damage = st.tuples(st.sampled_from(["truncate", "random", "flip", "insert"]), st.floats(0, 1), st.binary(min_size=0, max_size=64))


def _expect_refusal_or_model(path: Path) -> None:
    try:
        model = robustsnn.load(path)
    except RobustSNNError as e:
        assert "\n" not in str(e) and str(e), repr(e)
        return
    model(torch.rand(1, 1, 28, 28))  # if it loads, it must be a working model


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["config.json", "weights.safetensors", "swap", "sparse-config", "sparse-weights"]), d=damage)
def test_fuzzed_checkpoints_load_or_give_one_line(good_ckpt, tmp_path_factory, which, d):
    work = tmp_path_factory.mktemp("fuzz") / "ck"
    src = good_ckpt.parent / "sparse" if which.startswith("sparse") else good_ckpt
    shutil.copytree(src, work)
    if which == "swap":
        a, b = (work / "config.json").read_bytes(), (work / "weights.safetensors").read_bytes()
        (work / "config.json").write_bytes(b)
        (work / "weights.safetensors").write_bytes(a)
    else:
        name = which.removeprefix("sparse-")
        name = "config.json" if name == "config" else "weights.safetensors" if name == "weights" else name
        target = work / name
        target.write_bytes(_damage(target.read_bytes(), *d))
    _expect_refusal_or_model(work)


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory):
    """A tiny member cache with two finished links, and the ensemble that wrote it."""
    from robustsnn.attacks.ensemble import Ensemble, Member

    root = tmp_path_factory.mktemp("cache")
    model = tiny_snn()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(8, 1, 28, 28, generator=g), torch.arange(8) % 10
    members = [Member("fgsm", "triangle:1"), Member("pgd", "triangle:0.5", {"steps": 2})]
    ref = Ensemble(model, members, eps=0.05, batch_size=8, cache_dir=root).run(x, y)
    return root, model, members, x, y, ref


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(d=damage, pick=st.integers(0, 3), swap=st.booleans())
def test_fuzzed_member_cache_is_recomputed_never_trusted_or_crashing(cached_run, tmp_path_factory, d, pick, swap):
    from robustsnn.attacks.ensemble import Ensemble

    root, model, members, x, y, ref = cached_run
    work = tmp_path_factory.mktemp("cachefuzz") / "c"
    shutil.copytree(root, work)
    files = sorted(p for p in work.rglob("*") if p.is_file())
    if swap and len(files) >= 4:  # the two links' files exchanged
        a, b = files[pick % 2], files[2 + pick % 2]
        blob_a, blob_b = a.read_bytes(), b.read_bytes()
        a.write_bytes(blob_b)
        b.write_bytes(blob_a)
    else:
        target = files[pick % len(files)]
        target.write_bytes(_damage(target.read_bytes(), *d))
    try:
        res = Ensemble(model, members, eps=0.05, batch_size=8, cache_dir=work).run(x, y)
    except RobustSNNError as e:
        assert "\n" not in str(e)
        return
    assert torch.equal(res.breaker, ref.breaker) and torch.equal(res.robust, ref.robust)
