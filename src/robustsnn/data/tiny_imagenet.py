"""Reader for Tiny-ImageNet (200 classes of 64x64 RGB JPEGs) laid out as folders.

Layout of the official archive (``tiny-imagenet-200/``)::

    wnids.txt                          one WordNet id per line
    train/<wnid>/images/*.JPEG         500 per class
    val/images/*.JPEG                  10000 images, labels in
    val/val_annotations.txt            "<file>\\t<wnid>\\t<bbox x4>" per line

A validation set already regrouped into class folders (``val/<wnid>/images/*``
or ``val/<wnid>/*``) is read too. Class index = position of the wnid in the
sorted list of wnids, so train and val agree. The official ``test/`` folder has
no labels; split "test" reads ``val/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import DataFormatError

__all__ = ["TINY_IMAGENET_FOLDER", "tiny_imagenet_split_dir", "read_tiny_imagenet", "read_image_folder"]

TINY_IMAGENET_FOLDER = "tiny-imagenet-200"
_IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def tiny_imagenet_split_dir(split: str) -> str:
    """Sub-folder holding ``split``: "train" -> ``train``, "test" -> ``val`` (the labelled held-out set)."""
    return "train" if split == "train" else "val"


def _image_files(folder: Path) -> list[Path]:
    inner = folder / "images"
    folder = inner if inner.is_dir() else folder
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file())


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name != "images")


def _wnids(root: Path) -> list[str]:
    listing = root / "wnids.txt"
    if listing.is_file():
        return sorted({line.strip() for line in listing.read_text().splitlines() if line.strip()})
    for split_dir in ("train", "val"):
        if (root / split_dir).is_dir() and (names := _class_dirs(root / split_dir)):
            return names
    raise DataFormatError(f"{root}: no wnids.txt and no class folders in train/ or val/")


def _load_images(paths: list[Path], size: int | None) -> torch.Tensor:
    from PIL import Image

    out = None
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB"), dtype=np.uint8)  # some are greyscale
        except OSError as exc:
            raise DataFormatError(f"{path}: cannot read image ({exc})") from exc
        if out is None:
            h, w = array.shape[:2]
            if size is not None and (h, w) != (size, size):
                raise DataFormatError(f"{path}: image is {h}x{w}, expected {size}x{size}")
            out = np.empty((len(paths), h, w, 3), dtype=np.uint8)
        if array.shape != out.shape[1:]:
            h, w = array.shape[:2]
            raise DataFormatError(f"{path}: image is {h}x{w}, expected {out.shape[1]}x{out.shape[2]}")
        out[i] = array
    if out is None:
        raise DataFormatError("no images found")
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def read_image_folder(
    folder: str | Path, classes: list[str], size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a folder of class folders, ``<folder>/<class>/[images/]*.{JPEG,jpg,png}``.

    Args:
        folder: the split folder.
        classes: class folder names; label = index in this list. Folders not listed are an error.
        size: expected H = W in pixels, or None to accept the size of the first image.

    Returns:
        ``(images uint8 [N, 3, H, W], labels int64 [N])``, ordered by class then file name.
    """
    folder = Path(folder)
    index = {wnid: i for i, wnid in enumerate(classes)}
    paths, labels = [], []
    for wnid in _class_dirs(folder):
        if wnid not in index:
            raise DataFormatError(f"{folder / wnid}: class folder not among the {len(classes)} known classes")
        files = _image_files(folder / wnid)
        paths += files
        labels += [index[wnid]] * len(files)
    if not paths:
        raise DataFormatError(f"{folder}: no images in class folders")
    return _load_images(paths, size), torch.tensor(labels, dtype=torch.int64)


def _read_annotated(folder: Path, annotations: Path, classes: list[str], size: int | None):
    index = {wnid: i for i, wnid in enumerate(classes)}
    paths, labels = [], []
    for line_no, line in enumerate(annotations.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DataFormatError(f"{annotations}:{line_no}: expected '<file>\\t<known wnid>...', got {line!r}")
        paths.append(folder / "images" / fields[0])
        labels.append(index[fields[1]])
    order = sorted(range(len(paths)), key=lambda i: paths[i].name)
    paths, labels = [paths[i] for i in order], [labels[i] for i in order]
    return _load_images(paths, size), torch.tensor(labels, dtype=torch.int64)


def read_tiny_imagenet(root: str | Path, split: str, size: int | None = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Read ``split`` of an extracted ``tiny-imagenet-200`` folder.

    Args:
        root: the ``tiny-imagenet-200`` folder.
        split: "train" or "test" (the latter reads ``val/``).
        size: expected image side in pixels (64 for the real data), None to accept any.

    Returns:
        ``(images uint8 [N, 3, H, W], labels int64 [N])``.
    """
    root = Path(root)
    classes = _wnids(root)
    folder = root / tiny_imagenet_split_dir(split)
    annotations = folder / "val_annotations.txt"
    if annotations.is_file():
        return _read_annotated(folder, annotations, classes, size)
    return read_image_folder(folder, classes, size)
