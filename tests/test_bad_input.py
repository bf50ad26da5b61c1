"""Bad input, as users meet it: every case fails with a short message, never a traceback.

Each case runs the real ``robustsnn`` command (``robustsnn.cli.main``, in-process) or a
public Python function on a tiny world made once per module: Fashion-MNIST-format IDX
files, a quarter-width SNN and ANN checkpoint, an earlier evaluation result. A case
passes only if

* the command exits non-zero (2) or the function raises a :class:`RobustSNNError`,
* no traceback is printed,
* the message names what is wrong (``what``) and says what to do (one of ``fix``),
* every file that existed before is unchanged and no file was added.

Nothing here reaches the network: downloading is replaced by an offline failure.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

import robustsnn
import robustsnn.data.download as download_mod
from robustsnn import checkpoint
from robustsnn.data import datasets as datasets_mod
from robustsnn.errors import RobustSNNError

from helpers import run_cli, tiny_snn, write_fmnist_idx

SRC = Path(__file__).resolve().parents[1] / "src"


# ---------------------------------------------------------------- the world every case runs in


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """data/ (IDX), snn/model, ann/model, snn/eval-quick.json: what a user has on disk."""
    w = tmp_path_factory.mktemp("world")
    write_fmnist_idx(w / "data", n_train=32, n_test=16)
    checkpoint.save(w / "snn" / "model", tiny_snn(), dataset="fashion-mnist")
    checkpoint.save(w / "ann" / "model", tiny_snn(kind="ann"), dataset="fashion-mnist")
    (w / "snn" / "eval-quick.json").write_text('{"format": "robustsnn-eval", "earlier": true}\n')
    (w / "a-file").write_text("not a directory\n")
    return w


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, no system data folder, a private cache; $ROBUSTSNN_DATA unset."""
    monkeypatch.delenv("ROBUSTSNN_DATA", raising=False)
    monkeypatch.delenv("ROBUSTSNN_DEBUG", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in list(datasets_mod.SYSTEM_DIRS):
        monkeypatch.setitem(datasets_mod.SYSTEM_DIRS, name, ())

    def no_network(url, destination, timeout=30.0):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(download_mod, "fetch_url", no_network)


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (relative path -> digest)."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                out[f"{root.name}/{p.relative_to(root)}"] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def read_only(monkeypatch, folder: Path) -> None:
    """Make ``folder`` unwritable: chmod for a normal user; root ignores modes, so refuse its temp files."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    import tempfile

    real_mkstemp, real_mkdtemp = tempfile.mkstemp, tempfile.mkdtemp

    def guard(real):
        def f(*a, dir=None, **kw):
            if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(*a, dir=dir, **kw)

        return f

    monkeypatch.setattr(tempfile, "mkstemp", guard(real_mkstemp))
    monkeypatch.setattr(tempfile, "mkdtemp", guard(real_mkdtemp))
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **kw):
        if self.resolve().is_relative_to(folder.resolve()) and not self.exists():
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", mkdir)


def disk_full(monkeypatch) -> None:
    """Every write of a checkpoint, a result or a JSON file fails as on a full disk."""
    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full)
    monkeypatch.setattr(Path, "write_text", full)
    monkeypatch.setattr(Path, "write_bytes", full)


# ---------------------------------------------------------------- the cases


@dataclass
class Case:
    """One bad input. ``args`` gets (world, tmp) and returns the command line; ``prepare`` sets it up."""

    id: str
    args: Callable[[Path, Path], list]
    what: tuple[str, ...]
    fix: tuple[str, ...]
    prepare: Callable | None = None  # fn(world, tmp, monkeypatch); runs before the snapshot
    patch: Callable | None = None  # fn(world, tmp, monkeypatch); runs after the snapshot


def snn(w):
    return w / "snn" / "model"


def ev(w, *extra):
    return ["evaluate", snn(w), "--preset", "quick", "--n", "4", "--no-diagnostics", "--no-progress",
            "--data-dir", w / "data", "--no-cache", *extra]


def tr(w, t, *extra):
    return ["train", "--width", "0.25", "-T", "2", "--train-subset", "16", "--test-subset", "8",
            "--data-dir", w / "data", "--no-progress", *extra]


def cfg_file(name: str, text: str):
    def prepare(w, t, mp):
        (t / name).write_text(text)

    return prepare


def copy_ckpt(damage: Callable[[Path], None]):
    """Copy the SNN checkpoint to tmp/ck and damage the copy."""
    def prepare(w, t, mp):
        shutil.copytree(snn(w), t / "ck")
        damage(t / "ck")

    return prepare


def edit_config(edit: Callable[[dict], None]):
    def damage(ck: Path):
        meta = json.loads((ck / "config.json").read_text())
        edit(meta)
        (ck / "config.json").write_text(json.dumps(meta))

    return copy_ckpt(damage)


def copy_data(damage: Callable[[Path], None]):
    def prepare(w, t, mp):
        shutil.copytree(w / "data", t / "data")
        damage(t / "data")

    return prepare


def truncate(path: Path, keep: float = 0.5) -> None:
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * keep)])


def gunzip_truncated(folder: Path) -> None:
    import gzip

    p = folder / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(p.read_bytes())
    p.unlink()
    (folder / "t10k-images-idx3-ubyte").write_bytes(raw[:-100])


def tiny_cifar(w, t, mp):
    """A CIFAR-10 folder with 3-channel 32x32 images for a 1-channel 28x28 model."""
    import pickle

    import numpy as np

    folder = t / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data = np.zeros((4, 3072), dtype=np.uint8)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        batch = {b"batch_label": b"x", b"labels": [0, 1, 2, 3], b"data": data}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


def swap_files(ck: Path) -> None:
    a, b = ck / "config.json", ck / "weights.safetensors"
    blob_a, blob_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(blob_b)
    b.write_bytes(blob_a)


HELP = ("--help",)
CASES = [
    # unknown options, missing or malformed arguments: typer's own usage message
    Case("unknown-option", lambda w, t: ["train", "--epochs", "1", "--output", "x"], ("no such option", "--output"), HELP),
    Case("not-an-int", lambda w, t: ["train", "--epochs", "abc"], ("invalid value", "--epochs"), HELP),
    Case("missing-argument", lambda w, t: ["convert"], ("missing argument",), HELP),
    Case("missing-option", lambda w, t: ["prune", snn(w), "--sparsity", "0.5"], ("missing option", "--out"), HELP),
    Case("unknown-command", lambda w, t: ["trian"], ("no such command", "trian"), HELP),
    Case("not-a-float", lambda w, t: ["prune", snn(w), "--sparsity", "half", "--out", t / "o"], ("invalid value", "--sparsity"), HELP),
    # out-of-range numbers and unknown values
    Case("sparsity-above-1", lambda w, t: ["prune", snn(w), "--sparsity", "1.5", "--out", t / "o"], ("sparsity", "1.5"), ("[0, 1)", "0.015")),
    Case("sparsity-1", lambda w, t: ["prune", snn(w), "--sparsity", "1", "--out", t / "o"], ("sparsity",), ("[0, 1)",)),
    Case("sparsity-negative", lambda w, t: ["prune", snn(w), "--sparsity", "-0.1", "--out", t / "o"], ("sparsity",), ("[0, 1)",)),
    Case("unknown-prune-method", lambda w, t: ["prune", snn(w), "--sparsity", "0.5", "--method", "magic", "--out", t / "o"], ("magic",), ("lwm",)),
    Case("eps-8", lambda w, t: ev(w, "--eps", "8"), ("eps",), ("8/255",)),
    Case("eps-1.5", lambda w, t: ev(w, "--eps", "1.5"), ("eps",), ("1.5/255", "pixel units")),
    Case("eps-negative", lambda w, t: ev(w, "--eps", "-0.1"), ("negative",), ("pixel units",)),
    Case("eps-text", lambda w, t: ev(w, "--eps", "small"), ("small",), ("8/255", "0.1")),
    Case("n-negative", lambda w, t: ev(w, "--n", "-5"), ("--n", "-5"), (">= 1",)),
    Case("batch-size-0", lambda w, t: ev(w, "--batch-size", "0"), ("--batch-size",), (">= 1",)),
    Case("unknown-preset", lambda w, t: ev(w, "--preset", "mightiest"), ("mightiest",), ("standard",)),
    Case("unknown-norm", lambda w, t: ev(w, "--norm", "L3"), ("L3",), ("Linf",)),
    Case("unknown-model", lambda w, t: tr(w, t, "--model", "resnet1000", "--out", t / "o"), ("resnet1000",), ("cnn",)),
    Case("unknown-neuron", lambda w, t: tr(w, t, "--neuron", "hodgkin", "--out", t / "o"), ("hodgkin",), ("lif",)),
    Case("unknown-encoding", lambda w, t: tr(w, t, "--encoding", "morse", "--out", t / "o"), ("morse",), ("poisson",)),
    Case("unknown-reset", lambda w, t: tr(w, t, "--reset", "middle", "--out", t / "o"), ("middle",), ("hard",)),
    Case("unknown-objective", lambda w, t: tr(w, t, "--objective", "magic", "--out", t / "o"), ("magic",), ("pgd",)),
    Case("unknown-dataset", lambda w, t: tr(w, t, "--dataset", "imagenet-1k", "--out", t / "o"), ("imagenet-1k",), ("fashion-mnist",)),
    Case("leak-above-1", lambda w, t: tr(w, t, "--leak", "1.5", "--out", t / "o"), ("leak", "1.5"), ("[0", "1]")),
    Case("time-steps-0", lambda w, t: tr(w, t, "-T", "0", "--out", t / "o"), ("time_steps",), (">= 1", "1..")),
    Case("epochs-0", lambda w, t: tr(w, t, "--epochs", "0", "--out", t / "o"), ("epochs",), (">= 1",)),
    Case("lr-negative", lambda w, t: tr(w, t, "--lr", "-1", "--out", t / "o"), ("lr",), ("> 0",)),
    Case("train-eps-8", lambda w, t: tr(w, t, "--objective", "pgd", "--eps", "8", "--out", t / "o"), ("eps",), ("/255",)),
    Case("unknown-device", lambda w, t: tr(w, t, "--device", "quantum", "--out", t / "o"), ("quantum",), ("cpu",)),
    Case("pipeline-sparsity-1", lambda w, t: ["pipeline", "--sparsity", "1", "--out", t / "o", "--data-dir", w / "data"], ("sparsity",), ("[0, 1)",)),
    Case("pipeline-eps-8", lambda w, t: ["pipeline", "--eps", "8", "--out", t / "o", "--data-dir", w / "data"], ("eps",), ("8/255",)),
    Case("efficiency-n-negative", lambda w, t: ["efficiency", snn(w), "--n", "-1", "--data-dir", w / "data"], ("n must be",), (">= 1",)),
    Case("efficiency-unknown-split", lambda w, t: ["efficiency", snn(w), "--split", "validation", "--data-dir", w / "data"], ("validation",), ("test",)),
    # config files
    Case("yaml-unknown-key", lambda w, t: ["train", "--config", t / "c.yaml", "--out", t / "o"], ("modle",), ("valid:",), cfg_file("c.yaml", "modle: cnn\n")),
    Case("yaml-wrong-type", lambda w, t: tr(w, t, "--config", t / "c.yaml", "--out", t / "o"), ("epochs", "three"), ("integer",), cfg_file("c.yaml", "epochs: three\n")),
    Case("toml-unknown-key", lambda w, t: ["train", "--config", t / "c.toml", "--out", t / "o"], ("epoch",), ("valid:",), cfg_file("c.toml", "epoch = 3\n")),
    Case("toml-wrong-type", lambda w, t: tr(w, t, "--config", t / "c.toml", "--out", t / "o"), ("time_steps", "two"), ("integer",), cfg_file("c.toml", 'time_steps = "two"\n')),
    Case("yaml-not-a-mapping", lambda w, t: ["train", "--config", t / "c.yaml", "--out", t / "o"], ("c.yaml",), ("option: value",), cfg_file("c.yaml", "- cnn\n- snn\n")),
    Case("yaml-syntax", lambda w, t: ["train", "--config", t / "c.yaml", "--out", t / "o"], ("cannot parse", "c.yaml"), ("fix the file",), cfg_file("c.yaml", "epochs: [1\n")),
    Case("toml-syntax", lambda w, t: ["train", "--config", t / "c.toml", "--out", t / "o"], ("cannot parse", "c.toml"), ("fix the file",), cfg_file("c.toml", "epochs = = 1\n")),
    Case("config-missing", lambda w, t: ["train", "--config", t / "nope.yaml", "--out", t / "o"], ("nope.yaml", "not found"), (".yaml or .toml",)),
    Case("pipeline-unknown-key", lambda w, t: ["pipeline", "--config", t / "p.yaml", "--out", t / "o"], ("sparsty",), ("valid",), cfg_file("p.yaml", "sparsty: 0.9\n")),
    # checkpoints and config.json
    Case("no-checkpoint", lambda w, t: ["info", t / "missing"], ("no checkpoint",), ("robustsnn train --out",)),
    Case("dir-not-a-checkpoint", lambda w, t: ["info", w / "data"], ("not a robustsnn checkpoint",), ("config.json",)),
    Case("corrupt-config-json", lambda w, t: ["info", t / "ck"], ("config.json",), ("damaged",), copy_ckpt(lambda ck: (ck / "config.json").write_text("{not json"))),
    Case("foreign-config-json", lambda w, t: ["info", t / "ck"], ("not a robustsnn checkpoint",), ("directory written by robustsnn",), copy_ckpt(lambda ck: (ck / "config.json").write_text('{"architectures": ["Bert"]}'))),
    Case("config-json-wrong-type", lambda w, t: ["evaluate", t / "ck", "--n", "4"], ("time_steps",), ("newer robustsnn", "re-save"), edit_config(lambda m: m["model"].update(time_steps="two"))),
    Case("config-json-no-model", lambda w, t: ["info", t / "ck"], ("missing field 'model'",), ("re-save",), edit_config(lambda m: m.pop("model"))),
    Case("config-json-unknown-field", lambda w, t: ["info", t / "ck"], ("colour",), ("newer robustsnn",), edit_config(lambda m: m["model"].update(colour="red"))),
    Case("truncated-weights", lambda w, t: ["evaluate", t / "ck", "--n", "4"], ("weights.safetensors",), ("damaged",), copy_ckpt(lambda ck: truncate(ck / "weights.safetensors"))),
    Case("random-weights-file", lambda w, t: ["info", t / "ck"], ("weights.safetensors",), ("damaged",), copy_ckpt(lambda ck: (ck / "weights.safetensors").write_bytes(os.urandom(300)))),
    Case("swapped-files", lambda w, t: ["info", t / "ck"], ("config.json",), ("damaged",), copy_ckpt(swap_files)),
    Case("weights-wrong-shape", lambda w, t: ["evaluate", t / "ck", "--n", "4"], ("do not fit", "size mismatch"), ("re-save",), edit_config(lambda m: m["model"].update(width=0.5))),
    Case("weights-of-another-model", lambda w, t: ["info", t / "ck"], ("do not",), ("config",), edit_config(lambda m: m["model"].update(name="vgg5"))),
    Case("transfer-source-missing", lambda w, t: ev(w, "--transfer-from", t / "nope"), ("no checkpoint",), ("robustsnn train --out",)),
    Case("export-into-a-file", lambda w, t: ["export", snn(w), w / "a-file"], ("a-file",), ("another path", "directory")),
    # data
    Case("data-missing-offline", lambda w, t: ["train", "--train-subset", "16", "--data-dir", t / "empty", "--out", t / "o"], ("train-images-idx3-ubyte",), ("apt-get install", "--data-dir")),
    Case("truncated-idx", lambda w, t: ev(w, "--data-dir", t / "data"), ("header says",), ("re-download", "replace", "--data-dir"), copy_data(gunzip_truncated)),
    Case("truncated-gzip", lambda w, t: ev(w, "--data-dir", t / "data"), ("t10k-images",), ("re-download", "replace", "--data-dir"), copy_data(lambda d: truncate(d / "t10k-images-idx3-ubyte.gz", 0.3))),
    Case("labels-of-images", lambda w, t: ev(w, "--data-dir", t / "data"), ("magic number",), ("re-download", "replace", "--data-dir"), copy_data(lambda d: shutil.copy(d / "t10k-images-idx3-ubyte.gz", d / "t10k-labels-idx1-ubyte.gz"))),
    Case("wrong-channels-and-size", lambda w, t: ["evaluate", snn(w), "--data", "cifar10", "--data-dir", t / "cifar", "--n", "4", "--no-cache"], ("1x28x28", "3x32x32"), ("--data",), tiny_cifar),
    # where results go: not a directory, read-only, full disk
    Case("out-is-a-file", lambda w, t: tr(w, t, "--out", w / "a-file"), ("a-file",), ("another path", "directory")),
    Case("out-under-a-file", lambda w, t: ev(w, "--out", w / "a-file" / "r.json"), ("a-file",), ("another path", "directory")),
    Case("out-read-only", lambda w, t: ev(w, "--out", t / "ro" / "r.json"), ("permission denied",), ("elsewhere",), None, lambda w, t, mp: read_only(mp, t / "ro")),
    Case("prune-out-read-only", lambda w, t: ["prune", snn(w), "--sparsity", "0.5", "--out", t / "ro" / "p"], ("permission denied",), ("elsewhere",), None, lambda w, t, mp: read_only(mp, t / "ro")),
    Case("disk-full-result", lambda w, t: ev(w, "--out", w / "snn" / "eval-quick.json"), ("no space left",), ("free some space",), None, lambda w, t, mp: disk_full(mp)),
    Case("disk-full-export", lambda w, t: ["export", snn(w), w / "ann" / "model"], ("no space left",), ("free some space",), None, lambda w, t, mp: disk_full(mp)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_bad_input_is_a_short_message(case, world, tmp_path, monkeypatch, capsys):
    t = tmp_path / "case"
    t.mkdir()
    if case.prepare:
        case.prepare(world, t, monkeypatch)
    before = snapshot(world, t)
    if case.patch:
        case.patch(world, t, monkeypatch)
    code, out, err = run_cli(monkeypatch, capsys, *case.args(world, t))
    monkeypatch.undo()  # restore writers and mkdir before looking at the disk
    text = out + err
    assert code == 2, f"exit {code}\n{text}"
    assert "Traceback" not in text, text
    assert len(err.strip().splitlines()) <= 4, err
    low = err.lower()
    for w in case.what:
        assert w.lower() in low, f"{w!r} not in: {err}"
    assert any(f.lower() in low for f in case.fix), f"none of {case.fix} in: {err}"
    assert snapshot(world, t) == before, "a bad input changed files on disk"


# ---------------------------------------------------------------- the Python API


def _data(n=4):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10


def _nan(x):
    x = x.clone()
    x[0, 0, 3, 3] = math.nan
    return x


def _inf(x):
    x = x.clone()
    x[1, 0, 0, 0] = math.inf
    return x


API = [
    ("forward-3-channels", lambda m: m(torch.rand(2, 3, 28, 28)), ("3", "channel"), ("1x28x28",)),
    ("forward-32x32", lambda m: m(torch.rand(2, 1, 32, 32)), ("32x32",), ("1x28x28",)),
    ("forward-no-batch-dim", lambda m: m(torch.rand(1, 28, 28)), ("[B, C, H, W]",), ("unsqueeze",)),
    ("evaluate-nan-pixels", lambda m: robustsnn.evaluate(m, (_nan(_data()[0]), _data()[1]), preset="quick", n=4, diagnostics=False), ("nan",), ("[0, 1]",)),
    ("evaluate-inf-pixels", lambda m: robustsnn.evaluate(m, (_inf(_data()[0]), _data()[1]), preset="quick", n=4, diagnostics=False), ("inf",), ("[0, 1]",)),
    ("evaluate-0-255-pixels", lambda m: robustsnn.evaluate(m, (_data()[0] * 255, _data()[1]), preset="quick", diagnostics=False), ("255",), ("normalisation belongs inside the model", "/ 255")),
    ("evaluate-empty-batch", lambda m: robustsnn.evaluate(m, (torch.rand(0, 1, 28, 28), torch.zeros(0, dtype=torch.long)), preset="quick"), ("no samples",), ("n=", "empty")),
    ("evaluate-label-count", lambda m: robustsnn.evaluate(m, (_data()[0], _data()[1][:3]), preset="quick"), ("4 images but 3 labels",), ("one label per image",)),
    ("evaluate-label-range", lambda m: robustsnn.evaluate(m, (_data()[0], _data()[1] + 10), preset="quick"), ("label",), ("0..9",)),
    ("evaluate-wrong-channels", lambda m: robustsnn.evaluate(m, (torch.rand(4, 3, 28, 28), _data()[1]), preset="quick"), ("3x28x28",), ("1x28x28",)),
    ("evaluate-eps-8", lambda m: robustsnn.evaluate(m, _data(), eps=8), ("eps",), ("8/255",)),
    ("evaluate-n-negative", lambda m: robustsnn.evaluate(m, _data(), n=-1), ("n must be",), (">= 1",)),
    ("pgd-eps-8", lambda m: robustsnn.attacks.PGD(m, eps=8), ("eps",), ("8/255",)),
    ("prune-sparsity-1.5", lambda m: robustsnn.sparsity.prune_lwm(m, 1.5), ("sparsity",), ("[0, 1)",)),
    ("load-missing", lambda m: robustsnn.load("/nonexistent/model"), ("no checkpoint",), ("robustsnn train --out",)),
]


@pytest.fixture(scope="module")
def api_model():
    return tiny_snn()


@pytest.mark.parametrize("fn, what, fix", [a[1:] for a in API], ids=[a[0] for a in API])
def test_api_bad_input_is_a_robustsnn_error(fn, what, fix, api_model):
    import robustsnn.attacks  # noqa: F401
    import robustsnn.sparsity  # noqa: F401

    with pytest.raises(RobustSNNError) as caught:
        fn(api_model)
    msg = str(caught.value)
    assert "\n" not in msg, msg
    for w in what:
        assert w.lower() in msg.lower(), f"{w!r} not in: {msg}"
    assert any(f.lower() in msg.lower() for f in fix), f"none of {fix} in: {msg}"


# ---------------------------------------------------------------- the real entry point


@pytest.mark.parametrize("args, what", [
    (["train", "--epochs", "1", "--output", "x"], "No such option"),
    (["prune", "CKPT", "--sparsity", "1.5", "--out", "o"], "sparsity"),
    (["convert"], "Missing argument"),
])
def test_python_m_robustsnn_usage_errors_exit_2_without_traceback(args, what, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    env.pop("ROBUSTSNN_DEBUG", None)
    r = subprocess.run([sys.executable, "-m", "robustsnn", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout and what in r.stderr
    assert list(tmp_path.iterdir()) == []
