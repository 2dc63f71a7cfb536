"""Separated Attribute Predictability (Kumar et al. 2018), as disentanglement_lib's ``sap_score``
with ``continuous_factors=False``.

For every (code dimension j, factor k) a linear SVM (``LinearSVC(C=0.01,
class_weight="balanced")``) predicts factor k from code j alone; its test accuracy is the
score S_jk. Per factor, the gap between the two best dimensions; SAP is the mean gap.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from sklearn.svm import LinearSVC

from robust_vae.evaluation.disentanglement.base import FloatArray, IntArray, MetricResult, check_pair, varying_factors
from robust_vae.evaluation.disentanglement.common import NUM_TEST, NUM_TRAIN, WarningCount, train_test_split
from robust_vae.evaluation.disentanglement.registry import register_metric

SVM_C = 0.01


def sap_score_matrix(train: tuple[FloatArray, IntArray], test: tuple[FloatArray, IntArray], seed: int,
                     warnings: WarningCount) -> FloatArray:
    """``(D, F)`` test accuracies of one-dimensional linear SVMs, code j → factor k."""
    (z_train, y_train), (z_test, y_test) = train, test
    scores = np.zeros((z_train.shape[1], y_train.shape[1]))
    for j in range(z_train.shape[1]):
        for k in range(y_train.shape[1]):
            svm = LinearSVC(C=SVM_C, class_weight="balanced", random_state=seed)
            warnings.call(partial(svm.fit, z_train[:, j:j + 1], y_train[:, k]))
            scores[j, k] = np.mean(svm.predict(z_test[:, j:j + 1]) == y_test[:, k])
    return scores


def top_two_gap(matrix: FloatArray) -> FloatArray:
    """Per column of ``matrix (D, F)``: largest minus second largest entry (the largest if D = 1)."""
    ranked = np.sort(matrix, axis=0)[::-1]
    second = ranked[1] if matrix.shape[0] > 1 else np.zeros(matrix.shape[1])
    gap: FloatArray = ranked[0] - second
    return gap


@register_metric("sap")
def sap(codes: FloatArray, factors: IntArray, *, seed: int = 0, num_train: int = NUM_TRAIN,
        num_test: int = NUM_TEST) -> MetricResult:
    """SAP of ``codes (N, D)`` against discrete ``factors (N, F)`` on a random train/test split.

    Scores: ``sap`` (mean over factors that vary in the training rows).
    """
    codes, factors = check_pair(codes, factors)
    split = train_test_split(codes.shape[0], num_train, num_test, np.random.default_rng(seed))
    used = varying_factors(factors[split.train])
    warnings = WarningCount()
    matrix = sap_score_matrix((codes[split.train], factors[split.train][:, used]),
                              (codes[split.test], factors[split.test][:, used]), seed, warnings)
    gaps = top_two_gap(matrix)
    settings = {"num_train": int(split.train.size), "num_test": int(split.test.size),
                "classifier": f"sklearn LinearSVC(C={SVM_C}, class_weight='balanced') on one code dimension",
                "score": "test accuracy", "continuous_factors": False, "factors_used": used, "seed": seed,
                "convergence_warnings": warnings.count,
                "reference": "disentanglement_lib sap_score (num_train=10000, num_test=5000)"}
    return MetricResult("sap", {"sap": float(gaps.mean()) if used else 0.0}, settings)
