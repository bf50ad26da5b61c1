"""Training and evaluation on 2 gloo ranks (torchrun on the CPU) against one process.

Each torchrun launch is a subprocess with OMP_NUM_THREADS=1, a free port and a timeout,
so a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robustsnn import checkpoint
from robustsnn import distributed as D
from robustsnn.data import batches
from robustsnn.errors import UsageError
from robustsnn.train import TrainConfig, fit

from dist_worker import breakers, train, train_model
from helpers import synthetic_fmnist, tiny_snn

WORKER = Path(__file__).with_name("dist_worker.py")
SRC = Path(__file__).resolve().parents[1] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, env: dict | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node 2 ARGS`` on gloo (ARGS: a script or ``-m robustsnn ...``)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), *map(str, args)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                "ROBUSTSNN_DIST_TIMEOUT": "60", **(env or {})}
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)


def _why(run: subprocess.CompletedProcess) -> str:
    """A failed launch's own messages: its stderr without torchrun's elastic-agent report (which
    names the failing rank but not why), so that a rare failure shows its cause in the CI log."""
    own = [ln for ln in run.stderr.splitlines() if "torch/distributed/elastic" not in ln and "torch/distributed/run" not in ln]
    return "\n".join(own)[:4000]


def _weights(path: Path) -> dict:
    return checkpoint.load(path / "model").state_dict()


def test_ddp_matches_one_process_resumes_on_another_rank_count_and_after_a_kill(tmp_path):
    """1 process x 2 epochs == (1 process x 1 epoch, then 2 ranks killed in epoch 2, then 2 ranks --resume)."""
    init = train_model().state_dict()
    train(tmp_path / "ref")
    train(tmp_path / "run", stop_after_epoch=1)

    died = torchrun(WORKER, "train", tmp_path / "run", "--resume", env={"ROBUSTSNN_FAULT": "1:epoch2:step1"})
    assert died.returncode != 0
    assert "the last checkpoint is" in died.stderr and "--resume" in died.stderr, _why(died)
    assert checkpoint.read_meta(tmp_path / "run" / "model")["epoch"] == 1, "the killed epoch must not be checkpointed"

    done = torchrun(WORKER, "train", tmp_path / "run", "--resume")
    assert done.returncode == 0, _why(done)
    meta = checkpoint.read_meta(tmp_path / "run" / "model")
    assert meta["epoch"] == 2 and meta["history"][-1]["ranks"] == 2
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "run")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-5), k
    moved = [k for k in a if a[k].is_floating_point() and not torch.allclose(a[k], init[k])]
    assert "head.weight" in moved or len(moved) > 3
    masked = [k for k in a if k.endswith("weight_mask")]
    assert masked and all(bool((a[k.replace("weight_mask", "weight")][a[k] == 0] == 0).all()) for k in masked)
    assert all(torch.equal(a[k], b[k]) for k in masked)


def test_sharded_evaluation_gives_one_process_verdicts_and_shares_the_cache(tmp_path):
    model = tiny_snn()
    fit(model, synthetic_fmnist(320), None, TrainConfig(epochs=4, batch_size=32, lr=0.05, seed=3), tmp_path / "m", progress=False)
    one = breakers(model.eval())
    flat = sum(one, [])
    assert {0, 1, -1} <= set(flat), "the preset should break samples with APGD-T and Square and leave some robust"

    run = torchrun(WORKER, "eval", tmp_path / "m" / "model", tmp_path / "ev" / "out.json")
    assert run.returncode == 0, _why(run)
    assert json.loads((tmp_path / "ev" / "out.json").read_text()) == one

    # the cache written by the sharded run (rank 0) is the one-process run's: all members reused
    from robustsnn.evaluate import evaluate
    from dist_worker import MEMBERS, eval_data

    res = evaluate(checkpoint.load(tmp_path / "m" / "model"), eval_data(), members=MEMBERS, eps="0.1,0.2", batch_size=4,
                   diagnostics=False, warn=False, cache_dir=tmp_path / "ev" / "cache")
    assert [r.breaker for r in res.results] == one
    assert all(m["cached"] for r in res.results for m in r.members)


def test_batch_slices_of_all_ranks_are_the_one_process_batches():
    data = synthetic_fmnist(37)
    for augment in (False, True):
        whole = list(batches(data, 12, shuffle=True, seed=4, epoch=2, augment=augment))
        parts = [list(batches(data, 12, shuffle=True, seed=4, epoch=2, augment=augment, part=(r, 3))) for r in range(3)]
        for i, (x, y) in enumerate(whole):
            assert torch.equal(torch.cat([p[i][0] for p in parts]), x)
            assert torch.equal(torch.cat([p[i][1] for p in parts]), y)


def test_split_batch_weights_make_the_mean_of_means_the_global_mean():
    values = torch.arange(11.0)
    shares = [D.split_batch(11, r, 3) for r in range(3)]
    assert [s.stop - s.start for s in shares] == [4, 4, 3] and shares[-1].stop == 11
    # DDP averages the ranks' gradients: mean over ranks of (weight * local mean) == global mean
    weights = [(s.stop - s.start) * 3 / 11 for s in shares]
    mean_of_means = sum(w * values[s.start:s.stop].mean() for s, w in zip(shares, weights)) / 3
    assert torch.allclose(mean_of_means, values.mean())


def test_unsplittable_batches_and_too_many_ranks_are_clear_errors():
    with pytest.raises(UsageError, match="does not divide by the 2 ranks"):
        D.check_batch(15, 100, 2)
    with pytest.raises(UsageError, match="only 3 training samples"):
        D.check_batch(8, 3, 4)
    with pytest.raises(UsageError, match="last batch of each epoch has 1 sample"):
        D.check_batch(8, 17, 2)
    assert D.check_batch(8, 18, 2) == 4


def test_shared_draw_gives_each_rank_its_rows_of_the_global_draw():
    def draw(m):
        return torch.randn(m, 3, generator=torch.Generator().manual_seed(0))

    share = D.split_batch(10, 1, 2)
    with D.batch_share(share):
        mine = D.shared_draw(draw, 5)
    assert torch.equal(mine, draw(10)[5:])
    assert torch.equal(D.shared_draw(draw, 4), draw(4))  # no share: a plain draw


def test_poisson_spikes_of_the_ranks_are_rows_of_one_global_draw():
    from robustsnn.encoding import poisson_encode

    x = torch.full((6, 1, 4, 4), 0.5)
    draws = []
    for r in range(2):
        torch.manual_seed(7)  # every rank holds the same RNG state
        with D.batch_share(D.split_batch(6, r, 2)):
            draws.append(poisson_encode(x[3 * r:3 * r + 3], 3))
    torch.manual_seed(7)
    u = torch.rand(6, 3, 1, 4, 4).transpose(0, 1)
    assert torch.equal(torch.cat(draws, 1), (u < 0.5).float())
    assert not torch.equal(draws[0], draws[1]), "the two ranks must not share their spike noise"


def _idx_data(folder: Path) -> Path:
    from test_data import write_idx_images, write_idx_labels

    folder.mkdir(parents=True)
    for prefix, seed in (("train", 0), ("t10k", 1)):
        ds = synthetic_fmnist(40, seed=seed)
        write_idx_images(folder / f"{prefix}-images-idx3-ubyte.gz", ds.images[:, 0].numpy(), True)
        write_idx_labels(folder / f"{prefix}-labels-idx1-ubyte.gz", ds.labels.numpy(), True)
    return folder


def test_cli_under_torchrun_trains_on_two_ranks_and_refuses_an_unsplittable_batch(tmp_path):
    data = _idx_data(tmp_path / "data")
    common = ["-m", "robustsnn", "train", "--data-dir", data, "-T", "2", "--width", "0.25", "--train-subset", "32",
              "--test-subset", "16", "--no-progress"]
    bad = torchrun(*common, "--batch-size", "7", "--out", tmp_path / "bad")
    assert bad.returncode != 0
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--batch-size 7 does not divide by the 2 ranks" in errors[0], bad.stderr[-2000:]
    assert not (tmp_path / "bad" / "model").exists()

    good = torchrun(*common, "--batch-size", "8", "--out", tmp_path / "good")
    assert good.returncode == 0, _why(good)
    assert good.stdout.count("test accuracy") == 1, "only rank 0 prints"
    meta = checkpoint.read_meta(tmp_path / "good" / "model")
    assert meta["history"][-1]["ranks"] == 2 and meta["recipe"]["batch_size"] == 8



@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists(),
                    reason="needs Debian's dataset-fashion-mnist")
def test_pipeline_on_two_ranks_gives_the_one_process_results(tmp_path):
    from robustsnn.pipeline import PipelineConfig, run_pipeline

    settings = dict(width=0.25, train_subset=192, snn_train_subset=128, ann_epochs=1, prune_finetune_epochs=1,
                    hydra_epochs=1, snn_epochs=1, ann_attack_steps=1, time_steps=2, calib_batches=2, calib_time_steps=8,
                    calib_batch_size=16, eval_preset="quick", eval_n=24, efficiency_n=16, sparsity=0.9, pruning="hydra")
    config = tmp_path / "pipe.yaml"  # JSON is YAML
    config.write_text(json.dumps(settings))
    run = torchrun("-m", "robustsnn", "pipeline", "--config", config, "--out", tmp_path / "two", "--no-progress", timeout=600)
    assert run.returncode == 0, _why(run)
    one = run_pipeline(PipelineConfig(**settings), tmp_path / "one", progress=False)
    two = json.loads((tmp_path / "two" / "pipeline.json").read_text())
    keys = ("test_acc", "test_acc_1000", "clean_acc", "robust_acc")
    assert [{k: s.get(k) for k in keys} for s in two["stages"]] == [{k: s.get(k) for k in keys} for s in one["stages"]]
    a, b = (json.loads((tmp_path / d / "eval-quick.json").read_text()) for d in ("one", "two"))
    assert a["results"][0]["breaker"] == b["results"][0]["breaker"]
