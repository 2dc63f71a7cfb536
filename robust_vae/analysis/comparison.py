"""Compare two groups of success-matrix runs: A − B in mean AS target and AS ignore-target,
and in mean AUDDC when every run is a targeted sweep that recorded its curves.

A *group* is one or more run folders (``robust-vae attack`` output) of the same model and
attack, one per model seed. Its statistic for a rate is thesis-style: per run, the unweighted
mean over the ordered pairs (cells, NaN cells skipped) of the per-cell rate; then the mean
over the group's runs (seeds).

Uncertainty comes from a hierarchical bootstrap, vectorised over replicates:

1. resample the group's runs (seeds) with replacement;
2. inside every resampled run, resample each cell's attacked examples with replacement.
   An example's outcome is one of three categories (prediction = target; another wrong
   class; the source class), so an example resample of a cell is a multinomial draw with the
   cell's observed proportions; it is drawn as two binomials (target hits, then other wrong
   predictions among the rest), which is exactly the multinomial.

The two groups are resampled independently. Intervals are percentile intervals (95 %).
A group with a single run has no seed-to-seed term in its interval: the output says so.

The paired test treats the cells as units: per cell, each group's rate averaged over its
runs; the differences over the cells defined in both groups go to a Wilcoxon signed-rank
test (``scipy.stats.wilcoxon``) and to a two-sided sign-flip permutation test of their mean.
It asks whether one group is higher across pairs; it does not include seed variation (the
bootstrap interval does).

AUDDC (``robust_vae.evaluation.curves``) is averaged the same way (per cell the mean over its
examples, per run the unweighted mean over cells, then over runs) and bootstrapped the same way
(seeds, then each cell's examples with replacement); it is an area in [0, 1], so its
differences are in area units, not percentage points (the CSV's ``_pct``/``_pp`` columns hold
100 × the area for its rows).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robust_vae.core.errors import ConfigError, DataError
from robust_vae.evaluation.curves import cell_bootstrap_means
from robust_vae.report.success import RATE_LABELS, RATES
from robust_vae.report.tables import format_p, latex_escape, latex_table, markdown_table

#: run.json keys that must agree for two runs to count as "the same attack setup"
SETUP_KEYS = ("dataset", "attack", "hyperparameters", "per_pair", "seed", "classifier_sha256")
DEFAULT_BOOTSTRAP = 2000
DEFAULT_PERMUTATIONS = 10_000
METRIC_NAMES = {**RATE_LABELS, "auddc": "AUDDC"}


# ----------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class RunCounts:
    """The per-cell outcome counts of one saved run.

    pairs: (C, 2) int (source, target), sorted; n: (C,) kept examples; hits_target: (C,)
    predictions equal to the target; hits_ignore_target: (C,) predictions other than the
    source (so hits_target <= hits_ignore_target <= n); auddc: per cell the finite per-example
    AUDDC values when the run recorded curves, else None.
    """

    path: Path
    metadata: dict[str, Any]
    pairs: np.ndarray
    n: np.ndarray
    hits_target: np.ndarray
    hits_ignore_target: np.ndarray
    auddc: tuple[np.ndarray, ...] | None = None

    @classmethod
    def load(cls, run_dir: str | Path) -> RunCounts:
        """Read a run folder: ``cells.csv`` and ``run.json``, checked against the per-example
        outcomes in ``examples.csv.gz`` when that file is present."""
        run = Path(run_dir)
        missing = [n for n in ("cells.csv", "run.json") if not (run / n).is_file()]
        if missing:
            raise DataError(f"{run} is not a finished run (missing {', '.join(missing)}): "
                            "finish it with `robust-vae attack ... --out` first")
        cells = pd.read_csv(run / "cells.csv")
        needed = ("source", "target", "n", "hits_target", "hits_ignore_target")
        lacking = [c for c in needed if c not in cells.columns]
        if lacking:
            raise DataError(f"{run}/cells.csv lacks column(s) {lacking}: re-run the attack")
        cells = cells.sort_values(["source", "target"]).reset_index(drop=True)
        counts = {c: cells[c].to_numpy(np.int64) for c in needed}
        examples_path = run / "examples.csv.gz"
        auddc = None
        if examples_path.is_file():
            examples = pd.read_csv(examples_path, usecols=lambda c: c in ("source", "target", "prediction", "auddc"))
            _check_examples(run, examples, counts)
            if "auddc" in examples.columns:
                auddc = _auddc_by_cell(examples, counts["source"], counts["target"])
        if ((counts["hits_target"] > counts["hits_ignore_target"]) | (counts["hits_ignore_target"] > counts["n"])
                | (counts["hits_target"] < 0)).any():
            raise DataError(f"{run}/cells.csv has counts with hits_target > hits_ignore_target or "
                            "hits > n: the file is corrupt; re-run the attack")
        metadata = json.loads((run / "run.json").read_text())
        return cls(run, metadata, np.stack([counts["source"], counts["target"]], 1), counts["n"],
                   counts["hits_target"], counts["hits_ignore_target"], auddc)

    @property
    def cells(self) -> int:
        return len(self.n)

    def rates(self) -> dict[str, np.ndarray]:
        """Per-cell AS target and AS ignore-target, (C,) floats, NaN where n = 0."""
        with np.errstate(divide="ignore", invalid="ignore"):
            n = np.where(self.n > 0, self.n, np.nan)
            return {"as_target": self.hits_target / n, "as_ignore_target": self.hits_ignore_target / n}

    @property
    def model_label(self) -> str:
        return str(self.metadata.get("model", self.path.name))


def _auddc_by_cell(examples: pd.DataFrame, sources: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per cell (in the order of ``sources``/``targets``) its examples' finite AUDDC values."""
    grouped = {(int(s), int(t)): g["auddc"].to_numpy(np.float64) for (s, t), g in examples.groupby(["source", "target"])}
    cells = (grouped.get((int(s), int(t)), np.zeros(0)) for s, t in zip(sources, targets))
    return tuple(values[np.isfinite(values)] for values in cells)


