"""Disentanglement metrics of issue 19, with disentanglement_lib's definitions and defaults.

Over fixed codes ``(N, D)`` and integer factors ``(N, F)``: :func:`mig`, :func:`sap`,
:func:`dci`, :func:`modularity`, :func:`explicitness`. Over interventions through a
:class:`FactorSampler`: :func:`betavae_score`, :func:`factorvae_score`. Each returns a
:class:`MetricResult` (scores and settings) and is deterministic for its ``seed``;
:func:`evaluate_all` runs every registered metric (``@register_metric``).
:func:`measure_disentanglement` (a model) and :func:`zoo_disentanglement` (a zoo model by name)
run all seven on a trained VAE's codes of a dataset with ground-truth factors (``dsprites``).
"""

from robust_vae.evaluation.disentanglement.base import FactorSampler, MetricResult, UniformFactors
from robust_vae.evaluation.disentanglement.betavae_score import betavae_score
from robust_vae.evaluation.disentanglement.dci import dci
from robust_vae.evaluation.disentanglement.factorvae_score import factorvae_score
from robust_vae.evaluation.disentanglement.mig import mig
from robust_vae.evaluation.disentanglement.model import (
    CODES,
    ModelSampler,
    card_record,
    measure_disentanglement,
    zoo_disentanglement,
)
from robust_vae.evaluation.disentanglement.modularity import explicitness, modularity
from robust_vae.evaluation.disentanglement.registry import METRICS, evaluate_all, metric_names, register_metric
from robust_vae.evaluation.disentanglement.sap import sap

__all__ = [
    "CODES", "METRICS", "FactorSampler", "MetricResult", "ModelSampler", "UniformFactors", "betavae_score",
    "card_record", "dci", "evaluate_all", "explicitness", "factorvae_score", "measure_disentanglement",
    "metric_names", "mig", "modularity", "register_metric", "sap", "zoo_disentanglement",
]
