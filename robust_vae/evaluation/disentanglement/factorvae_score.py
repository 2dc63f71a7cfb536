"""FactorVAE score (Kim & Mnih 2018), as disentanglement_lib's ``factor_vae_score``.

The global variance of each code dimension is estimated on 10,000 random points; dimensions
whose standard deviation is below 0.05 are pruned as collapsed (disentanglement_lib's
``prune_dims.threshold = 0.05`` compares the standard deviation). One point: pick a factor k
uniformly, draw ``batch_size`` = 64 factor vectors sharing one value of k, and vote for the
active dimension whose variance over the batch, divided by its global variance, is smallest
(variances with ddof = 1). The majority-vote classifier maps each dimension to the factor it
received most votes for (ties: the lowest factor index); it is trained on 10,000 votes and the
score is its accuracy on 5,000 fresh votes. Chance level 1/F, maximum 1.
"""

from __future__ import annotations

import numpy as np

from robust_vae.evaluation.disentanglement.base import (
    FactorSampler,
    FloatArray,
    IntArray,
    MetricResult,
    as_codes,
    draw_factors,
    sampler_factors,
)
from robust_vae.evaluation.disentanglement.common import NUM_TEST, NUM_TRAIN, POINTS_PER_CALL
from robust_vae.evaluation.disentanglement.registry import register_metric

BATCH_SIZE = 64          # disentanglement_lib: factor_vae_score.batch_size = 64
NUM_VARIANCE = 10_000    # disentanglement_lib: factor_vae_score.num_variance_estimate = 10000
PRUNE_STD = 0.05         # disentanglement_lib: prune_dims.threshold = 0.05 (on the std)


def votes(sampler: FactorSampler, num_points: int, batch_size: int, rng: np.random.Generator, used: list[int],
          global_variance: FloatArray, active: IntArray) -> IntArray:
    """``(len(used), len(active))`` vote counts: row = fixed factor, column = least-variance dimension."""
    counts = np.zeros((len(used), active.size), dtype=np.int64)
    for start in range(0, num_points, POINTS_PER_CALL):
        points = min(POINTS_PER_CALL, num_points - start)
        label = rng.integers(0, len(used), size=points, dtype=np.int64)
        fixed = np.asarray(used, dtype=np.int64)[label]
        factors = draw_factors(sampler, points * batch_size, rng).reshape(points, batch_size, -1)
        rows = np.arange(points)
        factors[rows, :, fixed] = factors[rows, 0, fixed][:, None]
        codes = as_codes(sampler.represent(factors.reshape(points * batch_size, -1)))
        local = codes.reshape(points, batch_size, -1)[:, :, active].var(axis=1, ddof=1)
        np.add.at(counts, (label, np.argmin(local / global_variance[active], axis=1)), 1)
    return counts


def majority_accuracy(train_votes: IntArray, eval_votes: IntArray) -> tuple[float, float]:
    """(train, eval) accuracy of the classifier dimension → its most voted factor, from ``(F, D')`` votes."""
    classifier = np.argmax(train_votes, axis=0)
    columns = np.arange(train_votes.shape[1])
    return (float(train_votes[classifier, columns].sum() / max(train_votes.sum(), 1)),
            float(eval_votes[classifier, columns].sum() / max(eval_votes.sum(), 1)))


@register_metric("factorvae_score", interventional=True)
def factorvae_score(sampler: FactorSampler, *, seed: int = 0, batch_size: int = BATCH_SIZE,
                    num_train: int = NUM_TRAIN, num_eval: int = NUM_TEST, num_variance: int = NUM_VARIANCE,
                    prune_std: float = PRUNE_STD) -> MetricResult:
    """The FactorVAE score of ``sampler``'s representation.

    Scores: ``factorvae_score`` (eval accuracy), ``factorvae_score_train`` and
    ``factorvae_active_dims`` (dimensions left after pruning; all scores 0 when none is left).
    """
    rng = np.random.default_rng(seed)
    used = sampler_factors(sampler)
    global_variance = as_codes(sampler.represent(draw_factors(sampler, num_variance, rng))).var(axis=0, ddof=1)
    active = np.flatnonzero(np.sqrt(global_variance) >= prune_std).astype(np.int64)
    settings = {"batch_size": batch_size, "num_train": num_train, "num_eval": num_eval,
                "num_variance_estimate": num_variance, "prune_threshold_std": prune_std,
                "active_dims": active.tolist(), "classifier": "majority vote per code dimension",
                "variance": "ddof=1", "factors_used": used, "seed": seed,
                "reference": "disentanglement_lib factor_vae_score (batch_size=64, num_train=10000, num_eval=5000, "
                             "num_variance_estimate=10000, prune threshold 0.05)"}
    if active.size == 0:
        scores = {"factorvae_score": 0.0, "factorvae_score_train": 0.0, "factorvae_active_dims": 0.0}
        return MetricResult("factorvae_score", scores, settings)
    train_votes = votes(sampler, num_train, batch_size, rng, used, global_variance, active)
    eval_votes = votes(sampler, num_eval, batch_size, rng, used, global_variance, active)
    train_acc, eval_acc = majority_accuracy(train_votes, eval_votes)
    scores = {"factorvae_score": eval_acc, "factorvae_score_train": train_acc,
              "factorvae_active_dims": float(active.size)}
    return MetricResult("factorvae_score", scores, settings)
