"""An in-memory image classification data set: uint8 pixels plus int64 labels."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .info import DatasetInfo

__all__ = ["ArrayDataset"]


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A whole split held in memory.

    Attributes:
        images: uint8 tensor ``[N, C, H, W]``, raw pixel values 0..255.
        labels: int64 tensor ``[N]``, class indices ``0 .. info.num_classes - 1``.
        info: static description of the data set.

    Pixels stay uint8 (1 byte per value); :func:`robustsnn.data.batches` converts one
    batch at a time to float32 in [0, 1].
    """

    images: torch.Tensor
    labels: torch.Tensor
    info: DatasetInfo

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be int64 [N={self.images.shape[0]}], got {self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        """Number of samples N."""
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``index`` as ``(uint8 [C, H, W], int64 scalar)``."""
        return self.images[index], self.labels[index]

    def subset(self, n_or_indices: int | Sequence[int] | torch.Tensor) -> ArrayDataset:
        """A smaller data set: the first ``n`` samples (int) or the given sample indices.

        Args:
            n_or_indices: an int ``n`` (clipped to ``len(self)``), or a sequence / 1-D
                int tensor of indices (order kept, repeats allowed).

        Returns:
            A new :class:`ArrayDataset` with the same ``info``; the first-``n`` case shares memory.
        """
        if isinstance(n_or_indices, numbers.Integral) and not isinstance(n_or_indices, bool):
            if n_or_indices < 0:
                raise ValueError(f"subset size must be >= 0, got {n_or_indices}")
            n = min(int(n_or_indices), len(self))
            return ArrayDataset(self.images[:n], self.labels[:n], self.info)
        index = torch.as_tensor(n_or_indices, dtype=torch.int64).reshape(-1)
        if index.numel() and (index.min() < -len(self) or index.max() >= len(self)):
            raise IndexError(f"subset indices out of range for a dataset of {len(self)} samples")
        return ArrayDataset(self.images[index], self.labels[index], self.info)

    @property
    def class_counts(self) -> torch.Tensor:
        """Number of samples per class, int64 ``[info.num_classes]``."""
        return torch.bincount(self.labels, minlength=self.info.num_classes)

    def __repr__(self) -> str:
        return f"ArrayDataset({self.info.name!r}, n={len(self)}, shape={tuple(self.images.shape[1:])})"
