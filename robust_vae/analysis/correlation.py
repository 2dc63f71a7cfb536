"""Does disentanglement predict robustness? Rank correlations across many trained models.

Input: a *models frame*, one row per trained model (a family's configuration at one seed),
with ``model`` (str, e.g. ``"betavae-b4"``), ``family`` (str), ``seed`` (int) and numeric
metric columns (``mig``, ``dci``, ``recon_error``, ``as_target``, ``beta``, ...).
Optionally ``examples``: column -> row label (the frame's index) -> that model's 1-D array of
per-example values whose mean is the column's value (e.g. 0/1 attack successes), so that the
intervals also carry the finite test set of each model, not only the choice of models.

Why Spearman: the metrics live on unrelated scales and their relation need not be linear;
a rank correlation asks only "do more disentangled models tend to be more robust?".

Why the partial correlation: β (and its relatives) trades reconstruction for
disentanglement, and reconstruction quality alone changes how easy a VAE is to attack. A raw
correlation between disentanglement and robustness can therefore be a reconstruction effect;
controlling for ``recon_error`` asks whether disentanglement predicts robustness *among models
that reconstruct equally well*.

The unit of the correlation: by default each row (a trained network) is a point, as in
Locatello et al. (2019). With ``groups="model"`` the rows of one model name are its seeds and the
point is the model: its value is the mean over its seeds, so that a family trained three times
does not count as three configurations, and the interval carries the seed-to-seed spread.

Uncertainty comes from a hierarchical bootstrap, vectorised over replicates:

1. resample the units (rows, or model names with ``groups``) with replacement;
2. with ``groups``: inside each resampled model, resample its seed rows with replacement (the
   same seed rows for every column, so a seed's x and y stay together) and average them;
3. inside each resampled row, resample that row's per-example values (for the columns that
   ``examples`` has) with replacement and take their mean as the row's value.

Both the raw and the partial coefficient are computed on every replicate; a replicate in which
a column is constant (or the partial correlation is undefined) is dropped, and the number used
is reported. Intervals are percentile intervals (95 %).

Why a permutation test as well: with few models a percentile bootstrap of a rank correlation
is degenerate (resamples of 4 points often hold 2 distinct ones, whose ρ is ±1), so an interval
can exclude 0 where no test could. ``p``: two-sided permutation p-value of ρ over the points
(every permutation when there are at most :data:`EXACT_PERMUTATIONS` of them, else a seeded
Monte Carlo sample, (1 + hits)/(1 + draws)); with 4 points no ρ can reach p < 0.05 (the
smallest p is 2/24). ``partial_p``: the same for the partial ρ, permuting the residuals of
y's ranks on the control's (Freedman & Lane 1983). A table of many pairs is many tests:
:func:`benjamini_hochberg` turns the column of p into q-values (false discovery rate).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from robust_vae.core.errors import ConfigError

DEFAULT_REPLICATES = 2000
LEVEL = 0.95
#: one row of :func:`correlation_table`, in order
TABLE_COLUMNS = ("x", "y", "n_models", "rho", "rho_low", "rho_high", "p", "q", "partial_rho", "partial_low",
                 "partial_high", "partial_p", "partial_q", "control", "replicates_used")
DEFAULT_PERMUTATIONS = 10_000
EXACT_PERMUTATIONS = 40_320  # 8!: up to 8 points every permutation is enumerated
_MIN_ROWS = 3
_CHUNK = 1 << 22  # example indices drawn at a time when resampling non-binary per-example values

#: column -> row label -> the row's per-example values
Examples = Mapping[str, Mapping[Any, npt.ArrayLike]]


# ------------------------------------------------------------------ coefficients (vectorised)
def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties given their average rank; (..., n) -> (..., n)."""
    return np.asarray(stats.rankdata(values, axis=-1), dtype=float)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis: (..., n) x (..., n) -> (...); NaN where either
    side is constant."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    ss_a = (a * a).sum(axis=-1)
    ss_b = (b * b).sum(axis=-1)
    tiny = 1e-12 * a.shape[-1] ** 3  # ranks are O(n): a sum of squares this small is a constant
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=-1) / np.sqrt(ss_a * ss_b)
    r = np.where((ss_a <= tiny) | (ss_b <= tiny), np.nan, r)
    return np.clip(r, -1.0, 1.0)


