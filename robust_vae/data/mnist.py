"""Datasets: real MNIST from the standard IDX files, resized to 32×32 (protocol §1).

A *data root* holds one folder per dataset (``<root>/mnist/train-images-idx3-ubyte.gz``...).
The root is found in this order: an explicit ``data_dir`` (the CLI's ``--data-dir``), the
``ROBUST_VAE_DATA`` environment variable, then torchvision's download into a cache folder.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robust_vae.core.errors import DataError
from robust_vae.core.paths import default_cache_dir

DATA_ENV = "ROBUST_VAE_DATA"
IMAGE_SIZE = 32

# split -> (images file stem, labels file stem, expected count)
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
SUPPORTED_DATASETS = ("mnist", "fashion-mnist")
NUM_CLASSES = {"mnist": 10, "fashion-mnist": 10}


@dataclass(frozen=True)
class Dataset:
    """A labelled image split.

    images: (N, 1, 32, 32) float32 in [0, 1]; labels: (N,) int64.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.name]


def _check_dataset(name: str) -> str:
    key = name.lower()
    if key not in SUPPORTED_DATASETS:
        raise DataError(
            f"unknown dataset {name!r}: supported datasets are {', '.join(SUPPORTED_DATASETS)}"
        )
    return key


def _find_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _has_all_files(folder: Path) -> bool:
    return all(
        _find_file(folder, stem) is not None
        for images, labels, _ in _MNIST_FILES.values()
        for stem in (images, labels)
    )


def _download_with_torchvision(cache: Path, name: str = "mnist") -> Path:
    """Fetch the dataset with torchvision into ``cache``; return the folder with the IDX files."""
    from torchvision.datasets import MNIST, FashionMNIST  # lazily: only the download path needs it

    source = {"mnist": MNIST, "fashion-mnist": FashionMNIST}[name]
    raw = cache / source.__name__ / "raw"
    if _has_all_files(raw):
        return raw
    source(str(cache), train=True, download=True)
    source(str(cache), train=False, download=True)
    return raw


def resolve_dataset_dir(name: str = "mnist", data_dir: str | os.PathLike | None = None) -> Path:
    """Return the folder holding the dataset's files, trying ``data_dir``, the env var, download."""
    key = _check_dataset(name)
    fix = (
        f"pass --data-dir ROOT (or set {DATA_ENV}=ROOT) where ROOT/{key}/ holds "
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
        "and t10k-labels-idx1-ubyte.gz"
    )
    if data_dir is not None:
        folder = Path(data_dir).expanduser() / key
        if not _has_all_files(folder):
            raise DataError(f"{key} files not found in {folder}: {fix}")
        return folder
    env_root = os.environ.get(DATA_ENV)
    if env_root:
        folder = Path(env_root).expanduser() / key
        if not _has_all_files(folder):
            raise DataError(f"{key} files not found in {folder} (from ${DATA_ENV}): {fix}")
        return folder
    cache = default_cache_dir() / "data"
    try:
        return _download_with_torchvision(cache, key)
    except Exception as error:  # network errors come in many types; all mean the same here
        raise DataError(
            f"{key} is not available locally and the download failed ({type(error).__name__}): {fix}"
        ) from None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(f"{path}: cannot be read ({error}); the file is truncated or not gzip") from None


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read one IDX file (uint8 data) and check its magic number and size."""
    data = _read_bytes(path)
    if len(data) < 8:
        raise DataError(f"{path}: truncated: {len(data)} bytes, too short for an IDX header")
    (magic,) = struct.unpack(">i", data[:4])
    if magic != expected_magic:
        raise DataError(
            f"{path}: wrong magic number 0x{magic:08x} (expected 0x{expected_magic:08x}); "
            "this is not the right IDX file"
        )
    ndim = expected_magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated: {len(data)} bytes, header needs {header}")
    dims = struct.unpack(">" + "i" * ndim, data[4:header])
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{path}: {problem}: {len(data)} bytes, header {tuple(dims)} needs {expected}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def resize_images(images_uint8: np.ndarray, size: int = IMAGE_SIZE) -> torch.Tensor:
    """(N, 28, 28) uint8 -> (N, 1, size, size) float32 in [0, 1], bilinear like torchvision Resize."""
    x = torch.from_numpy(images_uint8.astype(np.float32) / 255.0).unsqueeze(1)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp_(0.0, 1.0).contiguous()


_CACHE: dict[tuple[str, str, str], Dataset] = {}


def load_dataset(
    name: str = "mnist", split: str = "test", data_dir: str | os.PathLike | None = None
) -> Dataset:
    """Load a split: images (N, 1, 32, 32) float32 in [0, 1], labels (N,) int64."""
    key = _check_dataset(name)
    if split not in _MNIST_FILES:
        raise DataError(f"unknown split {split!r}: use 'train' or 'test'")
    folder = resolve_dataset_dir(key, data_dir)
    cache_key = (key, split, str(folder.resolve()))
    if cache_key in _CACHE:
        return _CACHE[cache_key]
    images_stem, labels_stem, expected_count = _MNIST_FILES[split]
    images_path = _find_file(folder, images_stem)
    labels_path = _find_file(folder, labels_stem)
    assert images_path is not None and labels_path is not None  # checked by resolve_dataset_dir
    images = read_idx(images_path, _IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, _IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has "
            f"{labels.shape[0]} labels: the files do not belong together"
        )
    if images.shape[0] != expected_count:
        raise DataError(
            f"{images_path}: {images.shape[0]} images, the standard {split} split has "
            f"{expected_count}: replace it with the standard file"
        )
    if labels.max() >= NUM_CLASSES[key]:
        raise DataError(f"{labels_path}: label {int(labels.max())} out of range 0-9")
    dataset = Dataset(
        name=key,
        split=split,
        images=resize_images(images),
        labels=torch.from_numpy(labels.astype(np.int64)),
    )
    _CACHE[cache_key] = dataset
    return dataset


def class_pairs(
    labels: torch.Tensor, source: int, target: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the protocol's (source, target) pairs for one ordered class pair (§4 step 1).

    Shuffles the indices of class ``source`` and of class ``target`` with a generator seeded
    by (seed, source, target) and pairs them one to one; returns two (min(n_s, n_t),) int64
    tensors. The seed mixing makes every cell's sample independent of which cells run.
    """
    generator = torch.Generator().manual_seed(seed * 10_007 + source * 101 + target)
    source_idx = torch.nonzero(labels == source).flatten()
    target_idx = torch.nonzero(labels == target).flatten()
    source_idx = source_idx[torch.randperm(len(source_idx), generator=generator)]
    target_idx = target_idx[torch.randperm(len(target_idx), generator=generator)]
    n = min(len(source_idx), len(target_idx))
    return source_idx[:n], target_idx[:n]
