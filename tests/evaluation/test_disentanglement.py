"""Disentanglement metrics (issue 19) against known answers.

Synthetic codes of a dSprites-style grid of 5 factors with 3–10 values: an exact per-factor
copy (columns permuted, rescaled, shifted) scores at each metric's maximum; a random rotation
of the standardised factors scores clearly lower; pure noise scores at chance; duplicated
dimensions lower DCI completeness to a computed value but not disentanglement; MIG's mutual
information matches a hand computation; every metric is deterministic for its seed.
Sample sizes are far below disentanglement_lib's defaults to keep the file fast.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy.stats import special_ortho_group

from robust_vae.core.errors import ConfigError, DataError
from robust_vae.evaluation.disentanglement import (
    UniformFactors,
    betavae_score,
    dci,
    evaluate_all,
    explicitness,
    factorvae_score,
    metric_names,
    mig,
    modularity,
    sap,
)
from robust_vae.evaluation.disentanglement.common import entropy, histogram_discretize, mutual_information
from robust_vae.evaluation.disentanglement.dci import completeness, disentanglement

SIZES = (3, 6, 10, 8, 5)
F = len(SIZES)
N = 1500
PERM = [2, 0, 4, 1, 3]
SCALE = np.array([0.5, 2.0, 1.5, 3.0, 0.7])
OFFSET = np.array([1.0, -2.0, 0.0, 3.0, 0.5])
# small interventional sample sizes: 300 train / 300 eval points, variances from 2,000 points
SMALL = {"betavae_score": {"num_train": 300, "num_eval": 300},
         "factorvae_score": {"num_train": 300, "num_eval": 300, "num_variance": 2000}}

Array = np.ndarray[Any, Any]


def copy_code(f: Array) -> Array:
    """Code dimension j is factor PERM[j], rescaled and shifted."""
    return np.asarray(f[:, PERM] * SCALE + OFFSET, dtype=np.float64)


def standardized(f: Array) -> Array:
    sizes = np.asarray(SIZES, dtype=np.float64)
    return np.asarray((f - (sizes - 1) / 2) / np.sqrt((sizes ** 2 - 1) / 12))


ROTATION = special_ortho_group.rvs(F, random_state=0)
NOISE_TABLE = np.random.default_rng(5).normal(size=(int(np.prod(SIZES)), F))


def rotated_code(f: Array) -> Array:
    return np.asarray(standardized(f) @ ROTATION.T)


def noise_code(f: Array) -> Array:
    """A fixed random vector per factor combination: a deterministic code that ignores each factor."""
    return np.asarray(NOISE_TABLE[np.ravel_multi_index(tuple(f.T), SIZES)])


@pytest.fixture(scope="module")
def factors() -> Array:
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(0, s, size=N) for s in SIZES], axis=1).astype(np.int64)


def scores_of(codes: Array, factors: Array, encode: Any = None) -> dict[str, float]:
    """Every score of every metric (interventional ones through ``encode``) in one flat dict."""
    sampler = UniformFactors(SIZES, encode) if encode is not None else None
    results = evaluate_all(codes, factors, sampler, seed=0, options=SMALL if encode is not None else None)
    return {key: value for result in results.values() for key, value in result.scores.items()}


@pytest.fixture(scope="module")
def copy_scores(factors: Array) -> dict[str, float]:
    return scores_of(copy_code(factors), factors, copy_code)


@pytest.fixture(scope="module")
def rotated_scores(factors: Array) -> dict[str, float]:
    return scores_of(rotated_code(factors), factors, rotated_code)


def test_exact_copy_scores_at_the_maximum(copy_scores: dict[str, float]) -> None:
    # MIG: 1 minus the plug-in MI bias of unrelated dimensions, about (K1 - 1)(K2 - 1) / 2N nats
    assert copy_scores["mig"] == pytest.approx(1.0, abs=0.02)
    assert copy_scores["dci_disentanglement"] == pytest.approx(1.0, abs=1e-3)
    assert copy_scores["dci_completeness"] == pytest.approx(1.0, abs=1e-3)
    assert copy_scores["dci_informativeness_test"] == 1.0
    assert copy_scores["modularity"] == pytest.approx(1.0, abs=0.01)
    assert copy_scores["betavae_score"] == 1.0
    assert copy_scores["factorvae_score"] == 1.0
    assert copy_scores["explicitness_test"] > 0.99


def test_rotation_scores_clearly_lower(copy_scores: dict[str, float], rotated_scores: dict[str, float]) -> None:
    assert rotated_scores["mig"] < 0.3 < copy_scores["mig"]
    assert rotated_scores["dci_disentanglement"] < 0.5 < copy_scores["dci_disentanglement"]
    assert rotated_scores["factorvae_score"] < 0.9 < copy_scores["factorvae_score"]
    # the rotation is invertible, so a linear read-out still finds every factor
    assert rotated_scores["explicitness_test"] > 0.99


def test_noise_scores_at_chance(factors: Array) -> None:
    """Chance levels: β-VAE and FactorVAE 1/F, MIG / SAP / DCI-D 0, explicitness (AUC) 0.5,
    DCI informativeness (accuracy) the mean of 1/K_k over factors."""
    scores = scores_of(np.random.default_rng(1).normal(size=(N, F)), factors, noise_code)
    assert scores["betavae_score"] == pytest.approx(1 / F, abs=0.1)
    assert scores["factorvae_score"] == pytest.approx(1 / F, abs=0.1)
    assert scores["mig"] < 0.02
    assert scores["sap"] < 0.05
    assert scores["dci_disentanglement"] < 0.05
    assert scores["explicitness_test"] == pytest.approx(0.5, abs=0.05)
    assert scores["dci_informativeness_test"] == pytest.approx(np.mean([1 / k for k in SIZES]), abs=0.05)


def test_duplicated_dimensions_lower_completeness_not_disentanglement(factors: Array) -> None:
    rng = np.random.default_rng(2)
    base = standardized(factors) + 0.1 * rng.normal(size=(N, F))
    twice = np.concatenate([base, standardized(factors) + 0.1 * rng.normal(size=(N, F))], axis=1)
    one, two = dci(base, factors).scores, dci(twice, factors).scores
    # each factor's importance split evenly over 2 of 2F dimensions: 1 − log 2 / log 2F
    assert two["dci_completeness"] == pytest.approx(1 - math.log(2) / math.log(2 * F), abs=0.03)
    assert one["dci_completeness"] > 0.95
    assert two["dci_disentanglement"] > 0.95 and one["dci_disentanglement"] > 0.95


def test_pure_noise_dimensions_get_no_importance(factors: Array) -> None:
    """Noise dimensions carry (almost) no importance, so DCI barely moves (the entropies are
    normalised by log D): the duplicated case above is the one that lowers completeness."""
    rng = np.random.default_rng(3)
    base = standardized(factors) + 0.1 * rng.normal(size=(N, F))
    padded = np.concatenate([base, rng.normal(size=(N, F))], axis=1)
    result = dci(padded, factors)
    importance = np.asarray(result.settings["importance_matrix"])
    assert importance[F:].sum() / importance.sum() < 0.02
    assert result.scores["dci_disentanglement"] > 0.95 and result.scores["dci_completeness"] > 0.95


def test_dci_of_hand_made_importance_matrices() -> None:
    assert disentanglement(np.eye(3)) == pytest.approx(1.0)
    assert completeness(np.eye(3)) == pytest.approx(1.0)
    # a code used for two of two factors: that code's disentanglement is 0; weight 2/4
    r = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert disentanglement(r) == pytest.approx(0.5, abs=1e-8)
    # each factor on 2 of 3 codes equally: 1 − log 2 / log 3
    assert completeness(r) == pytest.approx(1 - math.log(2) / math.log(3), abs=1e-8)
    assert disentanglement(np.zeros((3, 2))) == pytest.approx(0.0, abs=1e-8)


def test_mig_mutual_information_by_hand() -> None:
    """z takes 2 values, v 3; counts (z, v): (0,0) 2, (0,1) 1, (0,2) 1, (1,1) 2, (1,2) 2 of 8."""
    z = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    v = np.array([0, 0, 1, 2, 1, 1, 2, 2], dtype=np.int64)
    binned = histogram_discretize(z[:, None])[:, 0]
    assert set(binned.tolist()) == {1, 20}          # the two values land in the first and last of 20 bins
    # I = Σ p(z,v) log p(z,v) / (p(z) p(v)), p(z) = 1/2, p(v) = (2, 3, 3)/8
    mi = (2 / 8) * math.log((2 / 8) / (1 / 2 * 2 / 8)) + 2 * (1 / 8) * math.log((1 / 8) / (1 / 2 * 3 / 8)) \
        + 2 * (2 / 8) * math.log((2 / 8) / (1 / 2 * 3 / 8))
    assert mi == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(2 / 3) + 0.5 * math.log(4 / 3))
    assert mutual_information(binned, v) == pytest.approx(mi, abs=1e-12)
    h = -(2 / 8) * math.log(2 / 8) - 2 * (3 / 8) * math.log(3 / 8)
    assert entropy(v) == pytest.approx(h, abs=1e-12)
    # second code dimension constant: MI 0, so the gap is I(z; v) / H(v)
    result = mig(np.stack([z, np.full(8, 7.0)], axis=1), v[:, None])
    assert result.scores["mig"] == pytest.approx(mi / h, abs=1e-12)
    assert result.settings["num_bins"] == 20


def test_same_seed_same_results(factors: Array) -> None:
    codes = rotated_code(factors)[:600] + 0.05 * np.random.default_rng(4).normal(size=(600, F))
    sampler = UniformFactors(SIZES, rotated_code)
    small = {**SMALL, "betavae_score": {"num_train": 100, "num_eval": 100},
             "factorvae_score": {"num_train": 100, "num_eval": 100, "num_variance": 500}}
    first = evaluate_all(codes, factors[:600], sampler, seed=3, options=small)
    second = evaluate_all(codes, factors[:600], sampler, seed=3, options=small)
    assert first == second
    other = betavae_score(sampler, seed=4, **small["betavae_score"])
    assert other.scores != first["betavae_score"].scores     # the seed does matter


def test_registry_and_settings(factors: Array) -> None:
    assert set(metric_names()) == {"betavae_score", "factorvae_score", "mig", "sap", "dci", "modularity",
                                   "explicitness"}
    assert set(metric_names(interventional=True)) == {"betavae_score", "factorvae_score"}
    codes = copy_code(factors)[:300]
    results = evaluate_all(codes, factors[:300])
    assert set(results) == set(metric_names(interventional=False))
    assert results["dci"].settings["regressor"] == "random_forest"
    assert results["mig"].settings["num_points"] == 300
    assert results["sap"].settings["num_train"] == 200 and results["sap"].settings["num_test"] == 100
    with pytest.raises(ConfigError, match="unknown metrics"):
        evaluate_all(codes, factors[:300], options={"nope": {}})
    with pytest.raises(ConfigError, match="regressor"):
        dci(codes, factors[:300], regressor="lasso")


def test_bad_inputs_and_constant_factors(factors: Array) -> None:
    with pytest.raises(DataError, match="rows"):
        mig(np.zeros((10, 2)), factors[:9])
    float_factors: Any = np.zeros((10, 1))
    with pytest.raises(DataError, match="integers"):
        sap(np.zeros((10, 2)), float_factors)
    with pytest.raises(DataError, match="NaN"):
        modularity(np.full((10, 2), np.nan), factors[:10])
    # a factor with one value (dSprites' colour) is left out, and said so
    with_constant = np.concatenate([np.zeros((300, 1), dtype=np.int64), factors[:300]], axis=1)
    result = explicitness(copy_code(factors[:300]), with_constant)
    assert result.settings["factors_used"] == [1, 2, 3, 4, 5]
    sampler = UniformFactors((1, *SIZES), lambda f: copy_code(f[:, 1:]))
    score = factorvae_score(sampler, num_train=100, num_eval=100, num_variance=500)
    assert score.settings["factors_used"] == [1, 2, 3, 4, 5] and score.scores["factorvae_score"] == 1.0
    assert betavae_score(sampler, num_train=100, num_eval=100).scores["betavae_score"] == 1.0
