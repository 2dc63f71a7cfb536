"""The ``imagefolder`` dataset on small folders built here: class folders, a fake CIFAR-10
python folder, resizing, channels, and a one-line error for every kind of bad input."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from robust_vae.core.errors import DataError
from robust_vae.data import DataWarning, dataset_source, load_dataset
from robust_vae.data.imagefolder import CIFAR_FOLDER, rgb_to_grey

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ----------------------------------------------------------------- builders
def pixels(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def write_image(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path)
    return path


def class_root(tmp_path: Path, classes: dict[str, int], mode: str = "L", size: tuple[int, int] = (32, 32),
               test_count: int = 1) -> Path:
    """A data root whose ``imagefolder/{train,test}/<class>/`` hold ``classes[c]`` (train) and
    ``test_count`` (test) random images of ``size`` (H, W) in PIL ``mode``."""
    root = tmp_path / "root"
    channels = {"L": (), "RGB": (3,)}[mode]
    for split, counts in (("train", classes), ("test", dict.fromkeys(classes, test_count))):
        for c, (name, count) in enumerate(counts.items()):
            for i in range(count):
                write_image(root / "imagefolder" / split / name / f"{i:03d}.png",
                            pixels(1000 * (split == "test") + 100 * c + i, (*size, *channels)))
    return root


def cifar_batch(n: int, seed: int, bytes_keys: bool = True) -> dict[Any, Any]:
    data = pixels(seed, (n, 3072))
    labels = [int(v) for v in np.random.default_rng(seed + 1).integers(0, 10, size=n)]
    batch = {"batch_label": "training batch", "data": data, "labels": labels,
             "filenames": [f"img_{i}.png" for i in range(n)]}
    return {k.encode(): v for k, v in batch.items()} if bytes_keys else batch


def cifar_root(tmp_path: Path, per_batch: int = 4) -> Path:
    """A data root with a tiny ``imagefolder/cifar-10-batches-py/`` (protocol-2 pickles, as
    close to the Python-2 originals as Python 3 writes them)."""
    folder = tmp_path / "root" / "imagefolder" / CIFAR_FOLDER
    folder.mkdir(parents=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(cifar_batch(per_batch, i), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(3, 9, bytes_keys=False), protocol=2))
    meta = {b"label_names": [name.encode() for name in CIFAR_CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return tmp_path / "root"


def error_of(root: Path | None, split: str = "train", **options: Any) -> str:
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", split, data_dir=root, **options)
    message = str(info.value)
    assert "\n" not in message, "user-facing errors are one line"
    return message


def expected(path: Path, mode: str, size: int = 32) -> torch.Tensor:
    """What torchvision makes of one file: PIL convert, to float, Resize(size), CenterCrop(size)."""
    array = np.array(Image.open(path).convert(mode), dtype=np.float32) / 255.0
    x = torch.from_numpy(array)
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
    return transforms.CenterCrop(size)(transforms.Resize(size, antialias=True)(x)).clamp(0, 1)


# ----------------------------------------------------------------- class folders
def test_class_folders_load_with_sorted_classes(tmp_path: Path) -> None:
    root = class_root(tmp_path, {"dog": 2, "cat": 3, "bird": 1}, test_count=2)
    train = load_dataset("imagefolder", "train", data_dir=root)
    test = load_dataset("imagefolder", "test", data_dir=root)
    assert train.class_names == test.class_names == ("bird", "cat", "dog") and train.num_classes == 3
    assert train.labels.tolist() == [0, 1, 1, 1, 2, 2] and test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert train.images.shape == (6, 1, 32, 32) and train.images.dtype == torch.float32  # all grey: 1 channel
    first = root / "imagefolder" / "train" / "bird" / "000.png"
    torch.testing.assert_close(train.images[0], torch.from_numpy(np.array(Image.open(first))).float()[None] / 255)
    assert train.factors is None
    assert load_dataset("imagefolder", "train", data_dir=root) is train


def test_mixed_sizes_are_resized_like_torchvision(tmp_path: Path) -> None:
    root = class_root(tmp_path, {"a": 1, "b": 1})
    big = write_image(root / "imagefolder" / "train" / "a" / "big.png", pixels(1, (48, 64, 3)))
    tall = write_image(root / "imagefolder" / "train" / "b" / "tall.jpg", pixels(2, (50, 20, 3)))
    with pytest.warns(DataWarning, match="2 grey and 2 colour images; all converted to 3 channels"):
        data = load_dataset("imagefolder", "train", data_dir=root)
    assert data.images.shape == (4, 3, 32, 32)
    names = [p.name for c in ("a", "b") for p in sorted((root / "imagefolder" / "train" / c).iterdir())]
    assert names == ["000.png", "big.png", "000.png", "tall.jpg"]
    torch.testing.assert_close(data.images[1], expected(big, "RGB"), rtol=0, atol=1e-5)
    torch.testing.assert_close(data.images[3], expected(tall, "RGB"), rtol=0, atol=1e-5)
    with pytest.warns(DataWarning, match="all converted to 1 channel$"):
        small = load_dataset("imagefolder", "train", data_dir=root, image_size=16, channels=1)
    assert small.images.shape == (4, 1, 16, 16)
    torch.testing.assert_close(small.images[1], expected(big, "L", 16), rtol=0, atol=1e-5)


def test_colour_images_load_with_three_channels(tmp_path: Path) -> None:
    root = class_root(tmp_path, {"x": 2, "y": 2}, mode="RGB")
    data = load_dataset("imagefolder", "test", data_dir=root)
    assert data.images.shape == (2, 3, 32, 32)
    grey = load_dataset("imagefolder", "test", data_dir=root, channels=1)
    path = root / "imagefolder" / "test" / "x" / "000.png"
    torch.testing.assert_close(grey.images[0], expected(path, "L"), rtol=0, atol=0)


def test_sixteen_bit_grey_and_alpha(tmp_path: Path) -> None:
    root = class_root(tmp_path, {"p": 1, "q": 1})
    deep = (pixels(3, (32, 32)).astype(np.uint16) * 257)
    path = root / "imagefolder" / "train" / "p" / "deep.png"
    Image.fromarray(deep).save(path)
    rgba = write_image(root / "imagefolder" / "train" / "q" / "alpha.png", pixels(4, (32, 32, 4)))
    with pytest.warns(DataWarning, match="3 grey and 1 colour images"):
        data = load_dataset("imagefolder", "train", data_dir=root, channels=1)
    torch.testing.assert_close(data.images[1, 0], torch.from_numpy(pixels(3, (32, 32))).float() / 255)
    torch.testing.assert_close(data.images[3], expected(rgba, "L"), rtol=0, atol=0)


def test_grey_conversion_is_pils() -> None:
    rgb = pixels(7, (64, 64, 3))
    assert np.array_equal(rgb_to_grey(rgb), np.asarray(Image.fromarray(rgb).convert("L")))


def test_hidden_entries_and_other_files_are_ignored(tmp_path: Path) -> None:
    root = class_root(tmp_path, {"a": 1, "b": 1})
    (root / "imagefolder" / "train" / ".ipynb_checkpoints").mkdir()
    (root / "imagefolder" / "train" / "a" / "notes.txt").write_text("not an image")
    (root / "imagefolder" / "train" / "a" / ".hidden.png").write_bytes(b"junk")
    assert len(load_dataset("imagefolder", "train", data_dir=root)) == 2


def test_info_counts_files_without_decoding(tmp_path: Path) -> None:
    root = class_root(tmp_path, {"a": 3, "b": 2}, test_count=1)
    (root / "imagefolder" / "train" / "a" / "broken.png").write_bytes(b"not decoded by info")
    info = dataset_source("imagefolder").info(root)
    assert info["num_classes"] == 2 and info["split_sizes"] == {"train": 6, "test": 2}
    assert info["class_names"] == ["a", "b"]
    assert info["files"] == f"found in {root / 'imagefolder'}"
    missing = dataset_source("imagefolder").info(tmp_path / "elsewhere")
    assert missing["files"].startswith("files not found in") and missing["num_classes"] is None


# ----------------------------------------------------------------- CIFAR-10
def test_cifar_folder_loads(tmp_path: Path) -> None:
    root = cifar_root(tmp_path)
    train = load_dataset("imagefolder", "train", data_dir=root)
    test = load_dataset("imagefolder", "test", data_dir=root)
    assert train.class_names == tuple(CIFAR_CLASSES) and train.num_classes == 10
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (3, 3, 32, 32)
    first = cifar_batch(4, 1)
    assert train.labels[:4].tolist() == first[b"labels"]
    raw = first[b"data"][0].reshape(3, 32, 32)  # 1024 red, 1024 green, 1024 blue values, row-major
    torch.testing.assert_close(train.images[0], torch.from_numpy(raw).float() / 255)
    assert test.labels.tolist() == cifar_batch(3, 9)[b"labels"]
    grey = load_dataset("imagefolder", "test", data_dir=root, channels=1, image_size=16)
    assert grey.images.shape == (3, 1, 16, 16)
    info = dataset_source("imagefolder").info(root)
    assert info["num_classes"] == 10 and info["files"].startswith("found in")
    assert info["class_names"] == CIFAR_CLASSES


def test_cifar_missing_file(tmp_path: Path) -> None:
    root = cifar_root(tmp_path)
    (root / "imagefolder" / CIFAR_FOLDER / "data_batch_3").unlink()
    message = error_of(root, "test")
    assert "missing data_batch_3" in message and CIFAR_FOLDER in message


def test_cifar_truncated_batch(tmp_path: Path) -> None:
    root = cifar_root(tmp_path)
    path = root / "imagefolder" / CIFAR_FOLDER / "test_batch"
    path.write_bytes(path.read_bytes()[:500])
    message = error_of(root, "test")
    assert str(path) in message and "not a CIFAR-10 python batch" in message and "re-download" in message


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    root = cifar_root(tmp_path)
    marker = tmp_path / "pwned"
    batch = cifar_batch(3, 9)
    batch[b"labels"] = _Payload(marker)
    path = root / "imagefolder" / CIFAR_FOLDER / "test_batch"
    path.write_bytes(pickle.dumps(batch, protocol=2))
    message = error_of(root, "test")
    assert "refused to unpickle" in message and "open" in message and str(path) in message
    assert not marker.exists()


def test_cifar_wrong_content(tmp_path: Path) -> None:
    root = cifar_root(tmp_path)
    path = root / "imagefolder" / CIFAR_FOLDER / "test_batch"
    batch = cifar_batch(3, 9)
    batch[b"data"] = batch[b"data"][:, :100]
    path.write_bytes(pickle.dumps(batch, protocol=2))
    assert "(n, 3072) uint8" in error_of(root, "test")
    batch = cifar_batch(3, 9)
    batch[b"labels"] = [0, 1, 10]
    path.write_bytes(pickle.dumps(batch, protocol=2))
    assert "label 10 out of range 0-9" in error_of(root, "test")


# ----------------------------------------------------------------- bad input
def test_missing_folder(tmp_path: Path) -> None:
    message = error_of(tmp_path)
    assert f"files not found in {tmp_path / 'imagefolder'}" in message
    assert "train/<class>/" in message and CIFAR_FOLDER in message and "--data-dir" in message


def test_split_folder_missing(tmp_path: Path) -> None:
    root = class_root(tmp_path, {"a": 1})
    for path in sorted((root / "imagefolder" / "test").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "imagefolder" / "test").rmdir()
    message = error_of(root, "train")
    assert f"{root / 'imagefolder' / 'test'} not found" in message and "test/<class>/" in message


def test_images_without_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for split in ("train", "test"):
        write_image(root / "imagefolder" / split / "0.png", pixels(0, (8, 8)))
    message = error_of(root)
    assert "has no class sub-folders (it holds images directly)" in message and "<class>/" in message


def test_empty_class_folder(tmp_path: Path) -> None:
    root = class_root(tmp_path, {"a": 1, "b": 1})
    (root / "imagefolder" / "train" / "c").mkdir()
    (root / "imagefolder" / "test" / "c").mkdir()
    message = error_of(root)
    assert str(root / "imagefolder" / "train" / "c") in message and "holds no .png/.jpg/.jpeg images" in message


def test_classes_differ_between_splits(tmp_path: Path) -> None:
    root = class_root(tmp_path, {"a": 1, "b": 1})
    (root / "imagefolder" / "test" / "b").rename(root / "imagefolder" / "test" / "z")
    message = error_of(root)
    assert "only in train: b; only in test: z" in message


def test_undecodable_image(tmp_path: Path) -> None:
    root = class_root(tmp_path, {"a": 2})
    bad = root / "imagefolder" / "train" / "a" / "001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    message = error_of(root)
    assert f"{bad}: cannot be decoded as an image" in message and "replace or remove" in message


def test_truncated_image(tmp_path: Path) -> None:
    root = class_root(tmp_path, {"a": 2}, mode="RGB", size=(64, 64))
    bad = root / "imagefolder" / "train" / "a" / "000.png"
    bad.write_bytes(bad.read_bytes()[:-200])
    assert f"{bad}: cannot be decoded" in error_of(root, channels=3)


def test_both_layouts(tmp_path: Path) -> None:
    root = class_root(tmp_path, {"a": 1})
    (root / "imagefolder" / CIFAR_FOLDER).mkdir()
    assert "holds both train/test class folders and cifar-10-batches-py/" in error_of(root)


@pytest.mark.parametrize("options, text", [({"channels": 2}, "channels 1 or 3"), ({"image_size": -1}, "image_size")])
def test_bad_options(tmp_path: Path, options: dict[str, int], text: str) -> None:
    assert text in error_of(class_root(tmp_path, {"a": 1}), **options)


def test_unknown_dataset_names_the_choices() -> None:
    with pytest.raises(DataError, match="unknown dataset 'image-folder': supported datasets are .*imagefolder"):
        load_dataset("image-folder", "train")
