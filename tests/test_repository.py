"""The repository as committed: the model zoo loads, is small and is documented; nothing else heavy."""

from __future__ import annotations

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
    assert 1 <= len(weights) <= 4, weights
    assert sum((ROOT / w).stat().st_size for w in weights) <= 10 * 2**20
    readme = (ROOT / "README.md").read_text()
    zoo = readme[readme.index("## Model zoo"):]
    for w in weights:
        ckpt = str(Path(w).parent)
        assert f"`{ckpt}`" in zoo, f"{ckpt} is committed but not listed in the README's model zoo"
        model = robustsnn.load(ROOT / ckpt)
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert _tracked("results/*report.html") == [] and _tracked("results/*report.md") == []
