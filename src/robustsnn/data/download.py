"""Download of the IDX files of MNIST / Fashion-MNIST from their official sources, checked by MD5.

Only these two are downloaded: they are small (~30 MB) and have stable official
files whose checksums are published (the same ones torchvision checks). Every
file is written to a temporary name, checked, then renamed, so a failed or
corrupt download never leaves a file that a later search would pick up.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .idx import idx_file_names

__all__ = ["Source", "SOURCES", "DownloadError", "fetch_url", "md5sum", "download_idx"]


@dataclass(frozen=True)
class Source:
    """Where to get the IDX files of one data set: base URLs tried in order, and the MD5 of each .gz file."""

    mirrors: tuple[str, ...]
    md5: dict[str, str]


SOURCES: dict[str, Source] = {
    "fashion-mnist": Source(
        mirrors=(
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "mnist": Source(
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
}


class DownloadError(OSError):
    """No mirror delivered a file with the expected checksum."""


def fetch_url(url: str, destination: Path, timeout: float = 30.0) -> None:
    """Copy the body of ``url`` into the file ``destination`` (overwritten)."""
    request = urllib.request.Request(url, headers={"User-Agent": "robustsnn"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(destination, "wb") as out:
        shutil.copyfileobj(response, out)


def md5sum(path: Path) -> str:
    """Hex MD5 digest of a file's bytes."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_one(source: Source, file: str, folder: Path) -> None:
    target = folder / file
    if target.is_file() and md5sum(target) == source.md5[file]:
        return
    errors = []
    for mirror in source.mirrors:
        fd, tmp = tempfile.mkstemp(prefix=f".{file}.", dir=folder)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            fetch_url(mirror + file, tmp_path)
            found = md5sum(tmp_path)
            if found != source.md5[file]:
                errors.append(f"{mirror + file}: md5 {found} != {source.md5[file]}")
                continue
            os.replace(tmp_path, target)
            return
        except OSError as exc:  # URLError, timeouts and HTTP errors are OSErrors
            errors.append(f"{mirror + file}: {exc}")
        finally:
            tmp_path.unlink(missing_ok=True)
    raise DownloadError("; ".join(errors))


def download_idx(name: str, split: str, folder: Path) -> Path:
    """Download the two .gz IDX files of ``split`` of ``name`` into ``folder``, checking their MD5.

    Files already there with the right checksum are kept.

    Args:
        name: "fashion-mnist" or "mnist".
        split: "train" or "test".
        folder: destination, created if missing.

    Returns:
        ``folder``.

    Raises:
        DownloadError: every mirror failed or delivered a file with a wrong checksum.
    """
    source = SOURCES[name]
    folder.mkdir(parents=True, exist_ok=True)
    for base in idx_file_names(split):
        _download_one(source, base + ".gz", folder)
    return folder
