"""The dataset interface, its registry and ``load_dataset``.

A *data root* holds one folder per dataset (``<root>/mnist/``, ``<root>/fashion-mnist/``...).
It is found in this order: an explicit ``data_dir`` (the CLI's ``--data-dir``), the
``ROBUST_VAE_DATA`` environment variable, then the dataset's own download into the cache.
Datasets rendered by code (``dsprites``) need no files. Adding a dataset is one module with a
:class:`DatasetSource` subclass carrying ``@register_dataset``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from robust_vae.core.errors import DataError
from robust_vae.core.registry import Registry
from robust_vae.report.classes import DEFAULT_NOUN, ClassLabels, register_lookup

DATA_ENV = "ROBUST_VAE_DATA"
SPLITS = ("train", "test")
PathArg = str | os.PathLike[str]
OptionValue = int | None


class DataWarning(UserWarning):
    """Loading changed the data in a way the user should know about (e.g. converted channels)."""


@dataclass(frozen=True)
class Dataset:
    """A labelled image split, optionally with ground-truth generative factors.

    images: (N, C, H, W) float32 in [0, 1]; labels: (N,) int64 in [0, num_classes).
    factors: (N, F) int64 factor *indices* (factor f in [0, factor_sizes[f])) or None;
    factor_names / factor_sizes: F names and numbers of values (empty without factors).
    class_names: the K class names when the split knows them (empty: the registry's count).
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    factors: torch.Tensor | None = None
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.factor_names) != len(self.factor_sizes):
            raise ValueError(f"{len(self.factor_names)} factor names for {len(self.factor_sizes)} factor sizes")
        if self.factors is None:
            if self.factor_names:
                raise ValueError("factor_names given without factors")
            return
        n = int(self.labels.shape[0])
        if self.factors.dtype != torch.int64 or tuple(self.factors.shape) != (n, len(self.factor_names)):
            raise ValueError(f"factors must be ({n}, {len(self.factor_names)}) int64, got "
                             f"{tuple(self.factors.shape)} {self.factors.dtype}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """K, the number of classes of the dataset this split comes from."""
        if self.class_names:
            return len(self.class_names)
        count = DATASETS.get(self.name).num_classes
        if count is None:
            raise DataError(f"{self.name} {self.split}: the number of classes comes from its files; "
                            "load it with load_dataset")
        return count

    @property
    def classes(self) -> ClassLabels:
        """The split's classes for reports: the dataset's noun, the K names (the split's, else the
        registry's) and K (:attr:`num_classes`)."""
        k = self.num_classes
        source = DATASETS.get(self.name) if self.name in DATASETS else None
        names = self.class_names or (source.class_names if source is not None else ())
        noun = source.class_noun if source is not None else DEFAULT_NOUN
        return ClassLabels(noun, tuple(names) if len(names) == k else (), k)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def has_factors(self) -> bool:
        return self.factors is not None


class DatasetSource:
    """One dataset: where its files are, what ``robust-vae datasets`` lists about it, and how
    to turn its files into a :class:`Dataset`.

    The class attributes describe the dataset with its default options and without reading
    any file; ``None`` means "depends on the files" (a user's image folder).
    """

    name: ClassVar[str]
    num_classes: ClassVar[int | None]
    class_names: ClassVar[tuple[str, ...]] = ()  # empty: unnamed, or named by the files
    class_noun: ClassVar[str] = DEFAULT_NOUN  # what one class is, in captions ("digit", "shape")
    description: ClassVar[str] = ""
    split_sizes: ClassVar[Mapping[str, int] | None] = None  # images per split of the full dataset
    image_shape: ClassVar[tuple[int, int, int] | None] = None  # (C, H, W) as loaded by default
    factor_names: ClassVar[tuple[str, ...]] = ()
    factor_sizes: ClassVar[tuple[int, ...]] = ()
    options: ClassVar[Mapping[str, OptionValue]] = {}  # keyword options of load() and their defaults
    needs_files: ClassVar[bool] = True

    def load(self, split: str, data_dir: PathArg | None = None, **options: OptionValue) -> Dataset:
        """The ``split`` ("train" or "test") read from the data root (``options``: see ``options``)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def files_status(self, data_dir: PathArg | None = None) -> str:
        """Where the files are, in a few words ("found in ...", "files not found in ..."); never raises."""
        if not self.needs_files:
            return "none needed (rendered)"
        folder, origin = dataset_folder(self.name, data_dir)
        if folder is None:
            return f"no data root (pass --data-dir or set {DATA_ENV})"
        return f"found in {folder}" if self.has_files(folder) else f"files not found in {folder}"

    def has_files(self, folder: Path) -> bool:
        """Whether ``folder`` (``<root>/<name>``) holds what :meth:`load` reads."""
        return folder.is_dir()

    def info(self, data_dir: PathArg | None = None) -> dict[str, Any]:
        """What ``robust-vae datasets`` lists, as JSON-ready values (no file is decoded)."""
        return {
            "name": self.name,
            "description": self.description,
            "split_sizes": dict(self.split_sizes) if self.split_sizes is not None else None,
            "image_shape": list(self.image_shape) if self.image_shape is not None else None,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "class_noun": self.class_noun,
            "factor_names": list(self.factor_names),
            "factor_sizes": list(self.factor_sizes),
            "options": dict(self.options),
            "files": self.files_status(data_dir),
        }

    def render_factors(self, factors: torch.Tensor, **options: OptionValue) -> torch.Tensor:
        """Images (n, C, H, W) of the factor indices ``factors`` (n, F), for datasets that can."""
        raise DataError(f"{self.name} has no ground-truth factors to render: use a dataset with factors (dsprites)")


DATASETS: Registry[type[DatasetSource]] = Registry("dataset", "robust_vae.data", DataError)
S = TypeVar("S", bound=type[DatasetSource])


def register_dataset(cls: S) -> S:
    """Class decorator: register a :class:`DatasetSource` under ``cls.name``."""
    DATASETS.register(cls.name)(cls)
    return cls


def _registry_classes(name: str) -> ClassLabels | None:
    """The classes of the registered dataset ``name`` (None when there is none): what reports of
    a run that did not record its classes fall back on (:func:`robust_vae.report.classes.for_dataset`)."""
    key = name.lower()
    if key not in DATASETS:
        return None
    source = DATASETS.get(key)
    names = tuple(source.class_names)
    k = source.num_classes
    return ClassLabels(source.class_noun, names if k is None or len(names) == k else (), k)


register_lookup(_registry_classes)


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


def resolve_options(source: DatasetSource, options: Mapping[str, OptionValue]) -> dict[str, OptionValue]:
    """``options`` over the source's defaults (None keeps the default); unknown names are a one-line error."""
    unknown = sorted(set(options) - set(source.options))
    if unknown:
        accepted = ", ".join(source.options) or "none"
        raise DataError(f"dataset {source.name} has no option {unknown[0]!r}: its options are {accepted}")
    return {key: default if options.get(key) is None else options[key] for key, default in source.options.items()}


_CACHE: dict[tuple[str, str, str, tuple[tuple[str, OptionValue], ...]], Dataset] = {}


def load_dataset(name: str = "mnist", split: str = "test", data_dir: PathArg | None = None,
                 **options: OptionValue) -> Dataset:
    """Load a split of a registered dataset: images (N, C, H, W) float32 in [0, 1], labels (N,).

    ``options`` are the dataset's own (``image_size=`` for dsprites and imagefolder, ...; see
    ``DatasetSource.options``). Splits are cached per process (by dataset, split, data root
    and options), so repeated loads are free.
    """
    source = dataset_source(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: use 'train' or 'test'")
    resolved = resolve_options(source, options)
    folder, _ = dataset_folder(source.name, data_dir)
    key = (source.name, split, str(folder.resolve()) if folder is not None else "", tuple(sorted(resolved.items())))
    if key not in _CACHE:
        _CACHE[key] = source.load(split, data_dir, **resolved)
    return _CACHE[key]
