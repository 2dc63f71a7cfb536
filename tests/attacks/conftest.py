"""Fixtures for the attack tests: one torch thread, and fixed source/target pairs of real MNIST."""

from __future__ import annotations

import pytest
import torch

from robust_vae.data import Dataset


def source_target_pairs(data: Dataset, n: int, target_start: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` fixed pairs of different classes: sources are test images 0..n−1; each target is
    the next unused test image from ``target_start`` on whose label differs from the source's.

    Returns (sources, targets), each (n, 1, 32, 32) in [0, 1].
    """
    labels = data.labels
    targets, j = [], target_start
    for i in range(n):
        while labels[j] == labels[i]:
            j += 1
        targets.append(j)
        j += 1
    return data.images[:n].clone(), data.images[targets].clone()


@pytest.fixture(scope="session")
def pairs16(mnist_test: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return source_target_pairs(mnist_test, 16)
