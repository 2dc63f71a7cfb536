"""Datasets: images (N, C, H, W) in [0, 1] with labels (and, for dsprites, factors), under a data root.

One module per dataset (``mnist.py``: MNIST and Fashion-MNIST; ``dsprites.py``: dSprites,
rendered; ``imagefolder.py``: a user's class folders or CIFAR-10), registered with
``@register_dataset``; ``load_dataset(name, split, data_dir, **options)`` loads any of them.
"""

from robust_vae.data.base import (
    DATA_ENV,
    DATASETS,
    Dataset,
    DatasetSource,
    DataWarning,
    dataset_source,
    load_dataset,
    register_dataset,
)
from robust_vae.data.pairs import class_pairs
from robust_vae.data.shape_match import load_dataset_at, shape_options

__all__ = ["DATA_ENV", "DATASETS", "Dataset", "DatasetSource", "DataWarning", "class_pairs", "dataset_source",
           "load_dataset", "load_dataset_at", "register_dataset", "shape_options"]
