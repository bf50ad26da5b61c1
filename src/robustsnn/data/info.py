"""Static facts about the supported data sets: classes, shape, normalisation."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DatasetInfo", "DATASETS", "DEFAULT_DATASET", "dataset_info", "canonical_name"]


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of one image classification data set.

    Attributes:
        name: canonical name, one of :data:`DATASETS`.
        num_classes: number of labels; labels are ``0 .. num_classes - 1``.
        in_channels: C of an image ``[C, H, W]``.
        image_size: H = W of an image, in pixels.
        mean: per-channel mean of the training pixels, scaled to [0, 1] (length C).
        std: per-channel standard deviation of the training pixels, scaled to [0, 1] (length C).
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        return (self.in_channels, self.image_size, self.image_size)


_INFOS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,)),
        DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,)),
        DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
        DatasetInfo("svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
        DatasetInfo("tiny-imagenet", 200, 3, 64, (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
    )
}

DATASETS: tuple[str, ...] = tuple(_INFOS)
"""Canonical names of the supported data sets; the first is the default."""

DEFAULT_DATASET = DATASETS[0]

_ALIASES = {
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
    "tinyimagenet": "tiny-imagenet",
    "tiny-imagenet-200": "tiny-imagenet",
}


def canonical_name(name: str) -> str:
    """Map a user-supplied data set name to its canonical form.

    Case and ``_`` vs ``-`` do not matter (``"Fashion_MNIST"`` -> ``"fashion-mnist"``).

    Raises:
        ValueError: the name is not a supported data set; the message lists the valid names.
    """
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _INFOS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return key


def dataset_info(name: str) -> DatasetInfo:
    """Return the :class:`DatasetInfo` of data set ``name`` (see :func:`canonical_name`)."""
    return _INFOS[canonical_name(name)]
