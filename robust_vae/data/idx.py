"""Datasets stored as the four standard IDX files (MNIST's format), resized to 32×32.

``<root>/<name>/`` holds ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``. Images are resized
bilinearly (like torchvision ``Resize(32)``) to one channel, values in [0, 1] (protocol §1).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from robust_vae.core.errors import DataError
from robust_vae.core.paths import default_cache_dir
from robust_vae.data.base import DATA_ENV, Dataset, DatasetSource, OptionValue, PathArg, dataset_folder

IMAGE_SIZE = 32

# split -> (images file stem, labels file stem, expected count)
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension


def find_file(folder: Path, stem: str) -> Path | None:
    """``<stem>.gz`` or ``<stem>`` in ``folder``, whichever exists."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def has_all_files(folder: Path) -> bool:
    return all(
        find_file(folder, stem) is not None
        for images, labels, _ in IDX_FILES.values()
        for stem in (images, labels)
    )


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


class IDXDataset(DatasetSource):
    """A 10-class dataset in the four standard IDX files; subclasses name it and its download."""

    num_classes: ClassVar[int] = 10
    split_sizes: ClassVar[dict[str, int]] = {split: count for split, (_, _, count) in IDX_FILES.items()}
    image_shape: ClassVar[tuple[int, int, int]] = (1, IMAGE_SIZE, IMAGE_SIZE)
    class_names: ClassVar[tuple[str, ...]] = tuple(str(digit) for digit in range(10))
    torchvision_class: ClassVar[str] = "MNIST"  # the torchvision.datasets class that downloads it

    def has_files(self, folder: Path) -> bool:
        return has_all_files(folder)

    def files_status(self, data_dir: PathArg | None = None) -> str:
        folder, _ = dataset_folder(self.name, data_dir)
        if folder is None:
            raw = default_cache_dir() / "data" / self.torchvision_class / "raw"
            return f"found in {raw}" if has_all_files(raw) else "files not found (downloaded on first use)"
        return super().files_status(data_dir)

    def _download(self, cache: Path) -> Path:
        """Fetch the files with torchvision into ``cache``; return the folder holding them."""
        import torchvision.datasets  # type: ignore[import-untyped]  # lazily: only the download path needs it

        source: Any = getattr(torchvision.datasets, self.torchvision_class)
        raw = cache / self.torchvision_class / "raw"
        if has_all_files(raw):
            return raw
        source(str(cache), train=True, download=True)
        source(str(cache), train=False, download=True)
        return raw

    def folder(self, data_dir: PathArg | None = None) -> Path:
        """The folder holding the IDX files: ``data_dir``, else ``$ROBUST_VAE_DATA``, else a download."""
        key = self.name
        fix = (
            f"pass --data-dir ROOT (or set {DATA_ENV}=ROOT) where ROOT/{key}/ holds "
            "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
            "and t10k-labels-idx1-ubyte.gz"
        )
        folder, origin = dataset_folder(key, data_dir)
        if folder is not None:
            if not has_all_files(folder):
                where = "" if origin == "--data-dir" else f" (from {origin})"
                raise DataError(f"{key} files not found in {folder}{where}: {fix}")
            return folder
        try:
            return self._download(default_cache_dir() / "data")
        except Exception as error:  # network errors come in many types; all mean the same here
            raise DataError(
                f"{key} is not available locally and the download failed ({type(error).__name__}): {fix}"
            ) from None

    def load(self, split: str, data_dir: PathArg | None = None, **options: OptionValue) -> Dataset:
        folder = self.folder(data_dir)
        images_stem, labels_stem, expected_count = IDX_FILES[split]
        images_path = find_file(folder, images_stem)
        labels_path = find_file(folder, labels_stem)
        assert images_path is not None and labels_path is not None  # checked by folder()
        images = read_idx(images_path, IDX_IMAGES_MAGIC)
        labels = read_idx(labels_path, IDX_LABELS_MAGIC)
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
        if labels.max() >= self.num_classes:
            raise DataError(f"{labels_path}: label {int(labels.max())} out of range 0-{self.num_classes - 1}")
        return Dataset(name=self.name, split=split, images=resize_images(images),
                       labels=torch.from_numpy(labels.astype(np.int64)), class_names=self.class_names)
