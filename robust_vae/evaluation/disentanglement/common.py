"""Helpers shared by the metrics: histogram discretisation, discrete mutual information and
entropy (natural log, as ``sklearn.metrics.mutual_info_score``), train/test splits of fixed codes,
standardisation, and counting of scikit-learn convergence warnings.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from robust_vae.core.errors import DataError
from robust_vae.evaluation.disentanglement.base import FloatArray, IntArray

NUM_BINS = 20          # disentanglement_lib: discretizer.num_bins = 20 (histogram_discretizer)
NUM_TRAIN = 10_000     # disentanglement_lib: num_train = 10000 for every metric
NUM_TEST = 5_000       # disentanglement_lib: num_test / num_eval = 5000
POINTS_PER_CALL = 256  # interventional metrics: points per ``represent`` call (× batch_size factor rows)

T = TypeVar("T")


def histogram_discretize(codes: FloatArray, num_bins: int = NUM_BINS) -> IntArray:
    """Each column of ``codes (N, D)`` cut into ``num_bins`` equal-width bins over its own range.

    Returns ``(N, D)`` int64 bin indices in ``1 .. num_bins`` (disentanglement_lib's
    ``np.digitize(x, np.histogram(x, num_bins)[1][:-1])``: the maximum falls in the last bin).
    """
    if num_bins < 1:
        raise DataError(f"num_bins must be >= 1, got {num_bins}")
    out = np.empty(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], bins=num_bins)[1]
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def _dense_labels(values: IntArray) -> tuple[IntArray, int]:
    """``values (N,)`` renumbered ``0 .. K-1`` (in sorted order) and ``K``."""
    uniques, inverse = np.unique(values, return_inverse=True)
    return inverse.astype(np.int64).reshape(-1), int(uniques.size)


def mutual_information(a: IntArray, b: IntArray) -> float:
    """Plug-in mutual information I(a; b) in nats of two discrete samples ``a, b (N,)``."""
    ia, na = _dense_labels(a)
    ib, nb = _dense_labels(b)
    joint = np.bincount(ia * nb + ib, minlength=na * nb).reshape(na, nb).astype(np.float64)
    joint /= joint.sum()
    pa = joint.sum(axis=1, keepdims=True)
    pb = joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float(max(0.0, np.sum(joint[nz] * np.log(joint[nz] / (pa @ pb)[nz]))))


def entropy(a: IntArray) -> float:
    """Plug-in entropy H(a) in nats of a discrete sample ``a (N,)``."""
    counts = np.bincount(_dense_labels(a)[0]).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log(p)))


def mutual_information_matrix(discrete_codes: IntArray, factors: IntArray) -> FloatArray:
    """``(D, F)`` matrix of I(code_j; factor_k) in nats, from ``(N, D)`` and ``(N, F)`` integer arrays."""
    return np.array([[mutual_information(discrete_codes[:, j], factors[:, k])
                      for k in range(factors.shape[1])] for j in range(discrete_codes.shape[1])],
                    dtype=np.float64).reshape(discrete_codes.shape[1], factors.shape[1])


@dataclass(frozen=True)
class Split:
    """Row indices of a random train/test split of fixed codes."""

    train: IntArray
    test: IntArray


def subsample(n: int, size: int, rng: np.random.Generator) -> IntArray:
    """``min(n, size)`` distinct row indices of ``0 .. n-1`` in random order."""
    return rng.permutation(n)[: min(n, size)].astype(np.int64)


def train_test_split(n: int, num_train: int, num_test: int, rng: np.random.Generator) -> Split:
    """A random split of ``n`` rows: ``num_train`` and ``num_test`` rows when there are enough,
    else all ``n`` rows in the ratio ``num_train : num_test`` (at least one row on each side).
    """
    if num_train < 1 or num_test < 1:
        raise DataError(f"num_train and num_test must be >= 1, got {num_train} and {num_test}")
    if n < 2:
        raise DataError("a train/test split needs at least 2 points")
    order = rng.permutation(n).astype(np.int64)
    if n >= num_train + num_test:
        train_size, test_size = num_train, num_test
    else:
        train_size = min(n - 1, max(1, math.ceil(n * num_train / (num_train + num_test))))
        test_size = n - train_size
    return Split(train=order[:train_size], test=order[train_size:train_size + test_size])


def standardize(train: FloatArray, test: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Both ``(N, D)`` arrays centred and scaled by the train mean and std (std 0 counts as 1)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


class WarningCount:
    """How many scikit-learn ``ConvergenceWarning`` were silenced (recorded in the settings)."""

    def __init__(self) -> None:
        self.count = 0

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` with convergence warnings silenced and counted."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            result = fn()
        for warning in caught:
            if issubclass(warning.category, ConvergenceWarning):
                self.count += 1
            else:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        return result
