"""Reader for the IDX format of MNIST and Fashion-MNIST (optionally gzip-compressed).

An IDX file is a big-endian header followed by the raw array::

    bytes 0-1   0x0000
    byte  2     element type (0x08 = unsigned byte)
    byte  3     number of dimensions D
    4*D bytes   the D dimension sizes, uint32 big-endian
    ...         the elements, row-major

so an image file starts with the magic number 2051 (0x00000803: ubyte, 3 dims
``[N, H, W]``) and a label file with 2049 (0x00000801: ubyte, 1 dim ``[N]``).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from .errors import DataFormatError

__all__ = ["IMAGES_MAGIC", "LABELS_MAGIC", "read_idx", "read_idx_images", "read_idx_labels", "idx_file_names"]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


def idx_file_names(split: str) -> tuple[str, str]:
    """Base names ``(images, labels)`` of the IDX files of ``split`` ("train" or "test"), without ``.gz``."""
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open  # gzip magic, whatever the file is called
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: cannot read ({exc})") from exc


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (plain or gzip) into a numpy uint8 array.

    Args:
        path: the file; gzip is detected from its content, not its name.
        magic: expected magic number, :data:`IMAGES_MAGIC` (2051) or :data:`LABELS_MAGIC` (2049).

    Returns:
        uint8 array with the dimensions given in the header (``[N, H, W]`` or ``[N]``).

    Raises:
        DataFormatError: wrong magic number, element type or size.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataFormatError(f"{path}: too short for an IDX file ({len(data)} bytes)")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:  # the magic fixes both the element type (ubyte) and the number of dims
        raise DataFormatError(f"{path}: IDX magic number {found}, expected {magic}")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise DataFormatError(
            f"{path}: IDX header says {'x'.join(map(str, dims))} = {expected} bytes, file holds {len(data) - header}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_images(path: str | Path) -> torch.Tensor:
    """Read an IDX image file (magic 2051) as a uint8 tensor ``[N, 1, H, W]``."""
    array = read_idx(path, IMAGES_MAGIC)
    return torch.from_numpy(array.copy()).unsqueeze(1)


def read_idx_labels(path: str | Path) -> torch.Tensor:
    """Read an IDX label file (magic 2049) as an int64 tensor ``[N]``."""
    return torch.from_numpy(read_idx(path, LABELS_MAGIC).astype(np.int64))
