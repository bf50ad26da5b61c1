"""Reader for SVHN's cropped-digits format (``train_32x32.mat``, ``test_32x32.mat``).

Each MATLAB file holds ``X``: uint8 ``[32, 32, 3, N]`` (H, W, C, sample) and
``y``: ``[N, 1]`` with labels 1..10, where 10 stands for the digit 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import DataFormatError

__all__ = ["svhn_file_name", "read_svhn"]


def svhn_file_name(split: str) -> str:
    """Name of the .mat file of ``split`` ("train" or "test")."""
    return f"{split}_32x32.mat"


def read_svhn(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one SVHN .mat file.

    Returns:
        ``(images uint8 [N, 3, 32, 32], labels int64 [N])`` with labels 0..9 (file label 10 -> 0).

    Raises:
        DataFormatError: not a MATLAB file with ``X`` [32, 32, 3, N] and ``y`` [N(, 1)] in 1..10.
    """
    from scipy.io import loadmat  # scipy is slow to import; only SVHN needs it

    path = Path(path)
    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except (ValueError, OSError, TypeError) as exc:
        raise DataFormatError(f"{path}: not a readable MATLAB file ({exc})") from exc
    if "X" not in mat or "y" not in mat:
        raise DataFormatError(f"{path}: SVHN file lacks the variables X and y")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise DataFormatError(f"{path}: expected X [H, W, 3, N] and y [N], got X {x.shape} and y {y.shape}")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise DataFormatError(f"{path}: SVHN labels must lie in 1..10, found {y.min()}..{y.max()}")
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1), dtype=np.uint8))
    labels = torch.from_numpy((y.astype(np.int64) % 10))
    return images, labels
