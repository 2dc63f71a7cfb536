"""β-VAE score (Higgins et al. 2017), as disentanglement_lib's ``beta_vae_sklearn``.

One point: pick a factor k uniformly; draw ``batch_size`` = 64 pairs of factor vectors that
share factor k (all other factors drawn independently); the feature is the mean over pairs of
|z(v1) − z(v2)| (length D) and the label is k. A logistic regression (scikit-learn defaults,
``random_state=seed``) is trained on 10,000 points; the score is its accuracy on 5,000 fresh
points. Chance level 1/F, maximum 1.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from sklearn.linear_model import LogisticRegression

from robust_vae.evaluation.disentanglement.base import (
    FactorSampler,
    FloatArray,
    IntArray,
    MetricResult,
    as_codes,
    draw_factors,
    sampler_factors,
)
from robust_vae.evaluation.disentanglement.common import NUM_TEST, NUM_TRAIN, POINTS_PER_CALL, WarningCount
from robust_vae.evaluation.disentanglement.registry import register_metric

BATCH_SIZE = 64         # disentanglement_lib: beta_vae_sklearn.batch_size = 64


def pair_features(sampler: FactorSampler, num_points: int, batch_size: int, rng: np.random.Generator,
                  used: list[int]) -> tuple[FloatArray, IntArray]:
    """``num_points`` features ``(P, D)`` (mean |z1 − z2| over ``batch_size`` pairs) and their
    labels ``(P,)``: the position in ``used`` of the factor the pairs share.
    """
    features: list[FloatArray] = []
    labels: list[IntArray] = []
    for start in range(0, num_points, POINTS_PER_CALL):
        points = min(POINTS_PER_CALL, num_points - start)
        label = rng.integers(0, len(used), size=points, dtype=np.int64)
        fixed = np.asarray(used, dtype=np.int64)[label]
        first = draw_factors(sampler, points * batch_size, rng).reshape(points, batch_size, -1)
        second = draw_factors(sampler, points * batch_size, rng).reshape(points, batch_size, -1)
        rows = np.arange(points)
        second[rows, :, fixed] = first[rows, :, fixed]
        z1 = as_codes(sampler.represent(first.reshape(points * batch_size, -1)))
        z2 = as_codes(sampler.represent(second.reshape(points * batch_size, -1)))
        features.append(np.abs(z1 - z2).reshape(points, batch_size, -1).mean(axis=1))
        labels.append(label)
    return np.concatenate(features), np.concatenate(labels)


@register_metric("betavae_score", interventional=True)
def betavae_score(sampler: FactorSampler, *, seed: int = 0, batch_size: int = BATCH_SIZE,
                  num_train: int = NUM_TRAIN, num_eval: int = NUM_TEST) -> MetricResult:
    """The β-VAE score of ``sampler``'s representation.

    Scores: ``betavae_score`` (eval accuracy) and ``betavae_score_train`` (train accuracy).
    """
    rng = np.random.default_rng(seed)
    used = sampler_factors(sampler)
    train_x, train_y = pair_features(sampler, num_train, batch_size, rng, used)
    model = LogisticRegression(random_state=seed)
    warnings = WarningCount()
    warnings.call(partial(model.fit, train_x, train_y))
    eval_x, eval_y = pair_features(sampler, num_eval, batch_size, rng, used)
    scores = {"betavae_score": float(np.mean(model.predict(eval_x) == eval_y)),
              "betavae_score_train": float(np.mean(model.predict(train_x) == train_y))}
    settings = {"batch_size": batch_size, "num_train": num_train, "num_eval": num_eval,
                "classifier": "sklearn LogisticRegression() defaults (L2, C=1, lbfgs, max_iter=100), unscaled features",
                "feature": "mean |z1 - z2| over batch_size pairs sharing one factor", "factors_used": used,
                "seed": seed, "convergence_warnings": warnings.count,
                "reference": "disentanglement_lib beta_vae_sklearn (batch_size=64, num_train=10000, num_eval=5000)"}
    return MetricResult("betavae_score", scores, settings)
