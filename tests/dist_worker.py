"""Worker for tests/test_distributed.py, run under ``python -m torch.distributed.run``.

    dist_worker.py train OUT [--resume]   train the tiny SNN (pruned, RFGSM + MPPD + Parseval, sync BN)
    dist_worker.py eval CKPT OUT          sharded evaluation with APGD-T, Square and PGD members
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402

from helpers import synthetic_fmnist, tiny_snn  # noqa: E402
from robustsnn import distributed as D  # noqa: E402
from robustsnn.sparsity import prune_lwm  # noqa: E402
from robustsnn.train import TrainConfig, fit  # noqa: E402

TRAIN = dict(epochs=2, batch_size=16, lr=0.05, seed=3, objective="rfgsm",
             objective_params={"eps": 0.1, "mppd": 0.5}, parseval=0.002, sync_bn=True)
MEMBERS = [("apgd-t", None, {"steps": 1, "n_target_classes": 1}), ("square", None, {"n_queries": 20}),
           ("pgd", None, {"steps": 2})]


def train_model():
    model = tiny_snn()
    prune_lwm(model, 0.5)
    return model


def train(out, resume: bool = False, stop_after_epoch: int | None = None):
    """Train the test model into ``out``; a Parseval hook that samples rows of the 10-row head
    (row_threshold 4) exercises the sampled-rows path too. Returns the model."""
    from robustsnn.train import ParsevalStep

    model = train_model()
    fit(model, synthetic_fmnist(72), None, TrainConfig(**TRAIN), out, resume=resume, progress=False,
        post_step=[ParsevalStep(0.002, row_threshold=4)], stop_after_epoch=stop_after_epoch)
    return model


def eval_data():
    data = synthetic_fmnist(21, seed=5)
    return data.images.float() / 255, data.labels


def breakers(model, **kw) -> list[list[int]]:
    """Per-sample breaker records of the test preset at two budgets."""
    from robustsnn.evaluate import evaluate as run

    res = run(model, eval_data(), members=MEMBERS, eps="0.1,0.2", batch_size=4, diagnostics=False, warn=False, **kw)
    return [r.breaker for r in res.results]


def evaluate(ckpt: str, out: str) -> None:
    from robustsnn import checkpoint

    D.setup("cpu")
    found = breakers(checkpoint.load(ckpt), cache_dir=Path(out).parent / "cache")
    if D.is_main():
        Path(out).write_text(json.dumps(found))


if __name__ == "__main__":
    torch.set_num_threads(1)
    {"train": lambda: train(sys.argv[2], "--resume" in sys.argv), "eval": lambda: evaluate(sys.argv[2], sys.argv[3])}[sys.argv[1]]()
    D.shutdown()
