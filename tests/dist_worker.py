"""Worker for tests/test_distributed.py, run under ``python -m torch.distributed.run``.

    dist_worker.py train OUT [--resume]   train the tiny SNN (pruned, RFGSM + MPPD + Parseval, sync BN)
    dist_worker.py eval OUT               sharded evaluation with APGD-T, Square and PGD members
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
MEMBERS = [("apgd-t", None, {"steps": 3, "n_target_classes": 2}), ("square", None, {"n_queries": 20}),
           ("pgd", None, {"steps": 2})]


def train_model():
    model = tiny_snn()
    prune_lwm(model, 0.5)
    return model


def train(out: str, resume: bool) -> None:
    model = train_model()
    fit(model, synthetic_fmnist(72), None, TrainConfig(**TRAIN), out, resume=resume, progress=False)


def evaluate(out: str) -> None:
    from robustsnn.evaluate import evaluate as run

    D.setup("cpu")
    model = tiny_snn()
    data = synthetic_fmnist(13, seed=5)
    res = run(model, (data.images.float() / 255, data.labels), members=MEMBERS, eps=0.15, batch_size=4,
              diagnostics=False, warn=False)
    if D.is_main():
        Path(out).write_text(json.dumps([r.breaker for r in res.results]))


if __name__ == "__main__":
    torch.set_num_threads(1)
    {"train": lambda: train(sys.argv[2], "--resume" in sys.argv), "eval": lambda: evaluate(sys.argv[2])}[sys.argv[1]]()