def _partial_rows(r_xy: np.ndarray, r_xz: np.ndarray, r_yz: np.ndarray) -> np.ndarray:
    """r_xy.z = (r_xy − r_xz·r_yz) / sqrt((1 − r_xz²)(1 − r_yz²)), elementwise; NaN where x or y
    is a monotone function of z (nothing is left of it once z is controlled for)."""
    den = (1.0 - r_xz**2) * (1.0 - r_yz**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (r_xy - r_xz * r_yz) / np.sqrt(den)
    r = np.where(den <= 1e-12, np.nan, r)
    return np.clip(r, -1.0, 1.0)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ of each row pair: (B, n) x (B, n) -> (B,), NaN for a row with a constant side."""
    return _pearson_rows(_ranks(x), _ranks(y))


def partial_spearman_rows(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw and partial (controlling for z) Spearman's ρ of each row triple: (B, n) each ->
    ((B,), (B,)); NaN where undefined."""
    rx, ry, rz = _ranks(x), _ranks(y), _ranks(z)
    r_xy = _pearson_rows(rx, ry)
    return r_xy, _partial_rows(r_xy, _pearson_rows(rx, rz), _pearson_rows(ry, rz))


# ------------------------------------------------------------------ point estimates
def _name(values: object, default: str) -> str:
    name = getattr(values, "name", None)
    return str(name) if name is not None else default


def _finite_columns(columns: Sequence[tuple[str, npt.ArrayLike]]) -> list[np.ndarray]:
    """The columns as float arrays, restricted to the rows where all are finite; ConfigError
    when fewer than 3 rows remain or a column is constant on them."""
    arrays = []
    for name, values in columns:
        try:
            arrays.append(np.asarray(values, dtype=float).reshape(-1))
        except (TypeError, ValueError):
            raise ConfigError(f"{name} is not numeric: a rank correlation needs numbers") from None
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ConfigError(f"{', '.join(n for n, _ in columns)} have different lengths {sorted(lengths)}: "
                          "pass one value per model in each")
    keep = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    arrays = [a[keep] for a in arrays]
    names = ", ".join(n for n, _ in columns)
    if int(keep.sum()) < _MIN_ROWS:
        raise ConfigError(f"a rank correlation of {names} needs at least {_MIN_ROWS} models with every value "
                          f"finite, got {int(keep.sum())}: add models or fill in the missing metrics")
    for (name, _), a in zip(columns, arrays):
        if np.all(a == a[0]):
            raise ConfigError(f"{name} is constant ({a[0]:g}) over the {len(a)} models: its rank correlation "
                              "is undefined; drop it or add models where it varies")
    return arrays


def spearman(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Spearman's ρ of x and y, (n,) each: the Pearson correlation of their ranks (ties get
    their average rank). Rows with NaN in either are dropped; ConfigError when fewer than 3
    remain or either is constant."""
    xs, ys = _finite_columns([(_name(x, "x"), x), (_name(y, "y"), y)])
    return float(spearman_rows(xs, ys))


def partial_spearman(x: npt.ArrayLike, y: npt.ArrayLike, z: npt.ArrayLike) -> float:
    """Spearman's ρ of x and y controlling for z, (n,) each: all three rank-transformed, then
    the partial Pearson correlation of the ranks, r_xy.z = (r_xy − r_xz·r_yz) /
    sqrt((1 − r_xz²)(1 − r_yz²)) (the correlation of the ranks of x and y once each has the
    linear effect of the ranks of z removed). Why: a correlation of x and y that z drives in
    both (reconstruction driving disentanglement and robustness) vanishes here.

    Rows with NaN in any are dropped; ConfigError when fewer than 3 remain, a column is
    constant, or x or y is a monotone function of z."""
    names = (_name(x, "x"), _name(y, "y"), _name(z, "z"))
    xs, ys, zs = _finite_columns(list(zip(names, (x, y, z))))
    _, partial = partial_spearman_rows(xs, ys, zs)
    if not np.isfinite(partial):
        raise ConfigError(f"{names[0]} or {names[1]} is a monotone function of {names[2]} over these models: "
                          "nothing is left to correlate once it is controlled for")
    return float(partial)


# ------------------------------------------------------------------ permutation test
def _permutations(n: int, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """(P, n) index permutations and whether they are all n! of them (else ``draws`` random ones)."""
    if math.factorial(n) <= max(draws, EXACT_PERMUTATIONS):
        return np.array(list(itertools.permutations(range(n))), dtype=np.intp), True
    return rng.permuted(np.tile(np.arange(n), (draws, 1)), axis=1), False


def _p_value(observed: float, permuted: np.ndarray, exact: bool) -> float:
    """Two-sided: the share of permuted coefficients at least as far from 0 as the observed one
    (exact: over all permutations, the identity included; sampled: (1 + hits)/(1 + draws))."""
    if not np.isfinite(observed):
        return math.nan
    permuted = permuted[np.isfinite(permuted)]
    hits = int((np.abs(permuted) >= abs(observed) - 1e-12).sum())
    return hits / len(permuted) if exact else (1 + hits) / (1 + len(permuted))


def permutation_p(x: np.ndarray, y: np.ndarray, z: np.ndarray | None = None,
                  permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> tuple[float, float]:
    """Two-sided permutation p-values of Spearman's ρ of the points (n,) x and y, and (with z) of
    the partial ρ controlling for z (NaN without z): y permuted against x for ρ; for the partial
    ρ the residuals of y's ranks on z's ranks permuted and added back to the fit (Freedman–Lane),
    so that y keeps its relation to z under the null."""
    rng = np.random.default_rng(seed)
    order, exact = _permutations(len(x), permutations, rng)
    rx, ry = _ranks(x), _ranks(y)
    p = _p_value(float(_pearson_rows(rx, ry)), _pearson_rows(rx[None, :], ry[order]), exact)
    if z is None:
        return p, math.nan
    rz = _ranks(z)
    design = np.column_stack([np.ones_like(rz), rz])
    coef, *_ = np.linalg.lstsq(design, ry, rcond=None)
    fitted = design @ coef
    residual = ry - fitted
    y_null = fitted[None, :] + residual[order]  # (P, n)
    r_xz = _pearson_rows(rx, rz)
    observed = float(_partial_rows(_pearson_rows(rx, ry), r_xz, _pearson_rows(ry, rz)))
    permuted = _partial_rows(_pearson_rows(rx[None, :], y_null), r_xz, _pearson_rows(y_null, rz[None, :]))
    return p, _p_value(observed, permuted, exact)


def benjamini_hochberg(p: npt.ArrayLike) -> np.ndarray:
    """Benjamini–Hochberg q-values of the p-values (m,), NaNs left out of the count and kept as
    NaN: q_(i) = min over j ≥ i of m·p_(j)/j, capped at 1."""
    values = np.asarray(p, dtype=float)
    q = np.full(values.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(values))
    if finite.size:
        order = finite[np.argsort(values[finite], kind="stable")]
        m = finite.size
        scaled = values[order] * m / np.arange(1, m + 1)
        q[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return q


def with_q_values(table: pd.DataFrame) -> pd.DataFrame:
    """The table with ``q`` and ``partial_q`` filled from its ``p`` and ``partial_p`` columns
    (Benjamini–Hochberg over its rows: one family of tests per table)."""
    out = table.copy()
    out["q"] = benjamini_hochberg(out["p"].to_numpy(dtype=float))
    out["partial_q"] = benjamini_hochberg(out["partial_p"].to_numpy(dtype=float))
    return out


# ------------------------------------------------------------------ bootstrap
@dataclass(frozen=True)
class Correlation:
    """Raw and partial Spearman's ρ of x and y over ``n_models`` models with bootstrap 95 %
    percentile intervals and permutation p-values; the partial fields are NaN when ``control`` is None. ``rho_samples``
    and ``partial_samples``: (replicates_used,) coefficients of the replicates kept."""

    x: str
    y: str
    control: str | None
    n_models: int
    rho: float
    rho_low: float
    rho_high: float
    partial_rho: float
    partial_low: float
    partial_high: float
    p: float
    partial_p: float
    replicates: int
    replicates_used: int
    rho_samples: np.ndarray = field(repr=False, compare=False)
    partial_samples: np.ndarray = field(repr=False, compare=False)

    def row(self) -> dict[str, Any]:
        """The :data:`TABLE_COLUMNS` of this pair (``q`` and ``partial_q`` NaN: a table's
        :func:`with_q_values` fills them)."""
        return {name: getattr(self, name, math.nan) for name in TABLE_COLUMNS}


def _interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    if samples.size == 0:
        return math.nan, math.nan
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


def resampled_means(values: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` means of ``values`` (m,) resampled with replacement, (size,). 0/1 values are
    drawn as Binomial(m, mean)/m (the same distribution, without m indices per draw)."""
    m = len(values)
    if np.all((values == 0.0) | (values == 1.0)):
        return rng.binomial(m, float(values.mean()), size=size) / m
    rows = max(1, _CHUNK // m)
    means = [values[rng.integers(0, m, size=(min(rows, size - start), m))].mean(axis=1)
             for start in range(0, size, rows)]
    return np.concatenate(means) if means else np.empty(0)


def _bootstrap_column(values: np.ndarray, examples: Mapping[int, np.ndarray], pick: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """(B, n) values of one column under the model resample ``pick`` (B, n): each pick of a
    row with per-example values (``examples``: position -> (m,)) gets its own example resample."""
    out: np.ndarray = np.asarray(values[pick], dtype=float)
    for position in sorted(examples):
        chosen = pick == position
        count = int(chosen.sum())
        if count:
            out[chosen] = resampled_means(examples[position], count, rng)
    return out


def _row_examples(frame: pd.DataFrame, column: str, values: np.ndarray,
                  examples: Examples | None) -> dict[int, np.ndarray]:
    """position -> per-example values of ``column`` for the rows of ``frame`` that have them,
    checked: 1-D, non-empty, finite, and averaging to the frame's value."""
    given = (examples or {}).get(column)
    if not given:
        return {}
    if not frame.index.is_unique:
        raise ConfigError("the models frame has duplicate index labels: per-example values are keyed by row label, "
                          "reset the index first")
    positions = {label: i for i, label in enumerate(frame.index)}
    out: dict[int, np.ndarray] = {}
    for label, raw in given.items():
        if label not in positions:
            continue  # a row dropped (NaN) or filtered out (another family)
        array = np.asarray(raw, dtype=float)
        if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
            raise ConfigError(f"examples[{column!r}][{label!r}] must be a non-empty 1-D array of finite values, "
                              f"got shape {array.shape}")
        i = positions[label]
        if not np.isclose(array.mean(), values[i], rtol=1e-6, atol=1e-9):
            raise ConfigError(f"examples[{column!r}][{label!r}] average {array.mean():g} but the frame has "
                              f"{values[i]:g}: the per-example values must be that model's")
        out[i] = array
    return out


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        raise ConfigError(f"the models frame has no column {column!r}; it has {list(map(str, frame.columns))}")
    try:
        return np.asarray(frame[column].to_numpy(dtype=float), dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"column {column!r} is not numeric: a rank correlation needs numbers") from None


def _group_members(rows: pd.DataFrame, groups: str | None) -> list[np.ndarray]:
    """Row positions of each unit, in order of first appearance: one row each without ``groups``,
    else the rows sharing a value of column ``groups``."""
    if groups is None:
        return [np.array([i]) for i in range(len(rows))]
    if groups not in rows.columns:
        raise ConfigError(f"the models frame has no column {groups!r} to group its rows by; "
                          f"it has {list(map(str, rows.columns))}")
    codes, _ = pd.factorize(rows[groups], sort=False)
    return [np.flatnonzero(codes == g) for g in range(int(codes.max()) + 1 if len(codes) else 0)]


def _group_means(values: np.ndarray, members: Sequence[np.ndarray]) -> np.ndarray:
    return np.array([values[m].mean() for m in members], dtype=float)


def bootstrap_correlation(frame: pd.DataFrame, x: str, y: str, control: str | None = None,
                          examples: Examples | None = None, replicates: int = DEFAULT_REPLICATES,
                          seed: int = 0, groups: str | None = None,
                          permutations: int = DEFAULT_PERMUTATIONS) -> Correlation:
    """Spearman's ρ of columns x and y of the models frame, and (with ``control``) the partial ρ
    controlling for it, with hierarchical-bootstrap 95 % intervals (units, then with ``groups``
    each model's seeds, then each row's per-example values where ``examples`` has them) and
    :func:`permutation_p` p-values over the units (``permutations`` draws, seeded by ``seed``).

    ``groups``: None makes every row a unit; a column name (``"model"``) makes each of its values
    one unit whose value is the mean over its rows (its seeds). Every coefficient uses the same
    rows: those where x, y and the control are all finite, so their difference is the control's
    doing, not a different sample. A replicate is kept when every coefficient is defined on it.
    ``n_models`` counts units. ``seed`` seeds ``numpy.random.default_rng``.
    """
    if replicates < 1:
        raise ConfigError(f"replicates must be >= 1, got {replicates}")
    if control is not None and control in (x, y):
        raise ConfigError(f"the control {control!r} is one of the correlated columns: control for another column")
    names = [x, y] if control is None else [x, y, control]
    columns = [_numeric(frame, name) for name in names]
    keep = np.logical_and.reduce([np.isfinite(c) for c in columns])
    rows = frame.loc[keep]
    members = _group_members(rows, groups)
    values = [c[keep] for c in columns]
    checked = _finite_columns([(name, _group_means(v, members)) for name, v in zip(names, values)])
    if control is None:
        rho, partial = spearman(pd.Series(checked[0], name=x), pd.Series(checked[1], name=y)), math.nan
    else:
        rho = float(spearman_rows(checked[0], checked[1]))
        partial = partial_spearman(*(pd.Series(c, name=n) for n, c in zip(names, checked)))
    p, partial_p = permutation_p(checked[0], checked[1], None if control is None else checked[2], permutations,
                                 seed)

    units = len(members)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, units, size=(replicates, units))
    seed_picks = {g: m[rng.integers(0, len(m), size=(int((pick == g).sum()), len(m)))]
                  for g, m in enumerate(members) if len(m) > 1}  # shared by every column
    draws = []
    for name, column in zip(names, values):
        row_examples = _row_examples(rows, name, column, examples)
        draw = np.empty((replicates, units))
        for g, m in enumerate(members):
            chosen = pick == g
            if not chosen.any():
                continue
            row_pick = seed_picks.get(g, np.full((int(chosen.sum()), 1), m[0]))
            examples_here = {i: row_examples[i] for i in m if i in row_examples}
            draw[chosen] = _bootstrap_column(column, examples_here, row_pick, rng).mean(axis=1)
        draws.append(draw)
    if control is None:
        boot_rho = spearman_rows(draws[0], draws[1])
        boot_partial = np.full(replicates, math.nan)
        used = np.isfinite(boot_rho)
    else:
        boot_rho, boot_partial = partial_spearman_rows(*draws)
        used = np.isfinite(boot_rho) & np.isfinite(boot_partial)
    rho_samples, partial_samples = boot_rho[used], boot_partial[used]
    rho_low, rho_high = _interval(rho_samples)
    partial_low, partial_high = (math.nan, math.nan) if control is None else _interval(partial_samples)
    return Correlation(x=x, y=y, control=control, n_models=units, rho=rho, rho_low=rho_low, rho_high=rho_high,
                       partial_rho=partial, partial_low=partial_low, partial_high=partial_high,
                       p=p, partial_p=partial_p, replicates=replicates, replicates_used=int(used.sum()),
                       rho_samples=rho_samples, partial_samples=partial_samples)


def correlation_table(frame: pd.DataFrame, x_columns: Sequence[str], y_columns: Sequence[str],
                      control: str | None = "recon_error", examples: Examples | None = None,
                      replicates: int = DEFAULT_REPLICATES, seed: int = 0, groups: str | None = None) -> pd.DataFrame:
    """One row per (x, y) pair (x == y skipped) with the :data:`TABLE_COLUMNS`: raw and partial
    Spearman's ρ with their bootstrap 95 % intervals (:func:`bootstrap_correlation`).

    Typically x: disentanglement metrics, y: robustness metrics, control: reconstruction error.
    With ``control`` None, or for a pair that includes the control, the partial columns are NaN
    (and ``control`` is None). Every pair uses the same ``seed`` and ``groups``; ``q`` and
    ``partial_q`` are the Benjamini–Hochberg q-values over the table's pairs.
    """
    rows = []
    for x in x_columns:
        for y in y_columns:
            if x == y:
                continue
            pair_control = None if control in (x, y) else control
            rows.append(bootstrap_correlation(frame, x, y, pair_control, examples, replicates, seed, groups).row())
    return with_q_values(pd.DataFrame(rows, columns=list(TABLE_COLUMNS)))


def beta_effect(frame: pd.DataFrame, x: str = "beta", *, y: str, family: str | None = None,
                family_column: str = "family", examples: Examples | None = None,
                replicates: int = DEFAULT_REPLICATES, seed: int = 0, groups: str | None = None) -> Correlation:
    """Along one family's β line: Spearman's ρ of y against β (column ``x``) over that family's
    models (all seeds; with ``groups`` each model's seed mean), with the bootstrap 95 % interval
    of :func:`bootstrap_correlation`.

    Why: it says how strongly the knob itself moves y, the dose-response that the across-model
    correlation summarises. ``family`` None is allowed only when the rows with a finite β all
    belong to one family.
    """
    if family is not None:
        if family_column not in frame.columns:
            raise ConfigError(f"the models frame has no column {family_column!r} to select family {family!r} by")
        rows = frame[frame[family_column] == family]
        if rows.empty:
            known = sorted(map(str, frame[family_column].dropna().unique()))
            raise ConfigError(f"no model of family {family!r} in the frame; its families are {known}")
    else:
        rows = frame
        if family_column in frame.columns:
            with_beta = frame.loc[np.isfinite(_numeric(frame, x)), family_column].dropna().unique()
            if len(with_beta) > 1:
                raise ConfigError(f"models of several families {sorted(map(str, with_beta))} have a {x}: "
                                  "pass family= to follow one family's line")
    return bootstrap_correlation(rows, x, y, None, examples, replicates, seed, groups)
