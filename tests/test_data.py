"""Tests of robustsnn.data: every reader on tiny files written in the real on-disk format.

The files are made here, byte for byte as the official distributions lay them
out (IDX headers with magic 2051/2049, Python-2 style CIFAR pickles, SVHN's
MATLAB layout, Tiny-ImageNet's folders and annotation file), and the loaders
must give back exactly the pixels and labels written. Nothing touches the
network: the download function is replaced by one that fails the test.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import robustsnn.data.download as download_mod
from robustsnn.data import (
    DATASETS,
    ArrayDataset,
    Augmentation,
    DataFormatError,
    DataNotFoundError,
    DatasetInfo,
    batches,
    dataset_info,
    default_augmentation,
    load_dataset,
    num_batches,
    random_crop,
    random_flip,
)
from robustsnn.data import datasets as datasets_mod

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------- fixtures and writers


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No $ROBUSTSNN_DATA, a private download cache, and no network."""
    monkeypatch.delenv("ROBUSTSNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def no_network(url, destination, timeout=30.0):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(download_mod, "fetch_url", no_network)


def write_idx_images(path: Path, images: np.ndarray, gz: bool) -> None:
    """IDX image file: magic 2051, then N, H, W as big-endian uint32, then the bytes."""
    n, h, w = images.shape
    payload = struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


def write_idx_labels(path: Path, labels: np.ndarray, gz: bool) -> None:
    """IDX label file: magic 2049, then N as big-endian uint32, then the bytes."""
    payload = struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


def make_mnist_like(folder: Path, split: str, n: int, seed: int, gz: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if gz else ""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx_images(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
    write_idx_labels(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return images, labels


def write_cifar_batch(
    path: Path, data: np.ndarray, labels: list[int], label_key: bytes, extra: dict | None = None
) -> None:
    """A batch as the official archive has it: a Python-2 pickle (protocol 2) of a dict with bytes keys."""
    batch = {b"batch_label": b"testing batch 1 of 1", label_key: labels, b"data": data, **(extra or {})}
    blob = pickle.dumps(batch, protocol=2)
    # the official files were pickled by numpy 1.x: its arrays refer to numpy.core.multiarray
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


def cifar_pixels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def expected_cifar_images(data: np.ndarray) -> np.ndarray:
    """Official layout: 1024 red, 1024 green, 1024 blue, each 32 rows of 32 pixels."""
    out = np.empty((len(data), 3, 32, 32), dtype=np.uint8)
    for n in range(len(data)):
        for c in range(3):
            out[n, c] = data[n, c * 1024 : (c + 1) * 1024].reshape(32, 32)
    return out


# ---------------------------------------------------------------- info, names


def test_dataset_info_values():
    assert DATASETS[0] == "fashion-mnist"
    assert set(DATASETS) == {"fashion-mnist", "mnist", "cifar10", "cifar100", "svhn", "tiny-imagenet"}
    fm = dataset_info("fashion-mnist")
    assert fm == DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,))
    assert dataset_info("mnist").mean == (0.1307,) and dataset_info("mnist").std == (0.3081,)
    assert dataset_info("cifar10").std == (0.2470, 0.2435, 0.2616)
    assert dataset_info("cifar100").num_classes == 100
    assert dataset_info("svhn").mean == (0.4377, 0.4438, 0.4728)
    tiny = dataset_info("tiny-imagenet")
    assert (tiny.num_classes, tiny.in_channels, tiny.image_size) == (200, 3, 64)
    for name in DATASETS:
        info = dataset_info(name)
        assert len(info.mean) == len(info.std) == info.in_channels
    with pytest.raises(AttributeError):
        fm.num_classes = 3  # frozen


def test_names_are_normalised_and_unknown_names_list_the_valid_ones():
    assert dataset_info("Fashion_MNIST").name == "fashion-mnist"
    assert dataset_info("CIFAR-10").name == "cifar10"
    with pytest.raises(ValueError, match="valid names: fashion-mnist, mnist, cifar10"):
        load_dataset("imagenet", "train", download=False)
    with pytest.raises(ValueError, match="valid splits"):
        load_dataset("mnist", "validation", download=False)


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reads_exact_pixels_and_labels(tmp_path, gz):
    images, labels = make_mnist_like(tmp_path / "d", "train", n=7, seed=1, gz=gz)
    test_images, test_labels = make_mnist_like(tmp_path / "d", "test", n=3, seed=2, gz=gz)

    train = load_dataset("fashion-mnist", "train", data_dir=tmp_path / "d", download=False)
    assert train.images.dtype == torch.uint8 and train.images.shape == (7, 1, 28, 28)
    assert train.labels.dtype == torch.int64 and train.labels.shape == (7,)
    assert np.array_equal(train.images[:, 0].numpy(), images)
    assert np.array_equal(train.labels.numpy(), labels)
    assert train.info == dataset_info("fashion-mnist")

    test = load_dataset("mnist", "test", data_dir=tmp_path / "d", download=False)
    assert np.array_equal(test.images[:, 0].numpy(), test_images)
    assert np.array_equal(test.labels.numpy(), test_labels)
    assert test.info.name == "mnist"


def test_idx_wrong_magic_is_a_format_error(tmp_path):
    make_mnist_like(tmp_path, "train", n=2, seed=0, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(struct.pack(">II", 2051, 2) + b"\x01\x02")  # image magic on a label file
    with pytest.raises(DataFormatError, match="magic number 2051, expected 2049"):
        load_dataset("mnist", "train", data_dir=tmp_path, download=False)


def test_idx_truncated_file_is_a_format_error(tmp_path):
    make_mnist_like(tmp_path, "train", n=2, seed=0, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(DataFormatError, match="header says"):
        load_dataset("mnist", "train", data_dir=tmp_path, download=False)


# ---------------------------------------------------------------- search order and errors


def test_search_order_data_dir_then_env_then_system_then_cache(tmp_path, monkeypatch):
    given, env, system = tmp_path / "given", tmp_path / "env", tmp_path / "system"
    cache = tmp_path / "cache" / "robustsnn" / "fashion-mnist"
    for i, folder in enumerate((given, env / "fashion-mnist", system, cache)):
        make_mnist_like(folder, "test", n=i + 1, seed=i, gz=True)  # size tells which was read
    monkeypatch.setitem(datasets_mod.SYSTEM_DIRS, "fashion-mnist", (str(system),))
    monkeypatch.setenv("ROBUSTSNN_DATA", str(env))

    def size(**kwargs):
        return len(load_dataset("fashion-mnist", "test", download=False, **kwargs))

    assert size(data_dir=given) == 1
    assert size() == 2  # $ROBUSTSNN_DATA/<name>
    assert size(data_dir=tmp_path / "nothing-here") == 2  # data_dir empty: the search goes on
    monkeypatch.delenv("ROBUSTSNN_DATA")
    assert size() == 3
    monkeypatch.setitem(datasets_mod.SYSTEM_DIRS, "fashion-mnist", ())
    assert size() == 4
    assert datasets_mod.search_dirs("fashion-mnist", given)[:2] == [given, given / "fashion-mnist"]


def test_env_folder_itself_and_torchvision_layout(tmp_path, monkeypatch):
    images, _ = make_mnist_like(tmp_path / "flat", "train", n=2, seed=3, gz=False)
    monkeypatch.setenv("ROBUSTSNN_DATA", f"{tmp_path / 'missing'}:{tmp_path / 'flat'}")  # a list, like $PATH
    assert np.array_equal(load_dataset("mnist", "train", download=False).images[:, 0].numpy(), images)

    images, _ = make_mnist_like(tmp_path / "tv" / "MNIST" / "raw", "train", n=3, seed=4, gz=True)
    assert np.array_equal(
        load_dataset("mnist", "train", data_dir=tmp_path / "tv", download=False).images[:, 0].numpy(), images
    )


def test_nothing_found_without_download_gives_a_one_line_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(datasets_mod.SYSTEM_DIRS, "fashion-mnist", (str(tmp_path / "no-system"),))
    monkeypatch.setenv("ROBUSTSNN_DATA", str(tmp_path / "no-env"))
    with pytest.raises(DataNotFoundError) as caught:
        load_dataset("fashion-mnist", "train", data_dir=tmp_path / "empty", download=False)
    message = str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)
    assert "\n" not in message
    assert "train-images-idx3-ubyte" in message  # what
    assert str(tmp_path / "empty") in message and str(tmp_path / "no-env") in message  # where
    assert "apt-get install dataset-fashion-mnist" in message  # what to do
    assert "--data-dir" in message and "ROBUSTSNN_DATA" in message


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "tiny-imagenet"])
def test_datasets_without_download_fail_clearly(tmp_path, name):
    with pytest.raises(DataNotFoundError, match="--data-dir / set ROBUSTSNN_DATA"):
        load_dataset(name, "test", data_dir=tmp_path)  # download=True: still never downloaded


def fake_server(files: dict[str, bytes], calls: list[str]):
    def fetch(url, destination, timeout=30.0):
        calls.append(url)
        destination.write_bytes(files[url.rsplit("/", 1)[1]])

    return fetch


def test_download_checks_md5_and_fills_the_cache(tmp_path, monkeypatch):
    src = tmp_path / "official"
    images, labels = make_mnist_like(src, "test", n=4, seed=5, gz=True)
    files = {p.name: p.read_bytes() for p in src.iterdir()}
    md5 = {name: hashlib.md5(blob).hexdigest() for name, blob in files.items()}
    monkeypatch.setitem(download_mod.SOURCES, "mnist", download_mod.Source(("https://mirror.invalid/",), md5))
    monkeypatch.setitem(datasets_mod.SYSTEM_DIRS, "mnist", ())
    calls: list[str] = []
    monkeypatch.setattr(download_mod, "fetch_url", fake_server(files, calls))

    data = load_dataset("mnist", "test", data_dir=tmp_path / "empty")
    assert np.array_equal(data.images[:, 0].numpy(), images) and np.array_equal(data.labels.numpy(), labels)
    cache = tmp_path / "cache" / "robustsnn" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(files)
    assert len(calls) == 2
    load_dataset("mnist", "test")  # now found in the cache: no second download
    assert len(calls) == 2


def test_download_with_wrong_checksum_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(datasets_mod.SYSTEM_DIRS, "mnist", ())
    files = {name: b"not the real file" for name in download_mod.SOURCES["mnist"].md5}
    monkeypatch.setattr(download_mod, "fetch_url", fake_server(files, []))
    with pytest.raises(DataNotFoundError, match="download failed .*md5"):
        load_dataset("mnist", "train")
    assert list((tmp_path / "cache" / "robustsnn" / "mnist").iterdir()) == []


def test_offline_download_failure_is_data_not_found(monkeypatch):
    monkeypatch.setitem(datasets_mod.SYSTEM_DIRS, "fashion-mnist", ())

    def offline(url, destination, timeout=30.0):
        raise OSError("Name or service not known")

    monkeypatch.setattr(download_mod, "fetch_url", offline)
    with pytest.raises(DataNotFoundError, match="Name or service not known.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "test")


def test_official_checksums_are_the_published_ones():
    assert download_mod.SOURCES["fashion-mnist"].md5["train-images-idx3-ubyte.gz"] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert download_mod.SOURCES["mnist"].md5["t10k-labels-idx1-ubyte.gz"] == "ec29112dd5afa0611ce80d1b7f02629c"


# ---------------------------------------------------------------- CIFAR


def test_cifar10_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    datas, labels = [], []
    for i in range(1, 6):
        data, lab = cifar_pixels(2, seed=i), [i % 10, (i + 3) % 10]
        write_cifar_batch(folder / f"data_batch_{i}", data, lab, b"labels", {b"filenames": [b"a.png", b"b.png"]})
        datas.append(data)
        labels += lab
    test_data = cifar_pixels(3, seed=9)
    write_cifar_batch(folder / "test_batch", test_data, [9, 0, 1], b"labels")

    train = load_dataset("cifar10", "train", data_dir=tmp_path, download=False)
    assert train.images.shape == (10, 3, 32, 32) and train.images.dtype == torch.uint8
    assert np.array_equal(train.images.numpy(), expected_cifar_images(np.concatenate(datas)))
    assert train.labels.tolist() == labels and train.labels.dtype == torch.int64

    test = load_dataset("cifar-10", "test", data_dir=folder, download=False)  # the extracted folder itself
    assert np.array_equal(test.images.numpy(), expected_cifar_images(test_data))
    assert test.labels.tolist() == [9, 0, 1]


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = cifar_pixels(4, seed=11)
    write_cifar_batch(folder / "train", data, [99, 0, 57, 3], b"fine_labels", {b"coarse_labels": [19, 0, 1, 2]})
    write_cifar_batch(folder / "test", data[:1], [42], b"fine_labels", {b"coarse_labels": [5]})
    train = load_dataset("cifar100", "train", data_dir=tmp_path, download=False)
    assert np.array_equal(train.images.numpy(), expected_cifar_images(data))
    assert train.labels.tolist() == [99, 0, 57, 3]
    assert load_dataset("cifar100", "test", data_dir=tmp_path, download=False).labels.tolist() == [42]


def test_cifar_refuses_pickles_that_run_code(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "test").write_bytes(pickle.dumps({b"data": print}, protocol=2))
    with pytest.raises(DataFormatError, match="refusing to load .*print"):
        load_dataset("cifar100", "test", data_dir=tmp_path, download=False)


# ---------------------------------------------------------------- SVHN


def test_svhn_mat_layout_and_label_ten_is_zero(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)  # H, W, C, N as in the official files
    y = np.array([[10], [1], [9], [10], [5]], dtype=np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": x, "y": y})

    data = load_dataset("svhn", "test", data_dir=tmp_path, download=False)
    assert data.images.shape == (5, 3, 32, 32) and data.images.dtype == torch.uint8
    assert np.array_equal(data.images.numpy(), x.transpose(3, 2, 0, 1))
    assert data.images[2, 1, 4, 6] == x[4, 6, 1, 2]
    assert data.labels.tolist() == [0, 1, 9, 0, 5] and data.labels.dtype == torch.int64


# ---------------------------------------------------------------- Tiny-ImageNet

WNIDS = ["n09193705", "n01443537", "n02124075"]  # unsorted on purpose: labels follow sorted order


def rgb(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def make_tiny_train(root: Path) -> dict[str, list[np.ndarray]]:
    from PIL import Image

    (root / "wnids.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    pixels = {}
    for k, wnid in enumerate(WNIDS):
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        pixels[wnid] = [rgb(10 * k + i) for i in range(2)]
        for i, array in enumerate(pixels[wnid]):
            Image.fromarray(array).save(folder / f"{wnid}_{i}.png")  # lossless: exact pixels
    return pixels


def test_tiny_imagenet_train_folders(tmp_path):
    pixels = make_tiny_train(tmp_path / "tiny-imagenet-200")
    data = load_dataset("tiny-imagenet", "train", data_dir=tmp_path, download=False)
    assert data.images.shape == (6, 3, 64, 64) and data.images.dtype == torch.uint8
    ordered = sorted(WNIDS)
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2]
    for n in range(6):
        expected = pixels[ordered[n // 2]][n % 2]
        assert np.array_equal(data.images[n].permute(1, 2, 0).numpy(), expected)


def test_tiny_imagenet_official_val_annotations_jpeg_and_greyscale(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny-imagenet-200"
    make_tiny_train(root)
    (root / "val" / "images").mkdir(parents=True)
    Image.fromarray(np.full((64, 64, 3), (200, 30, 90), dtype=np.uint8)).save(root / "val/images/val_1.JPEG")
    Image.fromarray(np.full((64, 64), 77, dtype=np.uint8), mode="L").save(root / "val/images/val_0.JPEG")
    (root / "val/val_annotations.txt").write_text(
        f"val_1.JPEG\t{WNIDS[0]}\t0\t0\t63\t63\nval_0.JPEG\t{WNIDS[2]}\t1\t2\t30\t40\n"
    )
    data = load_dataset("tiny-imagenet", "test", data_dir=root, download=False)
    assert data.images.shape == (2, 3, 64, 64)
    assert data.labels.tolist() == [sorted(WNIDS).index(WNIDS[2]), sorted(WNIDS).index(WNIDS[0])]
    grey, colour = data.images.int()
    assert (grey - 77).abs().max() <= 2  # greyscale JPEG -> 3 equal channels
    assert (colour - torch.tensor([200, 30, 90])[:, None, None]).abs().max() <= 3  # JPEG is lossy


def test_tiny_imagenet_val_as_class_folders(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny-imagenet-200"
    make_tiny_train(root)
    (root / "wnids.txt").unlink()  # classes then come from train/
    array = rgb(99)
    (root / "val" / WNIDS[1]).mkdir(parents=True)
    Image.fromarray(array).save(root / "val" / WNIDS[1] / "x.png")
    data = load_dataset("tiny-imagenet", "test", data_dir=tmp_path, download=False)
    assert data.labels.tolist() == [0]  # n01443537 sorts first
    assert np.array_equal(data.images[0].permute(1, 2, 0).numpy(), array)


def test_tiny_imagenet_wrong_size_is_a_format_error(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny-imagenet-200"
    (root / "train" / WNIDS[0]).mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(root / "train" / WNIDS[0] / "a.png")
    with pytest.raises(DataFormatError, match="32x32, expected 64x64"):
        load_dataset("tiny-imagenet", "train", data_dir=tmp_path, download=False)


# ---------------------------------------------------------------- ArrayDataset


def numbered(n: int = 50, name: str = "cifar10") -> ArrayDataset:
    """Sample i has every pixel equal to i (so a batch tells which samples it holds)."""
    info = dataset_info(name)
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, *info.shape).clone()
    return ArrayDataset(images, torch.arange(n) % info.num_classes, info)


def test_array_dataset_subset_and_validation():
    data = numbered(20)
    assert len(data) == 20
    assert len(data.subset(5)) == 5 and len(data.subset(100)) == 20
    picked = data.subset([3, 1, 3])
    assert picked.images[:, 0, 0, 0].tolist() == [3, 1, 3] and picked.info == data.info
    assert data.subset(np.int64(4)).images.shape[0] == 4
    image, label = data[7]
    assert image.shape == (3, 32, 32) and int(label) == 7
    with pytest.raises(IndexError):
        data.subset([20])
    with pytest.raises(ValueError, match="uint8"):
        ArrayDataset(data.images.float(), data.labels, data.info)
    with pytest.raises(ValueError, match="int64"):
        ArrayDataset(data.images, data.labels[:3], data.info)


# ---------------------------------------------------------------- batches


def ids(x: torch.Tensor) -> list[int]:
    return (x[:, 0, 0, 0] * 255).round().int().tolist()


def test_batches_shapes_dtype_and_scale():
    data = numbered(50)
    out = list(batches(data, 16, shuffle=False, seed=0))
    assert [len(y) for _, y in out] == [16, 16, 16, 2] == [x.shape[0] for x, _ in out]
    x, y = out[0]
    assert x.dtype == torch.float32 and x.shape == (16, 3, 32, 32) and y.dtype == torch.int64
    assert torch.equal(x, data.images[:16].float() / 255)
    assert 0.0 <= float(x.min()) and float(out[-1][0].max()) <= 1.0
    assert ids(torch.cat([x for x, _ in out])) == list(range(50))
    assert num_batches(data, 16) == 4 and num_batches(data, 16, drop_last=True) == 3 and num_batches(48, 16) == 3
    assert len(list(batches(data, 16, shuffle=True, seed=0, drop_last=True))) == 3


def test_batches_deterministic_per_seed_and_epoch():
    data = numbered(50)

    def run(seed, epoch, **kw):
        return [(x, y) for x, y in batches(data, 8, shuffle=True, seed=seed, epoch=epoch, **kw)]

    a, b = run(1, 0), run(1, 0)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))
    order = [i for x, _ in a for i in ids(x)]
    assert sorted(order) == list(range(50))  # every sample exactly once
    assert order != list(range(50))
    other_epoch = [i for x, _ in run(1, 1) for i in ids(x)]
    assert sorted(other_epoch) == list(range(50)) and other_epoch != order
    assert [i for x, _ in run(2, 0) for i in ids(x)] != order
    for x, y in a:
        assert torch.equal(y, torch.tensor(ids(x)) % 10)  # labels travel with their images


def test_augmented_batches_are_seeded():
    data = numbered(40)
    rng = np.random.default_rng(0)
    data = ArrayDataset(torch.from_numpy(rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8)), data.labels, data.info)

    def run(seed, epoch):
        return torch.cat([x for x, _ in batches(data, 16, shuffle=True, seed=seed, epoch=epoch, augment=True)])

    assert torch.equal(run(3, 2), run(3, 2))
    plain = torch.cat([x for x, _ in batches(data, 16, shuffle=True, seed=3, epoch=2)])
    assert run(3, 2).shape == plain.shape and not torch.equal(run(3, 2), plain)
    fm = numbered(10, "fashion-mnist")  # no default augmentation: identical to plain batches
    assert torch.equal(
        torch.cat([x for x, _ in batches(fm, 4, shuffle=True, seed=0, augment=True)]),
        torch.cat([x for x, _ in batches(fm, 4, shuffle=True, seed=0)]),
    )


# ---------------------------------------------------------------- transforms


def shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` [C, H, W] moved down by dy and right by dx, zeros where nothing moved in."""
    out = torch.zeros_like(image)
    _, h, w = image.shape
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_random_crop_is_a_seeded_zero_filled_shift():
    x = torch.rand(32, 2, 8, 9) + 0.1  # no zeros in the input
    out = random_crop(x, 3, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, random_crop(x, 3, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, random_crop(x, 3, torch.Generator().manual_seed(1)))
    shifts = set()
    for i in range(len(x)):
        found = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4) if torch.equal(out[i], shifted(x[i], dy, dx))]
        assert len(found) == 1, f"sample {i} is not a shifted copy"
        shifts.add(found[0])
    assert len(shifts) > 5  # per-sample offsets, not one for the batch
    assert torch.equal(random_crop(x, 0, torch.Generator()), x)


def test_random_flip_is_seeded_and_per_sample():
    x = torch.rand(64, 3, 5, 6)
    out = random_flip(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, random_flip(x, torch.Generator().manual_seed(0)))
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))  # each is one or the other
    assert 10 < sum(flipped) < 54
    assert torch.equal(out[flipped.index(True)][..., 0], x[flipped.index(True)][..., -1])


def test_default_augmentations():
    assert default_augmentation("fashion-mnist").is_identity and default_augmentation("mnist").is_identity
    assert default_augmentation("cifar10") == Augmentation(crop_padding=4, flip=True)
    assert default_augmentation("cifar100") == Augmentation(crop_padding=4, flip=True)
    assert default_augmentation("svhn") == Augmentation(crop_padding=4, flip=False)
    assert default_augmentation("tiny-imagenet") == Augmentation(crop_padding=4, flip=True)


# ---------------------------------------------------------------- the real Debian files


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist():
    train = load_dataset("fashion-mnist", "train", data_dir=DEBIAN_FASHION_MNIST, download=False)
    test = load_dataset("fashion-mnist", "test", data_dir=DEBIAN_FASHION_MNIST, download=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.shape[1:] == (1, 28, 28) == test.images.shape[1:]
    assert train.class_counts.tolist() == [6000] * 10 and test.class_counts.tolist() == [1000] * 10
    mean = float(train.images.float().mean() / 255)
    assert abs(mean - train.info.mean[0]) < 1e-3
