"""The command-line flags that reproduce a training run's dataset options (written into cards)."""

from __future__ import annotations

from collections.abc import Mapping

from robust_vae.data.base import OptionValue


def dataset_option_flags(options: Mapping[str, OptionValue]) -> str:
    """`` --image-size 64 --data-option samples=40000`` for ``{"image_size": 64, "samples": 40000}``."""
    flags = ""
    for key, value in options.items():
        if value is None:
            continue
        flags += f" --image-size {value}" if key == "image_size" else f" --data-option {key}={value}"
    return flags
