"""Checks that need a CUDA GPU (marked ``gpu``; they skip on machines without one)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_gpu_training_and_evaluation_agree_with_the_cpu():
    from gpu_check import check

    r = check("cuda", width=0.25, time_steps=2, n_train=256, n_eval=32, batch_size=32)
    assert r["passed"], r


def test_sharded_training_helpers_run_on_the_gpu():
    from robustsnn import distributed as D

    dev = D.resolve_device("auto")
    assert dev.type == "cuda"
    x = torch.randn(6, 3, device=dev)
    with D.batch_share(D.split_batch(6, 0, 2)):
        part = D.shared_draw(lambda m: torch.randn(m, 3, device=dev), 3)
    assert part.device.type == "cuda" and part.shape == (3, 3) and x.device == part.device
