"""Reader for the "python version" of CIFAR-10 and CIFAR-100 (pickled batches).

Layout after extracting the official archives::

    cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch
    cifar-100-python/train, test

Each file is a pickled dict with ``b"data"``: uint8 ``[N, 3072]`` (1024 red, then
1024 green, then 1024 blue values of a 32x32 image, row-major) and
``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100): N ints.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .errors import DataFormatError

__all__ = ["CIFAR_FOLDERS", "cifar_file_names", "read_cifar_batch", "read_cifar"]

CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
"""Folder that the official archive extracts to, per data set."""

_LABEL_KEY = {"cifar10": b"labels", "cifar100": b"fine_labels"}

# Only what a pickled numpy array needs; anything else in a file is refused.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle protocol
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def cifar_file_names(name: str, split: str) -> tuple[str, ...]:
    """File names (inside :data:`CIFAR_FOLDERS` ``[name]``) that make up ``split`` of ``name``."""
    if name == "cifar10":
        return tuple(f"data_batch_{i}" for i in range(1, 6)) if split == "train" else ("test_batch",)
    return ("train",) if split == "train" else ("test",)


def read_cifar_batch(path: str | Path, label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one pickled CIFAR batch.

    Args:
        path: the batch file.
        label_key: ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100).

    Returns:
        ``(images uint8 [N, 3, 32, 32], labels int64 [N])``.

    Raises:
        DataFormatError: not a CIFAR batch (bad pickle, missing keys, wrong sizes).
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataFormatError(f"{path}: not a CIFAR python batch ({exc})") from exc
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataFormatError(f"{path}: CIFAR batch lacks the keys b'data' and {label_key!r}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataFormatError(
            f"{path}: expected uint8 data [N, 3072] and N labels, got {data.dtype} {data.shape} and {labels.shape}"
        )
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels.reshape(-1))


def read_cifar(folder: str | Path, name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read and concatenate all batches of ``split`` from an extracted CIFAR folder.

    Returns:
        ``(images uint8 [N, 3, 32, 32], labels int64 [N])``; N = 50000 / 10000 for the real files.
    """
    parts = [read_cifar_batch(Path(folder) / file, _LABEL_KEY[name]) for file in cifar_file_names(name, split)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
