"""The dataset interface, its registry and ``load_dataset``.

A *data root* holds one folder per dataset (``<root>/mnist/``, ``<root>/fashion-mnist/``...).
It is found in this order: an explicit ``data_dir`` (the CLI's ``--data-dir``), the
``ROBUST_VAE_DATA`` environment variable, then the dataset's own download into the cache.
Adding a dataset is one module with a :class:`DatasetSource` subclass carrying
``@register_dataset``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import torch

from robust_vae.core.errors import DataError
from robust_vae.core.registry import Registry

DATA_ENV = "ROBUST_VAE_DATA"
SPLITS = ("train", "test")
PathArg = str | os.PathLike[str]


@dataclass(frozen=True)
class Dataset:
    """A labelled image split.

    images: (N, C, H, W) float32 in [0, 1]; labels: (N,) int64 in [0, num_classes).
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """K, the number of classes of the dataset this split comes from."""
        return DATASETS.get(self.name).num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)


class DatasetSource:
    """One dataset: where its files are and how to turn them into a :class:`Dataset`."""

    name: ClassVar[str]
    num_classes: ClassVar[int]
    description: ClassVar[str] = ""

    def load(self, split: str, data_dir: PathArg | None = None) -> Dataset:  # pragma: no cover - abstract
        """The ``split`` ("train" or "test") read from the data root."""
        raise NotImplementedError


DATASETS: Registry[type[DatasetSource]] = Registry("dataset", "robust_vae.data", DataError)
S = TypeVar("S", bound=type[DatasetSource])


def register_dataset(cls: S) -> S:
    """Class decorator: register a :class:`DatasetSource` under ``cls.name``."""
    DATASETS.register(cls.name)(cls)
    return cls


def dataset_source(name: str) -> DatasetSource:
    """The registered dataset called ``name`` (case-insensitive), or a one-line error."""
    key = name.lower()
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: supported datasets are {', '.join(DATASETS.names())}")
    return DATASETS.get(key)()


def dataset_folder(name: str, data_dir: PathArg | None) -> tuple[Path | None, str]:
    """``<root>/<name>`` from ``data_dir`` or ``$ROBUST_VAE_DATA`` (None when neither is set),
    and where it came from (for error messages)."""
    if data_dir is not None:
        return Path(data_dir).expanduser() / name, "--data-dir"
    env_root = os.environ.get(DATA_ENV)
    if env_root:
        return Path(env_root).expanduser() / name, f"${DATA_ENV}"
    return None, ""


_CACHE: dict[tuple[str, str, str], Dataset] = {}


def load_dataset(name: str = "mnist", split: str = "test", data_dir: PathArg | None = None) -> Dataset:
    """Load a split of a registered dataset: images (N, C, H, W) float32 in [0, 1], labels (N,).

    Splits are cached per process (by dataset, split and data root), so repeated loads are free.
    """
    source = dataset_source(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use 'train' or 'test'")
    folder, _ = dataset_folder(source.name, data_dir)
    key = (source.name, split, str(folder.resolve()) if folder is not None else "")
    if key not in _CACHE:
        _CACHE[key] = source.load(split, data_dir)
    return _CACHE[key]
