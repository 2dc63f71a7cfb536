"""Datasets: images (N, C, H, W) in [0, 1] with labels, found under a data root."""

from robust_vae.data.mnist import DATA_ENV, Dataset, class_pairs, load_dataset

__all__ = ["DATA_ENV", "Dataset", "class_pairs", "load_dataset"]
