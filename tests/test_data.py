"""The MNIST loader on the real shared files, its error messages, and ``class_pairs``."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import transforms

from robust_vae.core.errors import DataError
from robust_vae.core.paths import default_cache_dir
from robust_vae.data import DATA_ENV, DATASETS, Dataset, class_pairs, dataset_source, load_dataset

TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
ALL_STEMS = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


# ----------------------------------------------------------------- helpers
def real_bytes(mnist_root: Path, stem: str) -> bytes:
    """Decompressed content of one real IDX file (read without the code under test)."""
    folder = mnist_root / "mnist"
    gz = folder / f"{stem}.gz"
    return gzip.decompress(gz.read_bytes()) if gz.is_file() else (folder / stem).read_bytes()


def real_file(mnist_root: Path, stem: str) -> Path:
    folder = mnist_root / "mnist"
    gz = folder / f"{stem}.gz"
    return gz if gz.is_file() else folder / stem


def make_root(tmp_path: Path, mnist_root: Path, replace: dict[str, bytes]) -> Path:
    """A data root whose ``mnist/`` links the real files except ``replace`` (file name -> bytes).

    Keys are full file names (``t10k-labels-idx1-ubyte.gz`` or without ``.gz``); a replaced
    stem does not also get the real file, so the loader must read the replacement.
    """
    folder = tmp_path / "root" / "mnist"
    folder.mkdir(parents=True)
    replaced_stems = {name.removesuffix(".gz") for name in replace}
    for stem in ALL_STEMS:
        if stem not in replaced_stems:
            source = real_file(mnist_root, stem)
            os.symlink(source, folder / source.name)
    for name, content in replace.items():
        (folder / name).write_bytes(content)
    return folder.parent


def load_error(root: Path, split: str = "test") -> str:
    with pytest.raises(DataError) as info:
        load_dataset("mnist", split, data_dir=root)
    message = str(info.value)
    assert "\n" not in message, "user-facing errors are one line"
    return message


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(">i" + "i" * len(dims), magic, *dims) + payload


# ----------------------------------------------------------------- real data
@pytest.mark.parametrize("split, n", [("train", 60_000), ("test", 10_000)])
def test_shapes_dtype_and_range(split: str, n: int, request: pytest.FixtureRequest) -> None:
    data: Dataset = request.getfixturevalue(f"mnist_{split}")
    assert (data.name, data.split, len(data), data.num_classes) == ("mnist", split, n, 10)
    assert data.images.shape == (n, 1, 32, 32)
    assert data.images.dtype == torch.float32
    assert data.images.is_contiguous()
    assert float(data.images.min()) == 0.0
    assert float(data.images.max()) == 1.0
    assert data.labels.shape == (n,)
    assert data.labels.dtype == torch.int64
    assert int(data.labels.min()) == 0 and int(data.labels.max()) == 9


@pytest.mark.parametrize("split, counts", [("test", TEST_COUNTS), ("train", TRAIN_COUNTS)])
def test_class_counts(split: str, counts: list[int], request: pytest.FixtureRequest) -> None:
    data: Dataset = request.getfixturevalue(f"mnist_{split}")
    assert torch.bincount(data.labels, minlength=10).tolist() == counts


def test_first_labels_are_the_standard_ones(mnist_test: Dataset, mnist_train: Dataset) -> None:
    assert mnist_test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert mnist_train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


@pytest.mark.parametrize("index", [0, 1, 4321, 9999])
def test_resize_matches_torchvision(index: int, mnist_root: Path, mnist_test: Dataset) -> None:
    # Resize(32) on the float tensor of the raw image (torchvision's tensor path: bilinear,
    # antialias). The PIL path is not comparable: it rounds its output to uint8 (~4e-3 apart).
    raw = np.frombuffer(real_bytes(mnist_root, TEST_IMAGES), dtype=np.uint8, offset=16)
    image = raw.reshape(10_000, 28, 28)[index]
    x = torch.from_numpy(image.astype(np.float32) / 255.0).unsqueeze(0)  # (1, 28, 28)
    expected = transforms.Resize(32, antialias=True)(x)
    assert expected.shape == (1, 32, 32)
    torch.testing.assert_close(mnist_test.images[index], expected, rtol=0.0, atol=1e-5)


def test_uncompressed_files_load_the_same(tmp_path: Path, mnist_root: Path, mnist_test: Dataset) -> None:
    root = make_root(tmp_path, mnist_root, {
        TEST_IMAGES: real_bytes(mnist_root, TEST_IMAGES),
        TEST_LABELS: real_bytes(mnist_root, TEST_LABELS),
    })
    assert not list((root / "mnist").glob("t10k-*.gz"))
    data = load_dataset("mnist", "test", data_dir=root)
    assert torch.equal(data.images, mnist_test.images)
    assert torch.equal(data.labels, mnist_test.labels)


# ----------------------------------------------------------------- damaged files
def test_truncated_gzip(tmp_path: Path, mnist_root: Path) -> None:
    content = gzip.compress(real_bytes(mnist_root, TEST_IMAGES), compresslevel=1)
    root = make_root(tmp_path, mnist_root, {f"{TEST_IMAGES}.gz": content[: len(content) // 2]})
    message = load_error(root)
    assert f"{TEST_IMAGES}.gz" in message
    assert "truncated" in message


def test_truncated_uncompressed(tmp_path: Path, mnist_root: Path) -> None:
    content = real_bytes(mnist_root, TEST_IMAGES)
    root = make_root(tmp_path, mnist_root, {TEST_IMAGES: content[:-100]})
    message = load_error(root)
    assert str(root / "mnist" / TEST_IMAGES) in message
    assert "truncated" in message
    assert f"{len(content) - 100} bytes" in message and str(len(content)) in message


def test_trailing_bytes(tmp_path: Path, mnist_root: Path) -> None:
    content = real_bytes(mnist_root, TEST_LABELS)
    root = make_root(tmp_path, mnist_root, {TEST_LABELS: content + b"\0" * 7})
    message = load_error(root)
    assert TEST_LABELS in message and "trailing bytes" in message


def test_header_only_file(tmp_path: Path, mnist_root: Path) -> None:
    root = make_root(tmp_path, mnist_root, {TEST_LABELS: b"\0\0\x08"})
    message = load_error(root)
    assert TEST_LABELS in message and "truncated" in message


@pytest.mark.parametrize("compressed", [True, False])
def test_wrong_magic_number(tmp_path: Path, mnist_root: Path, compressed: bool) -> None:
    labels = real_bytes(mnist_root, TEST_LABELS)
    damaged = struct.pack(">i", 0x0803) + labels[4:]  # the images' magic in a labels file
    name = f"{TEST_LABELS}.gz" if compressed else TEST_LABELS
    root = make_root(tmp_path, mnist_root, {name: gzip.compress(damaged) if compressed else damaged})
    message = load_error(root)
    assert name in message
    assert "wrong magic number 0x00000803 (expected 0x00000801)" in message


def test_images_and_labels_from_different_splits(tmp_path: Path, mnist_root: Path) -> None:
    train_labels = gzip.compress(real_bytes(mnist_root, TRAIN_LABELS), compresslevel=1)
    root = make_root(tmp_path, mnist_root, {f"{TEST_LABELS}.gz": train_labels})
    message = load_error(root)
    assert TEST_IMAGES in message and TEST_LABELS in message
    assert "10000 images" in message and "60000 labels" in message
    assert "do not belong together" in message


def test_consistent_but_nonstandard_count(tmp_path: Path, mnist_root: Path) -> None:
    images = idx_bytes(0x0803, (100, 28, 28), bytes(100 * 28 * 28))
    labels = idx_bytes(0x0801, (100,), bytes(100))
    root = make_root(tmp_path, mnist_root, {TEST_IMAGES: images, TEST_LABELS: labels})
    message = load_error(root)
    assert TEST_IMAGES in message and "100 images" in message and "10000" in message


def test_label_out_of_range(tmp_path: Path, mnist_root: Path) -> None:
    labels = bytearray(real_bytes(mnist_root, TEST_LABELS))
    labels[8 + 123] = 10
    root = make_root(tmp_path, mnist_root, {TEST_LABELS: bytes(labels)})
    message = load_error(root)
    assert TEST_LABELS in message and "label 10 out of range" in message


def _not_gzip(content: bytes) -> bytes:
    return b"this is not a gzip file\n" + content[:100]


def _flipped_deflate_byte(content: bytes) -> bytes:
    # A flipped byte inside the deflate stream: zlib.error or a CRC failure, depending on where.
    damaged = bytearray(gzip.compress(content, compresslevel=9, mtime=0))
    damaged[100] ^= 0xFF
    return bytes(damaged)


def _flipped_crc(content: bytes) -> bytes:
    damaged = bytearray(gzip.compress(content, mtime=0))
    damaged[-6] ^= 0xFF  # inside the CRC32 of the gzip trailer
    return bytes(damaged)


@pytest.mark.parametrize("damage", [_not_gzip, _flipped_deflate_byte, _flipped_crc])
def test_bad_gzip(tmp_path: Path, mnist_root: Path, damage) -> None:
    name = f"{TEST_LABELS}.gz"
    root = make_root(tmp_path, mnist_root, {name: damage(real_bytes(mnist_root, TEST_LABELS))})
    message = load_error(root)
    assert str(root / "mnist" / name) in message
    assert "cannot be read" in message and "not gzip" in message


# ----------------------------------------------------------------- missing / unknown
def test_data_dir_without_files(tmp_path: Path) -> None:
    message = load_error(tmp_path)
    assert str(tmp_path / "mnist") in message
    assert "--data-dir" in message and DATA_ENV in message


def test_env_root_without_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test")
    message = str(info.value)
    assert str(tmp_path / "mnist") in message and f"${DATA_ENV}" in message
    assert "--data-dir" in message


def test_one_file_missing(tmp_path: Path, mnist_root: Path) -> None:
    root = make_root(tmp_path, mnist_root, {})
    (root / "mnist" / f"{TRAIN_LABELS}.gz").unlink(missing_ok=True)
    (root / "mnist" / TRAIN_LABELS).unlink(missing_ok=True)
    message = load_error(root, "test")  # all four files are required, whatever the split
    assert "--data-dir" in message and DATA_ENV in message


@pytest.mark.parametrize("name", ["cifar10", "no-such-set", ""])
def test_unknown_dataset(name: str, mnist_root: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(name, "test", data_dir=mnist_root)
    assert repr(name) in str(info.value) and "mnist" in str(info.value)


def test_unknown_split(mnist_root: Path) -> None:
    with pytest.raises(DataError, match="unknown split 'validation'"):
        load_dataset("mnist", "validation", data_dir=mnist_root)


def test_dataset_name_is_case_insensitive(mnist_root: Path, mnist_test: Dataset) -> None:
    assert load_dataset("MNIST", "test", data_dir=mnist_root) is mnist_test


# ----------------------------------------------------------------- class_pairs
@pytest.mark.parametrize("source, target", [(3, 8), (8, 3), (1, 5), (0, 9)])
def test_class_pairs(source: int, target: int, mnist_test: Dataset) -> None:
    labels = mnist_test.labels
    src, tgt = class_pairs(labels, source, target, seed=0)
    n = min(TEST_COUNTS[source], TEST_COUNTS[target])
    assert src.shape == tgt.shape == (n,)
    assert src.dtype == tgt.dtype == torch.int64
    assert bool((labels[src] == source).all()) and bool((labels[tgt] == target).all())
    assert len(set(src.tolist())) == n and len(set(tgt.tolist())) == n
    # The smaller class is used whole; the larger one is sampled.
    smaller, smaller_class = (src, source) if TEST_COUNTS[source] <= TEST_COUNTS[target] else (tgt, target)
    assert set(smaller.tolist()) == set(torch.nonzero(labels == smaller_class).flatten().tolist())


def test_class_pairs_is_deterministic_per_seed(mnist_test: Dataset) -> None:
    labels = mnist_test.labels
    a = class_pairs(labels, 3, 8, seed=0)
    b = class_pairs(labels, 3, 8, seed=0)
    c = class_pairs(labels, 3, 8, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])
    # Class 8 (974) is the smaller one: every seed uses all of it, in another order.
    assert sorted(a[1].tolist()) == sorted(c[1].tolist())
    # Class 3 (1010) is sampled: another seed picks another subset.
    assert set(a[0].tolist()) != set(c[0].tolist())


def test_class_pairs_cells_are_independent(mnist_test: Dataset) -> None:
    labels = mnist_test.labels
    forward = class_pairs(labels, 3, 8, seed=0)
    backward = class_pairs(labels, 8, 3, seed=0)
    assert not torch.equal(forward[1], backward[0])  # (3, 8) and (8, 3) draw differently


def tiny_imagefolder(root: Path) -> Path:
    """``root`` with a two-class ``imagefolder/`` (two grey 28×28 PNGs per class and split)."""
    from PIL import Image

    for split in ("train", "test"):
        for label, name in enumerate(("even", "odd")):
            for i in range(2):
                folder = root / "imagefolder" / split / name
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((28, 28), 60 * label + 30 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    return root


# datasets whose files the user brings (nothing under the shared data root): a tiny example here
USER_DATA = {"imagefolder": tiny_imagefolder}


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_registered_dataset_loads_in_the_common_format(name: str, tmp_path: Path) -> None:
    """Any dataset module added to robust_vae/data/ is checked here without editing a list
    (unless the user brings its files: then USER_DATA builds a tiny example)."""
    source = dataset_source(name)
    root = USER_DATA[name](tmp_path) if name in USER_DATA else None
    if root is None and source.needs_files:
        assert source.files_status().startswith("found in"), f"{name}: {source.files_status()}"
    test = load_dataset(name, "test", data_dir=root)
    n, c, h, w = test.images.shape
    assert test.images.dtype == torch.float32 and float(test.images.min()) >= 0.0 and float(test.images.max()) <= 1.0
    assert test.labels.shape == (n,) and test.labels.dtype == torch.int64
    assert int(test.labels.min()) >= 0 and int(test.labels.max()) < test.num_classes
    assert test.image_shape == (c, h, w) and len(test) == n
    assert load_dataset(name, "test", data_dir=root) is test  # cached per process
    # what the listing says matches what loads (where it is known without the files)
    if source.image_shape is not None:
        assert test.image_shape == source.image_shape
    if source.num_classes is not None:
        assert test.num_classes == source.num_classes
    if test.factors is not None:
        assert test.factors.shape == (n, len(source.factor_names))
        assert (test.factor_names, test.factor_sizes) == (source.factor_names, source.factor_sizes)
        assert bool((test.factors < torch.tensor(test.factor_sizes)).all()) and int(test.factors.min()) >= 0
    info = source.info(root)
    assert set(info) >= {"name", "description", "split_sizes", "image_shape", "num_classes", "factor_names",
                         "factor_sizes", "files"} and info["description"]


# ----------------------------------------------------------------- Dataset and DatasetSource
def test_dataset_without_factors_keeps_the_old_construction(mnist_test: Dataset) -> None:
    head = Dataset(mnist_test.name, mnist_test.split, mnist_test.images[:10], mnist_test.labels[:10])
    assert head.factors is None and head.factor_names == () and head.factor_sizes == () and not head.has_factors
    assert head.num_classes == 10 and head.class_names == ()
    assert mnist_test.class_names == tuple("0123456789") and mnist_test.factors is None


def test_dataset_checks_its_factors() -> None:
    images, labels = torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.int64)
    factors = torch.zeros(4, 2, dtype=torch.int64)
    data = Dataset("dsprites", "test", images, labels, factors, ("a", "b"), (3, 4))
    assert data.has_factors and data.factor_sizes == (3, 4)
    with pytest.raises(ValueError, match=r"factors must be \(4, 2\) int64"):
        Dataset("dsprites", "test", images, labels, factors.float(), ("a", "b"), (3, 4))
    with pytest.raises(ValueError, match="2 factor names for 1 factor sizes"):
        Dataset("dsprites", "test", images, labels, factors, ("a", "b"), (3,))
    with pytest.raises(ValueError, match="factor_names given without factors"):
        Dataset("dsprites", "test", images, labels, None, ("a", "b"), (3, 4))


def test_fashion_mnist_class_names_are_torchvisions() -> None:
    from torchvision.datasets import FashionMNIST

    assert dataset_source("fashion-mnist").class_names == tuple(FashionMNIST.classes)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_listing_without_files(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = dataset_source(name)
    assert source.files_status(tmp_path) == f"files not found in {tmp_path / name}"
    info = source.info(tmp_path)
    assert info["split_sizes"] == {"train": 60_000, "test": 10_000} and info["image_shape"] == [1, 32, 32]
    assert info["num_classes"] == 10 and info["factor_names"] == []
    monkeypatch.delenv(DATA_ENV)
    assert source.files_status() in ("files not found (downloaded on first use)",
                                     f"found in {default_cache_dir() / 'data' / source.torchvision_class / 'raw'}")


def test_rendering_factors_of_a_dataset_without_them() -> None:
    with pytest.raises(DataError, match="mnist has no ground-truth factors"):
        dataset_source("mnist").render_factors(torch.zeros(1, 5, dtype=torch.int64))
