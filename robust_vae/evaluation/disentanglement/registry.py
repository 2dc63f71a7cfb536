"""The disentanglement-metric registry: ``@register_metric("mig")`` on a metric function adds it,
and :func:`evaluate_all` runs every registered metric.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from robust_vae.core.errors import ConfigError
from robust_vae.core.registry import Registry
from robust_vae.evaluation.disentanglement.base import FactorSampler, MetricResult, check_pair

MetricFn = Callable[..., MetricResult]
F = TypeVar("F", bound=MetricFn)


@dataclass(frozen=True)
class MetricEntry:
    """A registered metric: its function and whether it needs a :class:`FactorSampler`.

    ``interventional=False``: ``fn(codes (N, D), factors (N, F), *, seed, **options)``;
    ``interventional=True``: ``fn(sampler, *, seed, **options)``.
    """

    name: str
    fn: MetricFn
    interventional: bool


METRICS: Registry[MetricEntry] = Registry("disentanglement metric", "robust_vae.evaluation.disentanglement",
                                          ConfigError)


def register_metric(name: str, *, interventional: bool = False) -> Callable[[F], F]:
    """Function decorator: ``@register_metric("mig")`` (``interventional=True`` for sampler metrics)."""

    def decorate(fn: F) -> F:
        METRICS.register(name)(MetricEntry(name, fn, interventional))
        return fn

    return decorate


def metric_names(*, interventional: bool | None = None) -> list[str]:
    """Registered metric names, optionally only the interventional (or only the fixed-code) ones."""
    return [name for name, entry in METRICS.items() if interventional is None or entry.interventional == interventional]


def evaluate_all(codes: Any, factors: Any, sampler: FactorSampler | None = None, seed: int = 0,
                 options: Mapping[str, Mapping[str, Any]] | None = None,
                 on_metric: Callable[[str], None] | None = None,
                 only: Sequence[str] | None = None) -> dict[str, MetricResult]:
    """Every registered metric: the fixed-code ones on ``codes (N, D)`` / ``factors (N, F)``, the
    interventional ones only when ``sampler`` is given. ``options[name]`` are keyword arguments
    for that metric (e.g. smaller sample sizes); ``on_metric(name)`` is called just before each
    metric runs (progress, timing); ``only``: run just these metrics. Returns ``{metric name: MetricResult}``.
    """
    code_array, factor_array = check_pair(codes, factors)
    extra = dict(options or {})
    unknown = sorted(set(extra) - set(METRICS.names()))
    if unknown:
        raise ConfigError(f"options for unknown metrics {unknown}: choose from {', '.join(METRICS.names())}")
    chosen = None if only is None else set(only)
    if chosen is not None and chosen - set(METRICS.names()):
        raise ConfigError(f"unknown metrics {sorted(chosen - set(METRICS.names()))}: choose from "
                          f"{', '.join(METRICS.names())}")
    results: dict[str, MetricResult] = {}
    for name, entry in METRICS.items():
        if chosen is not None and name not in chosen:
            continue
        kwargs = dict(extra.get(name, {}))
        inputs: tuple[Any, ...] = (sampler,) if entry.interventional else (code_array, factor_array)
        if entry.interventional and sampler is None:
            continue
        if on_metric is not None:
            on_metric(name)
        results[name] = entry.fn(*inputs, seed=seed, **kwargs)
    return results
