"""What every disentanglement metric shares: its result, the factor sampler protocol, input checks.

Two kinds of metric (issue 19):

* over fixed representations, ``fn(codes (N, D) float, factors (N, F) int, *, seed) -> MetricResult``
  (MIG, SAP, DCI, modularity, explicitness);
* over interventions, ``fn(sampler: FactorSampler, *, seed) -> MetricResult`` (β-VAE and FactorVAE
  scores), where the sampler draws factors and returns the codes of images rendered from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from robust_vae.core.errors import DataError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class MetricResult:
    """One metric's scores (name → value) and every setting that produced them."""

    name: str
    scores: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready copy: ``{"name", "scores", "settings"}``."""
        return {"name": self.name, "scores": dict(self.scores), "settings": dict(self.settings)}


class FactorSampler(Protocol):
    """Ground-truth factors with a renderer and an encoder behind them.

    ``num_values[k]`` is the number of values of factor ``k`` (factor values are ``0 ..
    num_values[k] - 1``); ``sample_factors(n, rng)`` draws ``(n, F)`` int64 factors;
    ``represent(factors)`` renders images with those factors and returns their codes ``(n, D)``
    (for a VAE, the posterior means).
    """

    @property
    def num_values(self) -> tuple[int, ...]: ...

    def sample_factors(self, n: int, rng: np.random.Generator) -> IntArray: ...

    def represent(self, factors: IntArray) -> FloatArray: ...


@dataclass(frozen=True)
class UniformFactors:
    """A :class:`FactorSampler` with independent, uniform factors and a given ``encode`` function.

    ``encode`` maps factors ``(n, F)`` to codes ``(n, D)``; for tests it is a synthetic function of
    the factors, for a dataset it renders the images and runs the encoder.
    """

    num_values: tuple[int, ...]
    encode: Callable[[IntArray], FloatArray]

    def sample_factors(self, n: int, rng: np.random.Generator) -> IntArray:
        """``(n, F)`` int64 factors, each uniform over its values, independent of the others."""
        columns = [rng.integers(0, size, size=n, dtype=np.int64) for size in self.num_values]
        return np.stack(columns, axis=1) if columns else np.zeros((n, 0), dtype=np.int64)

    def represent(self, factors: IntArray) -> FloatArray:
        """The codes ``(n, D)`` of the given factors."""
        return as_codes(self.encode(factors))


def as_codes(codes: Any) -> FloatArray:
    """``codes`` as a finite float64 ``(N, D)`` array, or a :class:`DataError`."""
    array = np.asarray(codes, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] == 0:
        raise DataError(f"codes must be a 2-D array (N, D) with D >= 1, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise DataError("codes contain NaN or infinite values: check the encoder's outputs")
    return array


def as_factors(factors: Any, n: int | None = None) -> IntArray:
    """``factors`` as a non-negative int64 ``(N, F)`` array (``N == n`` if given), or a :class:`DataError`."""
    array = np.asarray(factors)
    if array.ndim != 2 or array.shape[1] == 0:
        raise DataError(f"factors must be a 2-D array (N, F) with F >= 1, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"factors must be integers (factor value indices), got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise DataError("factors must be non-negative value indices")
    if n is not None and array.shape[0] != n:
        raise DataError(f"codes have {n} rows but factors have {array.shape[0]}: they must match")
    return array.astype(np.int64, copy=False)


def check_pair(codes: Any, factors: Any) -> tuple[FloatArray, IntArray]:
    """Validated ``(codes (N, D), factors (N, F))`` of the same length ``N >= 2``."""
    code_array = as_codes(codes)
    factor_array = as_factors(factors, code_array.shape[0])
    if code_array.shape[0] < 2:
        raise DataError("a disentanglement metric needs at least 2 points")
    return code_array, factor_array


def varying_factors(factors: IntArray) -> list[int]:
    """Indices of the factors that take more than one value in ``factors (N, F)``."""
    return [k for k in range(factors.shape[1]) if np.unique(factors[:, k]).size > 1]


def draw_factors(sampler: FactorSampler, n: int, rng: np.random.Generator) -> IntArray:
    """``sampler.sample_factors(n, rng)`` checked to be ``(n, F)`` value indices, as a writable int64 copy."""
    factors = as_factors(sampler.sample_factors(n, rng), n)
    if factors.shape[1] != len(sampler.num_values):
        raise DataError(f"the sampler drew {factors.shape[1]} factors but declares {len(sampler.num_values)}")
    if np.any(factors >= np.asarray(sampler.num_values)):
        raise DataError("the sampler drew a factor value >= its num_values")
    return np.array(factors, dtype=np.int64, copy=True)


def sampler_factors(sampler: FactorSampler) -> list[int]:
    """Indices of the sampler's factors that have more than one value (the ones a metric can fix)."""
    used = [k for k, size in enumerate(sampler.num_values) if size > 1]
    if not used:
        raise DataError("the sampler has no factor with more than one value")
    return used
