"""Datasets: images (N, C, H, W) in [0, 1] with labels, found under a data root.

One module per dataset (``mnist.py``: MNIST and Fashion-MNIST), registered with
``@register_dataset``; ``load_dataset(name, split, data_dir)`` loads any of them.
"""

from robust_vae.data.base import (
    DATA_ENV,
    DATASETS,
    Dataset,
    DatasetSource,
    dataset_source,
    load_dataset,
    register_dataset,
)
from robust_vae.data.pairs import class_pairs

__all__ = ["DATA_ENV", "DATASETS", "Dataset", "DatasetSource", "class_pairs", "dataset_source", "load_dataset",
           "register_dataset"]
