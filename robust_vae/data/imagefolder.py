"""A user's own images: class sub-folders, or torchvision's CIFAR-10 python folder.

Like every dataset, it lives in one folder under the data root, ``<root>/imagefolder/``,
which holds one of two layouts:

* **class folders**: ``train/<class>/*.png|jpg|jpeg`` and ``test/<class>/*.png|jpg|jpeg``.
  Classes are the sub-folder names, sorted (``sorted()``, so ``"10" < "2"``: pad numbers);
  train and test must have the same classes. Hidden entries (``.name``) and files with other
  extensions are ignored; files are read in sorted name order.
* **CIFAR-10**: ``cifar-10-batches-py/`` with ``data_batch_1`` ... ``data_batch_5``,
  ``test_batch`` and ``batches.meta``, as ``torchvision.datasets.CIFAR10(root=<root>/imagefolder,
  download=True)`` leaves it. These files are Python pickles because that is their published
  format; they are read with an unpickler that only builds numpy arrays, lists, dicts and
  strings and refuses every other global, so a tampered file cannot run code.

Images are resized so the shorter side is ``image_size`` (default 32; bilinear with
antialiasing) and centre-cropped to ``image_size`` × ``image_size``, as torchvision's
``Resize(image_size)`` + ``CenterCrop(image_size)`` do on tensors: mixed sizes are fine.
``channels`` is 1 (grey, PIL's "L" luminance) or 3 (RGB); by default it is 1 when every image
of both splits is grey, else 3. Mixed grey and colour images are converted to that count
with a :class:`DataWarning`; alpha channels are dropped. Values are float32 in [0, 1].

``load_dataset("imagefolder", "train", data_dir=ROOT, image_size=32, channels=3)``.
"""

from __future__ import annotations

import io
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from robust_vae.core.errors import DataError
from robust_vae.data.base import (
    DATA_ENV,
    Dataset,
    DatasetSource,
    DataWarning,
    OptionValue,
    PathArg,
    dataset_folder,
    register_dataset,
)

NAME = "imagefolder"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR_META = "batches.meta"
DEFAULT_IMAGE_SIZE = 32
GREY_BANDS = {"L", "1", "I", "F"}
LAYOUT_HELP = ("put train/<class>/*.png|jpg and test/<class>/*.png|jpg there, or torchvision's "
               f"{CIFAR_FOLDER}/ folder")


# ----------------------------------------------------------------- layout
def find_layout(folder: Path) -> str | None:
    """"folders" (train/ or test/ present), "cifar" (cifar-10-batches-py/), or None; both is an error."""
    folders = (folder / "train").is_dir() or (folder / "test").is_dir()
    cifar = (folder / CIFAR_FOLDER).is_dir()
    if folders and cifar:
        raise DataError(f"{folder} holds both train/test class folders and {CIFAR_FOLDER}/: keep only one "
                        "(or use two data roots)")
    return "folders" if folders else "cifar" if cifar else None


def class_folders(split_dir: Path) -> list[Path]:
    """The non-hidden sub-folders of ``split_dir``, sorted by name; one-line errors when there are none."""
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} not found: imagefolder needs both train/<class>/ and test/<class>/ "
                        f"under {split_dir.parent}")
    classes = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = any(p.suffix.lower() in IMAGE_EXTENSIONS for p in split_dir.iterdir())
        hint = " (it holds images directly)" if loose else ""
        raise DataError(f"{split_dir} has no class sub-folders{hint}: put each class's images in "
                        f"{split_dir}/<class>/")
    return classes


def image_files(class_dir: Path) -> list[Path]:
    """The class's image files, sorted by name; an empty class folder is a one-line error."""
    files = sorted(p for p in class_dir.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{class_dir}: class folder holds no {'/'.join(IMAGE_EXTENSIONS)} images: add images "
                        "or remove the folder")
    return files


def split_classes(folder: Path) -> list[str]:
    """The class names, checked to be the same in train/ and test/."""
    train = [p.name for p in class_folders(folder / "train")]
    test = [p.name for p in class_folders(folder / "test")]
    if train != test:
        only_train = ", ".join(sorted(set(train) - set(test))) or "none"
        only_test = ", ".join(sorted(set(test) - set(train))) or "none"
        raise DataError(f"{folder}: train/ and test/ have different classes (only in train: {only_train}; "
                        f"only in test: {only_test}): use the same class folders in both")
    return train


# ----------------------------------------------------------------- decoding and resizing
def open_image(path: Path) -> Image.Image:
    """The image at ``path`` with its pixels loaded, or a one-line error naming the file."""
    try:
        image = Image.open(io.BytesIO(path.read_bytes()))  # from memory: no file handle left open
        image.load()
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, struct.error...) for bad files
        raise DataError(f"{path}: cannot be decoded as an image ({type(error).__name__}: {error}): "
                        "replace or remove the file") from None
    return image


