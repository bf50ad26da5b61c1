"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Under torchrun only rank 0 writes (:func:`robustsnn.distributed.is_main`): the other
ranks' calls return the path without touching the disk, so code that saves a
checkpoint, a result or pipeline.json runs unchanged on every rank.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_write_json", "atomic_replace_dir", "recover_dir", "read_json", "jsonable"]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move ``tmp_path`` onto ``path`` atomically (rank 0 only)."""
    path = Path(path)
    if not _writer():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=jsonable)
    return atomic_write(path, lambda p: p.write_text(text + "\n"))


def atomic_replace_dir(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Build a directory with ``fill(tmp_dir)`` and swap it in place of ``path``.

    The old directory is renamed aside first and removed only after the new one is in
    place, so at every instant one complete version exists on disk. Rank 0 only.
    """
    path = Path(path)
    if not _writer():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    for stale in path.parent.glob(f".{path.name}.new.*"):  # left by a killed writer: never complete
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.new.", dir=path.parent))
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
        old.rmdir()
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _writer() -> bool:
    from .distributed import is_main

    return is_main()


def recover_dir(path: str | Path) -> bool:
    """Put back the previous version of ``path`` if a writer was killed between the two renames.

    :func:`atomic_replace_dir` moves the old directory aside (``.NAME.old.*``) and then the
    new one in; a kill -9 between the two leaves only the old one, complete, under its
    aside name. Readers and the next writer call this first. Returns True if it restored.
    """
    path = Path(path)
    if not _writer() or path.exists() or not path.parent.is_dir():
        return False
    olds = sorted(path.parent.glob(f".{path.name}.old.*"), key=lambda p: p.stat().st_mtime_ns)
    if not olds:
        return False
    os.replace(olds[-1], path)
    return True


def read_json(path: str | Path):
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def jsonable(o):
    """``json.dumps`` default: objects with to_dict(), tensors/arrays, sets, tuples, paths."""
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
