"""Small shared fixtures for the tests: tiny data sets, tiny models, a CLI runner."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import torch

from robustsnn.data import ArrayDataset, dataset_info
from robustsnn.models import build


def synthetic_fmnist(n: int = 256, seed: int = 0) -> ArrayDataset:
    """A Fashion-MNIST-shaped set whose class is a bright 7x7 block at one of 10 places."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = (torch.rand(n, 1, 28, 28, generator=g) * 60).to(torch.uint8)
    for i, c in enumerate(labels.tolist()):
        r, col = divmod(c, 5)
        images[i, 0, 3 + 12 * r: 10 + 12 * r, 1 + 5 * col: 6 + 5 * col] = 230
    return ArrayDataset(images, labels, dataset_info("fashion-mnist"))


def tiny_snn(kind: str = "snn", neuron: str = "lif", time_steps: int = 2, **kw):
    """The default CNN at a quarter width (fast enough for unit tests)."""
    torch.manual_seed(0)
    info = dataset_info("fashion-mnist")
    return build("cnn", kind=kind, neuron=neuron, time_steps=time_steps, width=0.25, mean=info.mean, std=info.std, **kw)


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run ``robustsnn ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from robustsnn.cli import main

    monkeypatch.setattr(sys, "argv", ["robustsnn", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def write_fmnist_idx(folder, n_train: int = 64, n_test: int = 32, seed: int = 0):
    """Write ``synthetic_fmnist`` images as the four gzip IDX files of Fashion-MNIST into ``folder``.

    Byte for byte the official layout (magic 2051/2049, big-endian sizes), so
    ``--data-dir folder`` or ``ROBUSTSNN_DATA=folder`` reads them like the real data set.
    """
    import gzip
    import struct
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        ds = synthetic_fmnist(n, seed=s)
        images = ds.images[:, 0].numpy().astype("uint8")
        labels = ds.labels.numpy().astype("uint8")
        head = struct.pack(">IIII", 2051, n, 28, 28)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(head + images.tobytes(), mtime=0))
        head = struct.pack(">II", 2049, n)
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(head + labels.tobytes(), mtime=0))
    return folder


@contextmanager
def kernel_backend(name: str):
    """Run the block with robustsnn's neuron backend ``name`` (auto / torch / cpp / compile)."""
    from robustsnn import kernels

    saved = kernels.backend()
    kernels.set_backend(name)
    try:
        yield
    finally:
        kernels.set_backend(saved)
