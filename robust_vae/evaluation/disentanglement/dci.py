"""Disentanglement, completeness and informativeness (Eastwood & Williams 2018), as
disentanglement_lib's ``dci`` except for the default regressor.

One classifier per factor predicts the factor's value from all code dimensions; its
impurity-based feature importances form column k of the importance matrix R (D × F).
Disentanglement = Σ_j ρ_j (1 − H_F(P_j·)), P_jk = R_jk / Σ_k R_jk, ρ_j = Σ_k R_jk / Σ R;
completeness = Σ_k ρ̃_k (1 − H_D(P̃_·k)), P̃_jk = R_jk / Σ_j R_jk, ρ̃_k = Σ_j R_jk / Σ R
(entropies in base F and D; disentanglement_lib's factor-importance weighting of completeness);
informativeness = mean classification accuracy over factors, on the train and the test split.

Regressor. disentanglement_lib uses ``GradientBoostingClassifier()`` (100 stages of depth-3
trees, one tree per class per stage): on 6,667 training codes a 40-valued factor alone took
71 s on this project's 2-core machine, so the default here is ``"random_forest"``,
``RandomForestClassifier(n_estimators=100, max_features=None, min_samples_leaf=10)``: one
tree per estimator whatever the number of classes, impurity importances like the boosted
trees' (Eastwood & Williams used random forests themselves), every feature considered at
every split so that uninformative dimensions are not chosen for want of the informative one,
and leaves of at least 10 points so that the trees do not fit noise with uninformative
dimensions. On three synthetic codes (``python -m benchmarks.disentanglement_speed
--compare-regressors``) its D and C differed from the boosted trees' by at most 0.05 and 0.07,
in the same order, at 1/12 to 1/17 of the time. ``regressor="gbt"`` reproduces
disentanglement_lib exactly, slowly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

from robust_vae.core.errors import ConfigError
from robust_vae.evaluation.disentanglement.base import FloatArray, IntArray, MetricResult, check_pair, varying_factors
from robust_vae.evaluation.disentanglement.common import NUM_TEST, NUM_TRAIN, train_test_split
from robust_vae.evaluation.disentanglement.registry import register_metric

REGRESSORS: dict[str, str] = {
    "random_forest": "sklearn RandomForestClassifier(n_estimators=100, max_features=None, min_samples_leaf=10)",
    "gbt": "sklearn GradientBoostingClassifier() defaults (100 stages, depth 3, learning rate 0.1), as disentanglement_lib",
}
EPS = 1e-11  # added to R before the entropies, as disentanglement_lib


def make_classifier(regressor: str, seed: int, n_jobs: int | None) -> Any:
    """A fresh scikit-learn classifier of the named kind (see :data:`REGRESSORS`)."""
    if regressor == "random_forest":
        return RandomForestClassifier(n_estimators=100, max_features=None, min_samples_leaf=10,
                                      random_state=seed, n_jobs=n_jobs)
    if regressor == "gbt":
        return GradientBoostingClassifier(random_state=seed)
    raise ConfigError(f"unknown DCI regressor {regressor!r}: choose one of {', '.join(REGRESSORS)}")


def importance_matrix(train: tuple[FloatArray, IntArray], test: tuple[FloatArray, IntArray], regressor: str,
                      seed: int, n_jobs: int | None) -> tuple[FloatArray, float, float]:
    """R ``(D, F)`` (column k: importances for factor k) and the mean train and test accuracies."""
    (z_train, y_train), (z_test, y_test) = train, test
    importance = np.zeros((z_train.shape[1], y_train.shape[1]))
    train_acc, test_acc = [], []
    for k in range(y_train.shape[1]):
        model = make_classifier(regressor, seed, n_jobs).fit(z_train, y_train[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train_acc.append(np.mean(model.predict(z_train) == y_train[:, k]))
        test_acc.append(np.mean(model.predict(z_test) == y_test[:, k]))
    return importance, float(np.mean(train_acc)), float(np.mean(test_acc))


def _one_minus_entropy(weights: FloatArray) -> FloatArray:
    """Per row of ``weights (R, C)``: 1 − entropy of the normalised row in base C (1 when C = 1)."""
    if weights.shape[1] == 1:
        return np.ones(weights.shape[0])
    p = (weights + EPS) / (weights + EPS).sum(axis=1, keepdims=True)
    result: FloatArray = 1.0 + np.sum(p * np.log(p), axis=1) / np.log(weights.shape[1])
    return result


def _weighted(per_row: FloatArray, weights: FloatArray) -> float:
    """Σ_r per_row_r · (row sum_r / total); uniform weights when ``weights`` is all zero."""
    total = weights.sum()
    share = weights.sum(axis=1) / total if total > 0 else np.full(weights.shape[0], 1.0 / weights.shape[0])
    return float(np.sum(per_row * share))


def disentanglement(importance: FloatArray) -> float:
    """DCI disentanglement of an importance matrix ``(D, F)``."""
    return _weighted(_one_minus_entropy(importance), importance)


def completeness(importance: FloatArray) -> float:
    """DCI completeness of an importance matrix ``(D, F)``."""
    return _weighted(_one_minus_entropy(importance.T), importance.T)


@register_metric("dci")
def dci(codes: FloatArray, factors: IntArray, *, seed: int = 0, num_train: int = NUM_TRAIN, num_test: int = NUM_TEST,
        regressor: str = "random_forest", n_jobs: int | None = None) -> MetricResult:
    """DCI of ``codes (N, D)`` against ``factors (N, F)`` on a random train/test split.

    Scores: ``dci_disentanglement``, ``dci_completeness``, ``dci_informativeness_train``,
    ``dci_informativeness_test`` (accuracies). ``n_jobs`` only sets the random forest's threads.
    """
    codes, factors = check_pair(codes, factors)
    make_classifier(regressor, seed, n_jobs)  # an unknown regressor fails before any work
    split = train_test_split(codes.shape[0], num_train, num_test, np.random.default_rng(seed))
    used = varying_factors(factors[split.train])
    importance, train_acc, test_acc = importance_matrix(
        (codes[split.train], factors[split.train][:, used]), (codes[split.test], factors[split.test][:, used]),
        regressor, seed, n_jobs)
    scores = {"dci_disentanglement": disentanglement(importance), "dci_completeness": completeness(importance),
              "dci_informativeness_train": train_acc, "dci_informativeness_test": test_acc}
    settings = {"num_train": int(split.train.size), "num_test": int(split.test.size), "regressor": regressor,
                "classifier": REGRESSORS[regressor], "importance": "impurity-based feature_importances_",
                "informativeness": "classification accuracy", "factors_used": used, "seed": seed,
                "importance_matrix": importance.tolist(),
                "reference": "disentanglement_lib dci (num_train=10000, num_test=5000, GradientBoostingClassifier)"}
    return MetricResult("dci", scores, settings)
