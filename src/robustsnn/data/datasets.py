"""``load_dataset``: find a data set's files on disk (or download them) and read a split into memory.

Search order, first match wins:

1. the ``data_dir`` argument (the CLI's ``--data-dir``),
2. ``$ROBUSTSNN_DATA`` (several folders may be given, separated by ``:``),
3. the system folder of a Debian package (``/usr/share/datasets/fashion-mnist``
   from ``dataset-fashion-mnist``; ``/usr/share/datasets/mnist``),
4. the download cache ``$XDG_CACHE_HOME/robustsnn/<name>`` (default ``~/.cache/robustsnn/<name>``).

In 1 and 2 the folder itself and a sub-folder named after the data set are
tried (``$ROBUSTSNN_DATA/fashion-mnist``, ...). Only when nothing is found and
``download=True`` are MNIST / Fashion-MNIST downloaded into 4; anything else
raises :class:`DataNotFoundError` with the fix in its message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .array_dataset import ArrayDataset
from .cifar import CIFAR_FOLDERS, cifar_file_names, read_cifar
from .download import DownloadError, SOURCES, download_idx
from .errors import DataFormatError, DataNotFoundError
from .idx import idx_file_names, read_idx_images, read_idx_labels
from .info import canonical_name, dataset_info
from .svhn import read_svhn, svhn_file_name
from .tiny_imagenet import TINY_IMAGENET_FOLDER, read_tiny_imagenet, tiny_imagenet_split_dir

__all__ = ["SPLITS", "ENV_VAR", "SYSTEM_DIRS", "load_dataset", "search_dirs", "cache_dir"]

SPLITS = ("train", "test")
ENV_VAR = "ROBUSTSNN_DATA"

SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
    "mnist": ("/usr/share/datasets/mnist",),
}
"""Folders where distribution packages install a data set, searched after data_dir and $ROBUSTSNN_DATA."""

_SUBFOLDERS: dict[str, tuple[str, ...]] = {
    "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw"),
    "mnist": ("mnist", "MNIST/raw"),
    "cifar10": ("cifar10",),
    "cifar100": ("cifar100",),
    "svhn": ("svhn",),
    "tiny-imagenet": ("tiny-imagenet",),
}
"""Sub-folders of data_dir / $ROBUSTSNN_DATA also searched (the data set's name, torchvision's layout)."""

_FIX = {
    "fashion-mnist": "apt-get install dataset-fashion-mnist, or pass --data-dir / set ROBUSTSNN_DATA",
    "mnist": "put the MNIST IDX files in a folder and pass --data-dir / set ROBUSTSNN_DATA",
    "cifar10": "extract cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) "
    "and pass --data-dir / set ROBUSTSNN_DATA",
    "cifar100": "extract cifar-100-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) "
    "and pass --data-dir / set ROBUSTSNN_DATA",
    "svhn": "get train_32x32.mat / test_32x32.mat (http://ufldl.stanford.edu/housenumbers/) "
    "and pass --data-dir / set ROBUSTSNN_DATA",
    "tiny-imagenet": "extract tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip) "
    "and pass --data-dir / set ROBUSTSNN_DATA",
}

Reader = Callable[[], tuple[torch.Tensor, torch.Tensor]]


def cache_dir(name: str) -> Path:
    """Download folder of data set ``name``: ``$XDG_CACHE_HOME/robustsnn/<name>``, default ``~/.cache/...``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "robustsnn" / canonical_name(name)


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for data set ``name``, in order (see the module docstring); duplicates removed."""
    name = canonical_name(name)
    roots = [] if data_dir is None else [data_dir]
    roots += [r for r in os.environ.get(ENV_VAR, "").split(os.pathsep) if r]  # may list several, like $PATH
    dirs: list[Path] = []
    for root in roots:
        root = Path(root).expanduser()
        dirs += [root] + [root / sub for sub in _SUBFOLDERS[name]]
    dirs += [Path(d) for d in SYSTEM_DIRS.get(name, ())]
    dirs.append(cache_dir(name))
    return list(dict.fromkeys(dirs))


def _first_existing(folder: Path, names: Sequence[str]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def _idx_reader(name: str, folder: Path, split: str) -> Reader | None:
    images_name, labels_name = idx_file_names(split)
    images = _first_existing(folder, (images_name, images_name + ".gz"))
    labels = _first_existing(folder, (labels_name, labels_name + ".gz"))
    if images is None or labels is None:
        return None
    return lambda: (read_idx_images(images), read_idx_labels(labels))


def _cifar_reader(name: str, folder: Path, split: str) -> Reader | None:
    files = cifar_file_names(name, split)
    for candidate in (folder / CIFAR_FOLDERS[name], folder):
        if all((candidate / f).is_file() for f in files):
            return lambda candidate=candidate: read_cifar(candidate, name, split)
    return None


def _svhn_reader(name: str, folder: Path, split: str) -> Reader | None:
    path = _first_existing(folder, (svhn_file_name(split),))
    return None if path is None else lambda: read_svhn(path)


def _tiny_imagenet_reader(name: str, folder: Path, split: str) -> Reader | None:
    size = dataset_info(name).image_size
    for candidate in (folder / TINY_IMAGENET_FOLDER, folder):
        if (candidate / tiny_imagenet_split_dir(split)).is_dir():
            return lambda candidate=candidate: read_tiny_imagenet(candidate, split, size)
    return None


_READERS: dict[str, Callable[[str, Path, str], Reader | None]] = {
    "fashion-mnist": _idx_reader,
    "mnist": _idx_reader,
    "cifar10": _cifar_reader,
    "cifar100": _cifar_reader,
    "svhn": _svhn_reader,
    "tiny-imagenet": _tiny_imagenet_reader,
}

_LOOKED_FOR = {
    "fashion-mnist": lambda split: "{}[.gz] and {}[.gz]".format(*idx_file_names(split)),
    "mnist": lambda split: "{}[.gz] and {}[.gz]".format(*idx_file_names(split)),
    "cifar10": lambda split: f"{CIFAR_FOLDERS['cifar10']}/{','.join(cifar_file_names('cifar10', split))}",
    "cifar100": lambda split: f"{CIFAR_FOLDERS['cifar100']}/{','.join(cifar_file_names('cifar100', split))}",
    "svhn": svhn_file_name,
    "tiny-imagenet": lambda split: f"{TINY_IMAGENET_FOLDER}/{tiny_imagenet_split_dir(split)}/",
}


def _find(name: str, split: str, dirs: list[Path]) -> Reader | None:
    for folder in dirs:
        if folder.is_dir() and (reader := _READERS[name](name, folder, split)) is not None:
            return reader
    return None


def load_dataset(
    name: str = "fashion-mnist",
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> ArrayDataset:
    """Load one split of a data set fully into memory.

    Args:
        name: one of :data:`~robustsnn.data.DATASETS` (case and ``_``/``-`` ignored).
        split: "train" or "test" (Tiny-ImageNet's "test" is its labelled ``val/`` set).
        data_dir: folder searched first (the CLI's ``--data-dir``); see the module docstring for the rest.
        download: for MNIST / Fashion-MNIST, download the official files (MD5-checked) into
            the cache when found nowhere else. Other data sets are never downloaded.

    Returns:
        :class:`ArrayDataset` with images uint8 ``[N, C, H, W]`` and labels int64 ``[N]``.

    Raises:
        ValueError: unknown ``name`` or ``split``.
        DataNotFoundError: the files are nowhere on the search path and could not be downloaded.
        DataFormatError: a file was found but is not in the expected format.
    """
    name = canonical_name(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    info = dataset_info(name)
    dirs = search_dirs(name, data_dir)
    reader = _find(name, split, dirs)
    problem = "download disabled"
    if reader is None and name in SOURCES:
        if download:
            try:
                download_idx(name, split, cache_dir(name))
                reader = _find(name, split, [cache_dir(name)])
            except DownloadError as exc:
                problem = f"download failed ({exc})"
    elif reader is None:
        problem = "no download available"
    if reader is None:
        raise DataNotFoundError(
            f"{name} {split} data ({_LOOKED_FOR[name](split)}) not found in "
            f"{', '.join(map(str, dirs))}; {problem}. Fix: {_FIX[name]}"
        )
    fix = f"; the file is damaged or of another data set: replace it ({_FIX[name]})"
    try:
        images, labels = reader()
    except DataFormatError as exc:
        raise DataFormatError(f"{exc}{fix}") from None
    if tuple(images.shape[1:]) != info.shape:
        raise DataFormatError(f"{name} {split}: images are {tuple(images.shape[1:])}, expected {info.shape}{fix}")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < info.num_classes:
        raise DataFormatError(f"{name} {split}: labels span {int(labels.min())}..{int(labels.max())}, "
                              f"expected 0..{info.num_classes - 1}{fix}")
    return ArrayDataset(images, labels, info)
