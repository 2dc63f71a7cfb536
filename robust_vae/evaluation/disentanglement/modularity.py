"""Modularity and explicitness (Ridgeway & Mozer 2018), as disentanglement_lib's
``modularity_explicitness``.

Modularity: from the MI matrix m (D × F) of 20-bin histogram codes and factors, each code j
has δ_j = Σ_k (m_jk² − θ_j²) / (θ_j² (F − 1)) with θ_j = max_k m_jk (its deviation from the
ideal one-factor profile); modularity = mean_j (1 − δ_j), a code with no information scores 0.

Explicitness: per factor, a logistic regression (scikit-learn defaults: L2, C = 1, lbfgs)
from all standardised codes to the factor's value; its one-vs-rest ROC-AUC averaged over
values (macro); explicitness = mean over factors, on the train and on the test split.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from robust_vae.evaluation.disentanglement.base import FloatArray, IntArray, MetricResult, check_pair, varying_factors
from robust_vae.evaluation.disentanglement.common import (
    NUM_BINS,
    NUM_TEST,
    NUM_TRAIN,
    WarningCount,
    histogram_discretize,
    mutual_information_matrix,
    standardize,
    subsample,
    train_test_split,
)
from robust_vae.evaluation.disentanglement.registry import register_metric


def modularity_per_code(mi: FloatArray) -> FloatArray:
    """``(D,)`` modularity of each code from the MI matrix ``(D, F)`` (0 for a code with no MI)."""
    squared = np.square(mi)
    top = squared.max(axis=1)
    others = max(mi.shape[1] - 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = (squared.sum(axis=1) - top) / (top * others)
    per_code: FloatArray = np.where(top > 0, 1.0 - delta, 0.0)
    return per_code


@register_metric("modularity")
def modularity(codes: FloatArray, factors: IntArray, *, seed: int = 0, num_train: int = NUM_TRAIN,
               num_bins: int = NUM_BINS) -> MetricResult:
    """Modularity of ``codes (N, D)`` against ``factors (N, F)`` on up to ``num_train`` random points.

    Scores: ``modularity``.
    """
    codes, factors = check_pair(codes, factors)
    rows = subsample(codes.shape[0], num_train, np.random.default_rng(seed))
    used = varying_factors(factors[rows])
    mi = mutual_information_matrix(histogram_discretize(codes[rows], num_bins), factors[rows][:, used])
    settings = {"num_points": int(rows.size), "num_bins": num_bins, "discretizer": "histogram (equal width, per dimension)",
                "mutual_information": "plug-in, nats", "factors_used": used, "seed": seed,
                "reference": "disentanglement_lib modularity_explicitness (num_train=10000, 20 bins)"}
    return MetricResult("modularity", {"modularity": float(modularity_per_code(mi).mean())}, settings)


def macro_auc(y: IntArray, proba: FloatArray, classes: IntArray) -> float:
    """Mean one-vs-rest ROC-AUC over the classes present in ``y (N,)`` and absent from some rows.

    ``proba (N, C)`` are the predicted probabilities of ``classes (C,)``.
    """
    aucs = [roc_auc_score(y == c, proba[:, i]) for i, c in enumerate(classes) if 0 < np.sum(y == c) < y.size]
    return float(np.mean(aucs)) if aucs else 0.5


def explicitness_of_factor(train: tuple[FloatArray, IntArray], test: tuple[FloatArray, IntArray], seed: int,
                           warnings: WarningCount) -> tuple[float, float]:
    """(train AUC, test AUC) of a logistic regression from codes ``(N, D)`` to one factor ``(N,)``."""
    (z_train, y_train), (z_test, y_test) = train, test
    model = LogisticRegression(random_state=seed)
    warnings.call(partial(model.fit, z_train, y_train))
    classes = model.classes_.astype(np.int64)
    return (macro_auc(y_train, model.predict_proba(z_train), classes),
            macro_auc(y_test, model.predict_proba(z_test), classes))


@register_metric("explicitness")
def explicitness(codes: FloatArray, factors: IntArray, *, seed: int = 0, num_train: int = NUM_TRAIN,
                 num_test: int = NUM_TEST) -> MetricResult:
    """Explicitness of ``codes (N, D)`` for ``factors (N, F)`` on a random train/test split.

    Scores: ``explicitness_train`` and ``explicitness_test`` (mean ROC-AUC over factors; 0.5 = chance).
    """
    codes, factors = check_pair(codes, factors)
    split = train_test_split(codes.shape[0], num_train, num_test, np.random.default_rng(seed))
    used = varying_factors(factors[split.train])
    z_train, z_test = standardize(codes[split.train], codes[split.test])
    warnings = WarningCount()
    aucs = np.array([explicitness_of_factor((z_train, factors[split.train, k]), (z_test, factors[split.test, k]),
                                            seed, warnings) for k in used]).reshape(-1, 2)
    scores = {"explicitness_train": float(aucs[:, 0].mean()) if used else 0.5,
              "explicitness_test": float(aucs[:, 1].mean()) if used else 0.5}
    settings = {"num_train": int(split.train.size), "num_test": int(split.test.size),
                "classifier": "sklearn LogisticRegression() defaults (L2, C=1, lbfgs, max_iter=100) on standardised codes",
                "score": "one-vs-rest ROC-AUC, macro over factor values", "factors_used": used, "seed": seed,
                "convergence_warnings": warnings.count,
                "reference": "disentanglement_lib modularity_explicitness (num_train=10000, num_test=5000)"}
    return MetricResult("explicitness", scores, settings)