def is_grey(image: Image.Image) -> bool:
    """Whether an image is grey-level (its mode has no colour bands and no palette)."""
    return image.mode != "P" and image.getbands()[0] in GREY_BANDS


def image_array(image: Image.Image, channels: int) -> np.ndarray:
    """(H, W, channels) uint8 of a decoded image (16-bit grey scaled down, alpha dropped)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L") and channels == 1:
        grey = np.asarray(image, dtype=np.float64) / 257.0  # 16-bit range onto 8 bits
        return np.clip(np.rint(grey), 0, 255).astype(np.uint8)[:, :, None]
    converted = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return converted[:, :, None] if channels == 1 else converted


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...) uint8 with PIL's "L" formula (ITU-R 601-2 luma, fixed point)."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def resize_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """(n, C, H, W) float -> (n, C, size, size): torchvision's ``Resize(size)`` (shorter side to
    ``size``, the longer one truncated; bilinear, antialias) then ``CenterCrop(size)``."""
    h, w = images.shape[-2:]
    if (h, w) != (size, size):
        new = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
        images = F.interpolate(images, size=new, mode="bilinear", align_corners=False, antialias=True)
        top, left = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
        images = images[..., top:top + size, left:left + size]
    return images.clamp(0.0, 1.0).contiguous()


def to_tensor(arrays: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """(H_i, W_i, C) uint8 arrays of any sizes -> (n, C, size, size) float32 in [0, 1]; same sizes batched."""
    channels = arrays[0].shape[2]
    out = torch.empty(len(arrays), channels, size, size, dtype=torch.float32)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, array in enumerate(arrays):
        by_shape.setdefault(array.shape, []).append(i)
    for indices in by_shape.values():
        batch = torch.from_numpy(np.stack([arrays[i] for i in indices])).permute(0, 3, 1, 2)
        out[indices] = resize_crop(batch.to(torch.float32) / 255.0, size)
    return out


# ----------------------------------------------------------------- CIFAR-10 pickles
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only (what a CIFAR-10 batch holds)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to unpickle {module}.{name}")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR-10 python batch as a dict with str keys, or a one-line error naming the file."""
    try:
        with path.open("rb") as handle:
            content = _ArrayUnpickler(handle, encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({error}): re-download it") from None
    except Exception as error:  # truncated or foreign files fail inside pickle in many ways
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(error).__name__}: {error}): "
                        "re-download it") from None
    if not isinstance(content, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (a {type(content).__name__}, not a dict): re-download it")
    return {key.decode("latin1") if isinstance(key, bytes) else str(key): value for key, value in content.items()}


def cifar_class_names(cifar_dir: Path) -> list[str]:
    """``label_names`` of ``batches.meta``, after checking that every CIFAR-10 file is there."""
    expected = [*CIFAR_BATCHES["train"], *CIFAR_BATCHES["test"], CIFAR_META]
    missing = [name for name in expected if not (cifar_dir / name).is_file()]
    if missing:
        raise DataError(f"{cifar_dir}: missing {', '.join(missing)}: the folder must hold torchvision's CIFAR-10 "
                        "python files (data_batch_1..5, test_batch, batches.meta)")
    names = read_pickle(cifar_dir / CIFAR_META).get("label_names")
    if not isinstance(names, list) or not names:
        raise DataError(f"{cifar_dir / CIFAR_META}: no label_names list: re-download it")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def read_cifar_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch: images (n, 32, 32, 3) uint8 and labels (n,) int64, checked."""
    batch = read_pickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' is not an (n, 3072) uint8 array: re-download it")
    if not isinstance(labels, list) or len(labels) != data.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} images but 'labels' is not a list of {data.shape[0]}: re-download it")
    label_array = np.asarray(labels, dtype=np.int64)
    if label_array.size and (label_array.min() < 0 or label_array.max() >= num_classes):
        raise DataError(f"{path}: label {int(label_array.max())} out of range 0-{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), label_array


# ----------------------------------------------------------------- the dataset
@register_dataset
class ImageFolder(DatasetSource):
    """A user's class folders or CIFAR-10 python files under ``<root>/imagefolder/`` (module docstring)."""

    name = NAME
    num_classes: ClassVar[int | None] = None  # from the folders
    description = ("your images: <root>/imagefolder/{train,test}/<class>/*.png|jpg, or torchvision's "
                   f"{CIFAR_FOLDER}/; resized to 32×32 (option image_size), 1 or 3 channels (option channels)")
    options: ClassVar[dict[str, OptionValue]] = {"image_size": DEFAULT_IMAGE_SIZE, "channels": None}

    def folder(self, data_dir: PathArg | None) -> tuple[Path, str]:
        """``<root>/imagefolder`` and its layout, or a one-line error saying what to put where."""
        folder, origin = dataset_folder(NAME, data_dir)
        fix = f"pass --data-dir ROOT (or set {DATA_ENV}=ROOT) where ROOT/{NAME}/ holds them"
        if folder is None:
            raise DataError(f"{NAME} needs your files (nothing to download): {LAYOUT_HELP}; {fix}")
        layout = find_layout(folder) if folder.is_dir() else None
        if layout is None:
            where = "" if origin == "--data-dir" else f" (from {origin})"
            raise DataError(f"{NAME} files not found in {folder}{where}: {LAYOUT_HELP}; {fix}")
        return folder, layout

    def has_files(self, folder: Path) -> bool:
        try:
            return folder.is_dir() and find_layout(folder) is not None
        except DataError:
            return True  # present, if ambiguous: load() says what to fix

    def info(self, data_dir: PathArg | None = None) -> dict[str, Any]:
        """The listing, with classes and split sizes counted from class folders when present (nothing decoded)."""
        row = super().info(data_dir)
        try:
            folder, layout = self.folder(data_dir)
            if layout == "folders":
                classes = split_classes(folder)
                row["num_classes"], row["class_names"] = len(classes), classes
                row["split_sizes"] = {split: sum(len(image_files(folder / split / c)) for c in classes)
                                      for split in ("train", "test")}
            else:
                row["class_names"] = cifar_class_names(folder / CIFAR_FOLDER)
                row["num_classes"] = len(row["class_names"])
        except DataError as error:
            if "not found" not in row["files"]:
                row["files"] = f"unusable: {error}"
        return row

    def load(self, split: str, data_dir: PathArg | None = None, **options: OptionValue) -> Dataset:
        """The split, resized to ``image_size`` with ``channels`` channels (None: grey if all are grey)."""
        size = options.get("image_size") or DEFAULT_IMAGE_SIZE
        channels = options.get("channels")
        if size < 1 or channels not in (None, 1, 3):
            raise DataError(f"{NAME}: image_size must be >= 1 and channels 1 or 3, got {size} and {channels}")
        folder, layout = self.folder(data_dir)
        if layout == "cifar":
            return self._load_cifar(folder / CIFAR_FOLDER, split, size, channels or 3)
        return self._load_folders(folder, split, size, channels)

    def _load_folders(self, folder: Path, split: str, size: int, channels: int | None) -> Dataset:
        classes = split_classes(folder)
        paths = {split_name: [(label, path) for label, name in enumerate(classes)
                              for path in image_files(folder / split_name / name)]
                 for split_name in ("train", "test")}
        if channels is None:  # headers only: PIL's open does not decode the pixels
            channels = 1 if all(image_is_grey(path) for items in paths.values() for _, path in items) else 3
        images = [open_image(path) for _, path in paths[split]]
        grey = sum(is_grey(image) for image in images)
        if 0 < grey < len(images):
            warnings.warn(f"{NAME} {split}: {grey} grey and {len(images) - grey} colour images; all converted "
                          f"to {channels} channel{'s' if channels > 1 else ''}", DataWarning, stacklevel=4)  # at load_dataset's caller
        arrays = [image_array(image, channels) for image in images]
        labels = torch.tensor([label for label, _ in paths[split]], dtype=torch.int64)
        return Dataset(name=NAME, split=split, images=to_tensor(arrays, size), labels=labels,
                       class_names=tuple(classes))

    def _load_cifar(self, cifar_dir: Path, split: str, size: int, channels: int) -> Dataset:
        classes = cifar_class_names(cifar_dir)
        parts = [read_cifar_batch(cifar_dir / name, len(classes)) for name in CIFAR_BATCHES[split]]
        rgb = np.concatenate([images for images, _ in parts])
        labels = torch.from_numpy(np.concatenate([labels for _, labels in parts]))
        pixels = rgb_to_grey(rgb)[..., None] if channels == 1 else rgb  # (n, 32, 32, channels)
        images = resize_crop(torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))).float() / 255.0, size)
        return Dataset(name=NAME, split=split, images=images, labels=labels, class_names=tuple(classes))


def image_is_grey(path: Path) -> bool:
    """Whether the file's header declares a grey-level image (pixels are not decoded)."""
    try:
        with Image.open(path) as image:
            return is_grey(image)
    except Exception as error:  # as in open_image
        raise DataError(f"{path}: cannot be decoded as an image ({type(error).__name__}: {error}): "
                        "replace or remove the file") from None