def _check_examples(run: Path, examples: pd.DataFrame, counts: dict[str, np.ndarray]) -> None:
    """The per-example outcomes must add up to the cells' counts."""
    if examples.empty:
        recount = np.zeros((len(counts["n"]), 3), np.int64)
    else:
        ex = examples.assign(t=examples["prediction"] == examples["target"],
                             i=examples["prediction"] != examples["source"])
        agg = ex.groupby(["source", "target"]).agg(n=("prediction", "size"), t=("t", "sum"), i=("i", "sum"))
        index = pd.MultiIndex.from_arrays([counts["source"], counts["target"]])
        recount = agg.reindex(index).fillna(0).to_numpy(np.int64)
    stored = np.stack([counts["n"], counts["hits_target"], counts["hits_ignore_target"]], 1)
    if not np.array_equal(recount, stored):
        raise DataError(f"{run}: examples.csv.gz does not add up to cells.csv: the run is corrupt; "
                        "re-render it with `robust-vae report` or re-run the attack")


def _stack(runs: Sequence[RunCounts], label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(R, C) n, hits_target, hits_ignore_target and the shared (C, 2) pairs."""
    if not runs:
        raise ConfigError(f"group {label!r} has no runs: give at least one run folder")
    pairs = runs[0].pairs
    for run in runs[1:]:
        if not np.array_equal(run.pairs, pairs):
            raise DataError(f"{run.path} and {runs[0].path} cover different (source, target) cells: "
                            "compare runs of the same dataset")
    return (np.stack([r.n for r in runs]), np.stack([r.hits_target for r in runs]),
            np.stack([r.hits_ignore_target for r in runs]), pairs)


# ----------------------------------------------------------------------------- groups
@dataclass(frozen=True)
class Group:
    """A labelled set of runs (normally one model under one attack, one run per seed)."""

    label: str
    runs: tuple[RunCounts, ...]

    @classmethod
    def load(cls, run_dirs: Iterable[str | Path], label: str | None = None) -> Group:
        runs = tuple(RunCounts.load(p) for p in run_dirs)
        if not runs:
            raise ConfigError("a group needs at least one run folder")
        return cls(label or default_label(runs), runs)

    @property
    def seeds(self) -> list[Any]:
        return [r.metadata.get("model_seed") for r in self.runs]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return _stack(self.runs, self.label)

    def observed_rates(self) -> dict[str, np.ndarray]:
        """(R, C) per-run, per-cell rates (NaN where a cell has no kept example)."""
        n, ht, hi, _ = self.arrays()
        with np.errstate(divide="ignore", invalid="ignore"):
            m = np.where(n > 0, n, np.nan)
            return {"as_target": ht / m, "as_ignore_target": hi / m}

    @property
    def has_auddc(self) -> bool:
        return all(r.auddc is not None for r in self.runs)

    def observed_auddc(self) -> np.ndarray:
        """(R, C) per-run, per-cell mean AUDDC (NaN where a cell has none)."""
        return np.array([[v.mean() if v.size else np.nan for v in r.auddc or ()] for r in self.runs])

    def bootstrap_auddc(self, replicates: int, rng: np.random.Generator) -> np.ndarray:
        """Hierarchical bootstrap: (B, R, C) per-cell mean AUDDC of B resampled groups (seeds with
        replacement, then every cell's examples with replacement, independently per slot)."""
        runs = len(self.runs)
        pick = rng.integers(0, runs, size=(replicates, runs))
        draws = np.stack([cell_bootstrap_means(list(r.auddc or ()), replicates * runs, rng).reshape(replicates, runs, -1)
                          for r in self.runs])  # (R, B, R slots, C)
        slots = np.broadcast_to(np.arange(runs), pick.shape)
        rows = np.broadcast_to(np.arange(replicates)[:, None], pick.shape)
        boot: np.ndarray = draws[pick, rows, slots]
        return boot

    def bootstrap_rates(self, replicates: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Hierarchical bootstrap: (B, R, C) per-cell rates of B resampled groups."""
        n, ht, hi, _ = self.arrays()
        runs, cells = n.shape
        pick = rng.integers(0, runs, size=(replicates, runs))  # seeds with replacement
        with np.errstate(divide="ignore", invalid="ignore"):
            p_target = np.where(n > 0, ht / np.maximum(n, 1), 0.0)
            p_other = np.where(n - ht > 0, (hi - ht) / np.maximum(n - ht, 1), 0.0)
        size = n[pick]  # (B, R, C)
        target = rng.binomial(size, p_target[pick])
        other = rng.binomial(size - target, p_other[pick])
        with np.errstate(divide="ignore", invalid="ignore"):
            m = np.where(size > 0, size, np.nan)
            return {"as_target": target / m, "as_ignore_target": (target + other) / m}


def default_label(runs: Sequence[RunCounts]) -> str:
    """``model`` (plus ``/ recipe`` when the runs' recipes differ from "thesis")."""
    models = sorted({r.model_label for r in runs})
    recipes = sorted({str(r.metadata.get("recipe", r.metadata.get("attack", "?"))) for r in runs})
    label = "+".join(models)
    if recipes != ["thesis"]:
        label += " / " + "+".join(recipes)
    return label


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN slices stay NaN
        means: np.ndarray = np.nanmean(values, axis=axis)
        return means


def group_statistic(rates: np.ndarray, cell_groups: np.ndarray | None = None) -> np.ndarray:
    """Mean over runs of each run's unweighted mean over cells.

    ``rates``: (..., R, C). Without ``cell_groups`` returns (...,); with a (C,) int array of
    group ids 0..G-1 (e.g. the source class) returns (..., G): per group of cells, the
    per-run mean over its cells, averaged over runs.
    """
    if cell_groups is None:
        return _nanmean(_nanmean(rates, axis=-1), axis=-1)
    ids = np.unique(cell_groups)
    per = np.stack([_nanmean(rates[..., cell_groups == g], axis=-1) for g in ids], axis=-1)  # (..., R, G)
    return _nanmean(per, axis=-2)


def _percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if not len(finite):
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def group_marginals(group: Group, replicates: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> pd.DataFrame:
    """Seed-averaged marginals of a group with bootstrap 95 % intervals.

    Columns ``kind`` ("source" | "target" | "overall"), ``cls`` (-1 for overall), then per
    rate ``<rate>``, ``<rate>_lo``, ``<rate>_hi`` (fractions). The rate columns are the
    layout :mod:`robust_vae.report.success`'s marginal tables read.
    """
    _, _, _, pairs = group.arrays()
    observed = group.observed_rates()
    boot = group.bootstrap_rates(replicates, np.random.default_rng(seed))
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for rate in RATES:
        for kind, ids in (("source", pairs[:, 0]), ("target", pairs[:, 1]), ("overall", None)):
            point = np.atleast_1d(group_statistic(observed[rate], ids))
            samples = group_statistic(boot[rate], ids).reshape(replicates, -1)
            classes = np.unique(ids) if ids is not None else np.array([-1])
            for j, cls in enumerate(classes):
                row = rows.setdefault((kind, int(cls)), {"kind": kind, "cls": int(cls)})
                lo, hi = _percentile_interval(samples[:, j])
                row.update({rate: float(point[j]), f"{rate}_lo": lo, f"{rate}_hi": hi})
    order = {"source": 0, "target": 1, "overall": 2}
    frame = pd.DataFrame(sorted(rows.values(), key=lambda r: (order[r["kind"]], r["cls"])))
    return frame


# ----------------------------------------------------------------------------- tests
def paired_tests(a: np.ndarray, b: np.ndarray, permutations: int = DEFAULT_PERMUTATIONS,
                 seed: int = 0) -> dict[str, Any]:
    """Paired tests over cells of the per-cell rates ``a`` and ``b`` ((C,) each, NaN skipped).

    Returns ``cells`` (pairs used), ``a_higher``, ``b_higher``, ``mean_difference``,
    ``wilcoxon_statistic`` and ``wilcoxon_p`` (two-sided signed-rank, zero differences
    dropped; p = 1 when every difference is zero) and ``permutation_p`` (two-sided sign-flip
    test of the mean difference with ``permutations`` random flips, p = (1 + hits)/(1 + P)).
    """
    from scipy import stats

    keep = np.isfinite(a) & np.isfinite(b)
    d = (np.asarray(a, float) - np.asarray(b, float))[keep]
    out: dict[str, float] = {
        "cells": int(len(d)), "a_higher": int((d > 0).sum()), "b_higher": int((d < 0).sum()),
        "mean_difference": float(d.mean()) if len(d) else math.nan,
        "wilcoxon_statistic": math.nan, "wilcoxon_p": math.nan, "permutation_p": math.nan,
    }
    if not len(d):
        return out
    nonzero = d[np.abs(d) > 1e-12]
    if not len(nonzero):
        out.update(wilcoxon_statistic=0.0, wilcoxon_p=1.0, permutation_p=1.0)
        return out
    result = stats.wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided")
    out["wilcoxon_statistic"] = float(result.statistic)
    out["wilcoxon_p"] = float(result.pvalue)
    rng = np.random.default_rng(seed)
    flips = rng.choice(np.array([-1.0, 1.0]), size=(permutations, len(d)))
    null = np.abs(flips @ d) / len(d)
    hits = int((null >= abs(d.mean()) - 1e-12).sum())
    out["permutation_p"] = (1 + hits) / (1 + permutations)
    return out


# ----------------------------------------------------------------------------- comparison
@dataclass
class MetricComparison:
    """One rate compared between two groups (fractions; the difference is A − B)."""

    metric: str
    mean_a: float
    lo_a: float
    hi_a: float
    mean_b: float
    lo_b: float
    hi_b: float
    difference: float
    lo: float
    hi: float
    cells: int
    a_higher: int
    b_higher: int
    wilcoxon_statistic: float
    wilcoxon_p: float
    permutation_p: float


@dataclass
class Comparison:
    """The comparison of group A with group B in both rates, with its provenance and warnings."""

    name: str
    label_a: str
    label_b: str
    runs_a: list[str]
    runs_b: list[str]
    seeds_a: list[Any]
    seeds_b: list[Any]
    metrics: list[MetricComparison]
    warnings: list[str] = field(default_factory=list)
    bootstrap: int = DEFAULT_BOOTSTRAP
    seed: int = 0
    permutations: int = DEFAULT_PERMUTATIONS

    def metric(self, name: str) -> MetricComparison:
        for m in self.metrics:
            if m.metric == name:
                return m
        raise KeyError(name)

    def to_frame(self) -> pd.DataFrame:
        return comparisons_frame([self])

    def to_markdown(self) -> str:
        return comparisons_markdown([self])

    def to_latex(self) -> str:
        return comparisons_latex([self])

    def save(self, out_dir: str | Path) -> list[Path]:
        """comparison.csv, comparison.tex and comparison.md in ``out_dir``."""
        return save_comparisons([self], out_dir, stem="comparison")


def setup_warnings(a: Group, b: Group) -> list[str]:
    """Plain-words warnings when the runs were not attacked alike (or a group is odd)."""
    notes: list[str] = []
    for group in (a, b):
        models = sorted({r.model_label for r in group.runs})
        if len(models) > 1:
            notes.append(f"group {group.label!r} mixes models ({', '.join(models)}): its seeds are not replicates")
        keys = [(r.model_label, r.metadata.get("model_seed")) for r in group.runs]
        dupes = sorted({f"{m} seed {s}" for m, s in keys if keys.count((m, s)) > 1})
        if dupes:
            notes.append(f"group {group.label!r} holds {', '.join(dupes)} more than once: "
                         "the seed resampling counts it twice")
        differing = [k for k in SETUP_KEYS if len({_canon(r.metadata.get(k)) for r in group.runs}) > 1]
        if differing:
            notes.append(f"the runs of group {group.label!r} differ in {', '.join(differing)}")
        if len(group.runs) == 1:
            notes.append(f"group {group.label!r} has one run: its interval covers example sampling only, "
                         "not seed-to-seed variation")
    setup_a = {k: {_canon(r.metadata.get(k)) for r in a.runs} for k in SETUP_KEYS}
    setup_b = {k: {_canon(r.metadata.get(k)) for r in b.runs} for k in SETUP_KEYS}
    between = [k for k in SETUP_KEYS if setup_a[k] != setup_b[k]]
    if between:
        recipes_a = sorted({str(r.metadata.get("recipe")) for r in a.runs})
        recipes_b = sorted({str(r.metadata.get("recipe")) for r in b.runs})
        what = f"recipes {'+'.join(recipes_a)} vs {'+'.join(recipes_b)}; " if recipes_a != recipes_b else ""
        same_models = {r.model_label for r in a.runs} == {r.model_label for r in b.runs}
        meaning = ("this compares attack setups on the same model, not models" if same_models
                   else "the difference mixes the models with the attack setup")
        notes.append(f"DIFFERENT ATTACK SETUPS: the groups differ in {', '.join(between)} ({what}see run.json): "
                     f"{meaning}")
    return notes


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _metric_comparison(metric: str, observed_a: np.ndarray, observed_b: np.ndarray, boot_a: np.ndarray,
                       boot_b: np.ndarray, permutations: int, perm_seed: int) -> MetricComparison:
    """One metric of both groups: observed (runs, cells) and bootstrap (replicates, runs, cells)
    values -> group means, percentile intervals of each and of A − B, and the paired cell tests."""
    mean_a, mean_b = float(group_statistic(observed_a)), float(group_statistic(observed_b))
    samples_a, samples_b = group_statistic(boot_a), group_statistic(boot_b)
    tests = paired_tests(_nanmean(observed_a, 0), _nanmean(observed_b, 0), permutations, perm_seed)
    return MetricComparison(
        metric, mean_a, *_percentile_interval(samples_a), mean_b, *_percentile_interval(samples_b),
        mean_a - mean_b, *_percentile_interval(samples_a - samples_b), tests["cells"],
        tests["a_higher"], tests["b_higher"], tests["wilcoxon_statistic"], tests["wilcoxon_p"],
        tests["permutation_p"])


def compare_groups(a: Group, b: Group, bootstrap: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                   permutations: int = DEFAULT_PERMUTATIONS, name: str | None = None) -> Comparison:
    """A − B in both rates with hierarchical-bootstrap 95 % intervals and paired cell tests.

    The two groups draw from independent streams of ``np.random.SeedSequence(seed)``, so the
    same ``seed`` gives the same intervals.
    """
    if bootstrap < 1:
        raise ConfigError(f"bootstrap must be >= 1 replicate, got {bootstrap}")
    if permutations < 1:
        raise ConfigError(f"permutations must be >= 1, got {permutations}")
    _, _, _, pairs_a = a.arrays()
    _, _, _, pairs_b = b.arrays()
    if not np.array_equal(pairs_a, pairs_b):
        raise DataError(f"groups {a.label!r} and {b.label!r} cover different (source, target) cells")
    stream_a, stream_b, stream_p = np.random.SeedSequence(seed).spawn(3)
    boot_a = a.bootstrap_rates(bootstrap, np.random.default_rng(stream_a))
    boot_b = b.bootstrap_rates(bootstrap, np.random.default_rng(stream_b))
    obs_a, obs_b = a.observed_rates(), b.observed_rates()
    perm_seed = int(stream_p.generate_state(1)[0])
    metrics = [_metric_comparison(rate, obs_a[rate], obs_b[rate], boot_a[rate], boot_b[rate], permutations, perm_seed)
               for rate in RATES]
    if a.has_auddc and b.has_auddc:  # after the rates, from streams of their own: the rates' draws stay as they were
        auddc_a, auddc_b = (np.random.default_rng(s) for s in stream_p.spawn(2))
        metrics.append(_metric_comparison("auddc", a.observed_auddc(), b.observed_auddc(),
                                          a.bootstrap_auddc(bootstrap, auddc_a), b.bootstrap_auddc(bootstrap, auddc_b),
                                          permutations, perm_seed))
    return Comparison(name or f"{a.label} vs {b.label}", a.label, b.label,
                      [str(r.path) for r in a.runs], [str(r.path) for r in b.runs], a.seeds, b.seeds,
                      metrics, setup_warnings(a, b), bootstrap, seed, permutations)


def compare_runs(runs_a: Sequence[str | Path], runs_b: Sequence[str | Path], label_a: str | None = None,
                 label_b: str | None = None, **kwargs: Any) -> Comparison:
    """:func:`compare_groups` over run folders."""
    a, b = Group.load(runs_a, label_a), Group.load(runs_b, label_b)
    if a.label == b.label:
        a, b = Group(a.label + " (A)", a.runs), Group(b.label + " (B)", b.runs)
    return compare_groups(a, b, **kwargs)


# ----------------------------------------------------------------------------- rendering
def _pct(x: float, digits: int = 2) -> str:
    return "n/a" if not np.isfinite(x) else f"{100 * x:.{digits}f}"


def _signed_pp(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{100 * x:+.2f}"


def _value(metric: str, x: float, unit: str = "%") -> str:
    """A rate in percent (followed by ``unit``), an AUDDC as the area itself."""
    if metric == "auddc":
        return "n/a" if not np.isfinite(x) else f"{x:.4f}"
    return f"{_pct(x)}{unit}"


def _difference(metric: str, x: float) -> str:
    """A − B: percentage points for a rate, area units for AUDDC."""
    if metric == "auddc":
        return "n/a" if not np.isfinite(x) else f"{x:+.4f}"
    return _signed_pp(x)


def comparisons_frame(comparisons: Sequence[Comparison]) -> pd.DataFrame:
    """One row per comparison and rate; rates in percent, the difference in percentage points."""
    rows = []
    for c in comparisons:
        for m in c.metrics:
            rows.append({
                "comparison": c.name, "metric": m.metric, "group_a": c.label_a, "group_b": c.label_b,
                "runs_a": len(c.runs_a), "runs_b": len(c.runs_b),
                "seeds_a": " ".join(map(str, c.seeds_a)), "seeds_b": " ".join(map(str, c.seeds_b)),
                "mean_a_pct": 100 * m.mean_a, "mean_a_lo_pct": 100 * m.lo_a, "mean_a_hi_pct": 100 * m.hi_a,
                "mean_b_pct": 100 * m.mean_b, "mean_b_lo_pct": 100 * m.lo_b, "mean_b_hi_pct": 100 * m.hi_b,
                "difference_pp": 100 * m.difference, "difference_lo_pp": 100 * m.lo,
                "difference_hi_pp": 100 * m.hi, "cells": m.cells, "cells_a_higher": m.a_higher,
                "cells_b_higher": m.b_higher, "wilcoxon_statistic": m.wilcoxon_statistic,
                "wilcoxon_p": m.wilcoxon_p, "permutation_p": m.permutation_p, "bootstrap": c.bootstrap,
                "bootstrap_seed": c.seed, "permutations": c.permutations,
                "warnings": " | ".join(c.warnings),
            })
    return pd.DataFrame(rows)


def comparisons_markdown(comparisons: Sequence[Comparison], notes: bool = True) -> str:
    """A Markdown table (one row per comparison and rate) plus the runs and warnings."""
    header = ["comparison (A vs B)", "rate", "A (95% CI)", "B (95% CI)", "A − B, pp (95% CI)",
              "Wilcoxon p", "sign-flip p", "cells A>B / A<B"]
    rows = []
    for c in comparisons:
        for m in c.metrics:
            v = m.metric
            rows.append([
                c.name, METRIC_NAMES[v],
                f"{_value(v, m.mean_a)} [{_value(v, m.lo_a, '')}, {_value(v, m.hi_a, '')}]",
                f"{_value(v, m.mean_b)} [{_value(v, m.lo_b, '')}, {_value(v, m.hi_b, '')}]",
                f"{_difference(v, m.difference)} [{_difference(v, m.lo)}, {_difference(v, m.hi)}]",
                format_p(m.wilcoxon_p), format_p(m.permutation_p), f"{m.a_higher} / {m.b_higher} of {m.cells}",
            ])
    parts = [markdown_table(header, rows, align="llrrrrrr")]
    if notes:
        lines = []
        for c in comparisons:
            lines.append(f"- **{c.name}**: A = {c.label_a} (seeds {', '.join(map(str, c.seeds_a))}), "
                         f"B = {c.label_b} (seeds {', '.join(map(str, c.seeds_b))})")
            lines += [f"  - ⚠ {w}" for w in c.warnings]
        if comparisons:
            c0 = comparisons[0]
            lines.append(f"- Rates: per run, unweighted mean over cells; averaged over the group's runs. "
                         f"Intervals: hierarchical bootstrap (seeds, then examples within cells), "
                         f"{c0.bootstrap} replicates, seed {c0.seed}, percentile 95 %. Paired tests over "
                         f"cells (seed-averaged cell rates): Wilcoxon signed-rank and a sign-flip "
                         f"permutation test of the mean ({c0.permutations} flips).")
            if any(m.metric == "auddc" for c in comparisons for m in c.metrics):
                lines.append("- AUDDC: the area under the normalised distortion–distance curve (0–1, lower = "
                             "easier to attack), averaged and bootstrapped like the rates; its A − B is in "
                             "area units, not percentage points.")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def comparisons_latex(comparisons: Sequence[Comparison], caption: str | None = None,
                      label: str = "tab:comparison") -> str:
    """A booktabs table: A, B and A − B (percentage points) with 95 % intervals and p-values."""
    caption = caption or ("Difference in mean attack success (A $-$ B, percentage points) with "
                          "hierarchical-bootstrap 95\\% intervals; paired tests over cells.")
    header = ["Comparison", "Rate", "A (\\%)", "B (\\%)", "A $-$ B (pp)", "Wilcoxon $p$", "Sign-flip $p$"]
    rows = [
        [
            latex_escape(c.name), METRIC_NAMES[m.metric],
            f"{_value(m.metric, m.mean_a, '')} [{_value(m.metric, m.lo_a, '')}, {_value(m.metric, m.hi_a, '')}]",
            f"{_value(m.metric, m.mean_b, '')} [{_value(m.metric, m.lo_b, '')}, {_value(m.metric, m.hi_b, '')}]",
            f"${_difference(m.metric, m.difference)}$ [${_difference(m.metric, m.lo)}$, "
            f"${_difference(m.metric, m.hi)}$]",
            format_p(m.wilcoxon_p).replace("<", "$<$"), format_p(m.permutation_p).replace("<", "$<$"),
        ]
        for c in comparisons for m in c.metrics
    ]
    comments = [f"{c.name}: " + _latex_comment(w) for c in comparisons for w in c.warnings]
    return latex_table("llrrrrr", header, rows, caption=caption, label=label, size="small", comments=comments)


def _latex_comment(text: str) -> str:
    return " ".join(text.split())


def save_comparisons(comparisons: Sequence[Comparison], out_dir: str | Path, stem: str = "comparison",
                     caption: str | None = None, label: str = "tab:comparison") -> list[Path]:
    """``<stem>.csv``, ``<stem>.tex`` and ``<stem>.md`` in ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.csv", out / f"{stem}.tex", out / f"{stem}.md"]
    comparisons_frame(comparisons).to_csv(paths[0], index=False, float_format="%.4f")
    paths[1].write_text(comparisons_latex(comparisons, caption, label))
    paths[2].write_text(comparisons_markdown(comparisons))
    return paths


def default_out(runs: Sequence[str | Path], label_a: str, label_b: str) -> Path:
    """``<common parent of the runs>/compare-<A>-vs-<B>``."""
    common = Path(os.path.commonpath([str(Path(p).resolve()) for p in runs]))
    if common in {Path(p).resolve() for p in runs}:
        common = common.parent
    slug = "-".join("".join(ch if ch.isalnum() else "-" for ch in s).strip("-").lower()
                    for s in (label_a, "vs", label_b))
    return common / f"compare-{slug}"
