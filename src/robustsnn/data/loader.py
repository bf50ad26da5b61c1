"""Deterministic mini-batches from an in-memory :class:`ArrayDataset`.

One ``torch.Generator`` seeded from ``(seed, epoch)`` draws the sample order
and then, batch after batch, the augmentation, so the same ``(seed, epoch)``
always yields identical batches, and another epoch a different order. Pixels
are converted from uint8 to float32 in [0, 1] one batch at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch

from .array_dataset import ArrayDataset
from .transforms import Augmentation, default_augmentation

__all__ = ["batches", "num_batches", "epoch_generator"]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose state depends only on ``(seed, epoch)``.

    The two are hashed together, so nearby seeds and epochs give unrelated streams.
    """
    digest = hashlib.sha256(f"robustsnn-data:{int(seed)}:{int(epoch)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def num_batches(dataset: ArrayDataset | int, batch_size: int, *, drop_last: bool = False) -> int:
    """Number of batches :func:`batches` yields for ``dataset`` (or a sample count) per epoch."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    n = dataset if isinstance(dataset, int) else len(dataset)
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(
    dataset: ArrayDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int = 0,
    augment: bool | Augmentation = False,
    drop_last: bool = False,
    part: tuple[int, int] | None = None,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Iterate once over ``dataset`` in mini-batches.

    Args:
        dataset: the in-memory data set.
        batch_size: samples per batch B (the last batch may be smaller unless ``drop_last``).
        shuffle: random order (drawn from ``(seed, epoch)``) instead of the stored order.
        seed: run seed.
        epoch: epoch number; each epoch gets its own order and augmentation.
        augment: True for the data set's :func:`~robustsnn.data.transforms.default_augmentation`,
            an :class:`Augmentation` for a specific one, False for none.
        drop_last: skip a final batch smaller than ``batch_size``.
        part: ``(rank, world)``: yield only this rank's contiguous slice of every global
            batch (:func:`robustsnn.distributed.split_batch`); order and augmentation are
            drawn for the whole global batch, so the slices of all ranks together are
            exactly the batches of one process (a seeded DistributedSampler).
        pin_memory: return page-locked tensors, for ``.to(cuda, non_blocking=True)``.

    Yields:
        ``(x, y)``: x float32 ``[B, C, H, W]`` with values in [0, 1] (pixel / 255),
        y int64 ``[B]`` class indices. Every sample appears exactly once per epoch
        (except those dropped by ``drop_last``).
    """
    count = num_batches(dataset, batch_size, drop_last=drop_last)
    generator = epoch_generator(seed, epoch)
    n = len(dataset)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if augment is True:
        augment = default_augmentation(dataset.info.name)
    transform = augment if isinstance(augment, Augmentation) and not augment.is_identity else None
    for i in range(count):
        index = order[i * batch_size : (i + 1) * batch_size]
        rows = slice(None)
        if part is not None:
            from ..distributed import split_batch

            share = split_batch(len(index), *part)
            rows = slice(share.start, share.stop)
            if transform is None:  # no per-batch draws to keep in step: load only this rank's rows
                index, rows = index[rows], slice(None)
        x = dataset.images[index].to(torch.float32).div_(255.0)
        if transform is not None:
            x = transform(x, generator)
        x, y = x[rows], dataset.labels[index][rows]
        if pin_memory:
            x, y = x.pin_memory(), y.pin_memory()
        yield x, y
