"""Loading a split at the image shape a network takes, or refusing with one line.

A model or classifier records the (C, H, W) it was trained on; datasets that can be loaded
at several sizes or channel counts (``dsprites``, ``imagefolder``) are loaded at that shape,
the others (``mnist``, ``fashion-mnist``: 1×32×32) must already have it.
"""

from __future__ import annotations

from collections.abc import Mapping

from robust_vae.core.errors import DataError
from robust_vae.data.base import Dataset, OptionValue, PathArg, dataset_source, load_dataset


def shape_options(name: str, image_shape: tuple[int, int, int]) -> dict[str, OptionValue]:
    """The load options of dataset ``name`` that select ``image_shape`` (those it has)."""
    channels, height, _ = image_shape
    source = dataset_source(name)
    wanted: dict[str, OptionValue] = {"image_size": height, "channels": channels}
    return {key: value for key, value in wanted.items() if key in source.options}


def load_dataset_at(name: str, split: str, image_shape: tuple[int, int, int], data_dir: PathArg | None = None,
                    what: str = "the model", options: Mapping[str, OptionValue] | None = None) -> Dataset:
    """``load_dataset(name, split, data_dir)`` at ``image_shape`` (C, H, W), or a one-line DataError;
    ``options``: further load options (e.g. a card's ``dataset_options``: the sample it was evaluated on)."""
    data = load_dataset(name, split, data_dir, **{**shape_options(name, image_shape), **(options or {})})
    if data.image_shape != tuple(image_shape):
        raise DataError(f"{what} takes {'x'.join(map(str, image_shape))} (C x H x W) images but {name} gives "
                        f"{'x'.join(map(str, data.image_shape))}: use a model trained on {name} at its size")
    return data
