"""Tables and the scatter figure of "does disentanglement predict robustness?".

The tables render a *correlation table*: one row per (x, y) pair with the columns ``x, y,
n_models, rho, rho_low, rho_high, partial_rho, partial_low, partial_high, control,
replicates_used`` (``robust_vae.analysis.correlation.correlation_table`` makes it; nothing
here imports it). ρ is shown as ``−0.42 [−0.71, −0.05]``: the estimate, then its 95 % interval.

The scatter draws a *models frame* (one row per trained model: ``model``, ``family``, metric
columns): a solid point per model name (its mean over seeds), the seeds as faint points of the
same colour, one colour per family, and a least-squares line over the model points with a 95 %
band from a bootstrap over those points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from robust_vae.core.errors import ConfigError
from robust_vae.report.success import new_figure, save_figure
from robust_vae.report.tables import format_p, latex_escape, latex_table, markdown_table

MINUS = "\u2212"
LEVEL = 0.95


# ------------------------------------------------------------------ tables
def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def format_coefficient(value: Any, digits: int = 2, minus: str = MINUS) -> str:
    """``-0.4213`` -> ``"−0.42"`` (a true minus sign by default); ``"n/a"`` when not finite."""
    if not _finite(value):
        return "n/a"
    text = f"{float(value):.{digits}f}"
    if float(text) == 0.0:
        text = text.lstrip("-")  # no "−0.00"
    return text.replace("-", minus)


def format_interval(value: Any, low: Any, high: Any, digits: int = 2, minus: str = MINUS) -> str:
    """``"−0.42 [−0.71, −0.05]"``: the estimate and its interval; the estimate alone when the
    interval is not finite, ``"n/a"`` when the estimate is not."""
    point = format_coefficient(value, digits, minus)
    if point == "n/a" or not (_finite(low) and _finite(high)):
        return point
    return f"{point} [{format_coefficient(low, digits, minus)}, {format_coefficient(high, digits, minus)}]"


def _control(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _controls(table: pd.DataFrame) -> list[str]:
    """The distinct controls of the table's rows, in order."""
    return list(dict.fromkeys(c for c in map(_control, table["control"]) if c is not None))


def _has_partial(table: pd.DataFrame) -> bool:
    return bool(_controls(table))


def _check_table(table: pd.DataFrame) -> None:
    required = ("x", "y", "n_models", "rho", "rho_low", "rho_high", "p", "q", "partial_rho", "partial_low",
                "partial_high", "partial_p", "partial_q", "control", "replicates_used")
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ConfigError(f"correlation table lacks column(s) {missing}: expected correlation_table's output")


DEFAULT_POINTS = "models"
DEFAULT_LEVELS = "models, then each model's examples"

#: ``[analysis] unit`` -> the models-frame column whose values group its rows into points (None: each
#: row, one model and seed, is a point). Here, below the analysis and the HTML page, so that both word
#: the unit alike.
UNIT_GROUPS: dict[str, str | None] = {"model": "model", "network": None}
DEFAULT_UNIT = "model"


def unit_points(unit: str) -> str:
    """What a point of ρ is under ``unit`` (a key of :data:`UNIT_GROUPS`), for a table's key."""
    return "models (each the mean over its seeds)" if UNIT_GROUPS[unit] else "trained networks (model × seed)"


def unit_levels(unit: str) -> str:
    """What the hierarchical bootstrap resamples under ``unit``, in order, for a table's key."""
    return ("models, then each model's seeds, then each seed's examples" if UNIT_GROUPS[unit]
            else "networks, then each network's examples")


def correlation_markdown(table: pd.DataFrame, digits: int = 2, points: str = DEFAULT_POINTS,
                         levels: str = DEFAULT_LEVELS) -> str:
    """A Markdown table of the pairs (ρ and, where a control was used, the partial ρ with their
    intervals) and a key line under it; the partial columns are left out when no row has a
    control. ``points``: what a point of ρ is; ``levels``: what the bootstrap resamples, in order
    (both for the key line)."""
    _check_table(table)
    partial = _has_partial(table)
    header = ["x", "y", "models", "Spearman ρ [95 % CI]", "p", "q"]
    if partial:
        header += ["partial ρ [95 % CI]", "p", "q", "controlling for"]
    header.append("replicates")
    rows = []
    for r in table.itertuples(index=False):
        row: list[object] = [r.x, r.y, int(r.n_models), format_interval(r.rho, r.rho_low, r.rho_high, digits),
                             format_p(r.p), format_p(r.q)]
        if partial:
            control = _control(r.control)
            row += ([format_interval(r.partial_rho, r.partial_low, r.partial_high, digits), format_p(r.partial_p),
                     format_p(r.partial_q), control] if control else ["—", "—", "—", "—"])
        row.append(int(r.replicates_used))
        rows.append(row)
    align = "llrrrrrrrlr" if partial else "llrrrrr"
    key = f"ρ: Spearman rank correlation over the {points}; "
    if partial:
        key += f"partial ρ: the same with the ranks of {', '.join(_controls(table))} partialled out; "
    key += (f"[low, high]: 95 % hierarchical-bootstrap percentile interval ({levels}); p: two-sided permutation "
            "p-value over the points" + (" (for the partial ρ, of the residuals on the control)" if partial else "")
            + "; q: Benjamini–Hochberg q-value over the table's rows; replicates: bootstrap replicates used.")
    outside = _outside_interval(table)
    if outside:
        key += (f" {outside} ρ lie outside their interval, which is no error: near ±1 the resampled ρ cannot go "
                "further, and a resample that repeats a model ties its ranks, so most resamples fall short of the "
                "extreme and the percentile interval stops before it.")
    return markdown_table(header, rows, align) + "\n\n" + key + "\n"


def _outside_interval(table: pd.DataFrame) -> int:
    """How many ρ and partial ρ of ``table`` lie outside their own bootstrap interval (NaN: not counted)."""
    count = 0
    for value, low, high in (("rho", "rho_low", "rho_high"), ("partial_rho", "partial_low", "partial_high")):
        v, lo, hi = (pd.to_numeric(table[c], errors="coerce") for c in (value, low, high))
        count += int(((v < lo - 1e-9) | (v > hi + 1e-9)).sum())
    return count


def _latex_interval(value: Any, low: Any, high: Any, digits: int) -> str:
    if not _finite(value):
        return "n/a"
    text = format_interval(value, low, high, digits, minus="-")
    point, _, rest = text.partition(" ")
    if not rest:
        return f"${point}$"
    low_text, high_text = rest.strip("[]").split(", ")
    return f"${point}$ [${low_text}$, ${high_text}$]"


def _latex_p(value: Any) -> str:
    return format_p(float(value)).replace("<", "$<$")


def correlation_latex(table: pd.DataFrame, caption: str | None = None, label: str = "tab:correlation",
                      digits: int = 2, points: str = DEFAULT_POINTS) -> str:
    """The same table as :func:`correlation_markdown` as a booktabs LaTeX table."""
    _check_table(table)
    partial = _has_partial(table)
    header = ["$x$", "$y$", "models", r"$\rho$ [95\,\% CI]", "$p$", "$q$"]
    spec = "llrrrr"
    if partial:
        header += [r"partial $\rho$ [95\,\% CI]", "$p$", "$q$", "control"]
        spec += "rrrl"
    header.append("replicates")
    spec += "r"
    rows = []
    for r in table.itertuples(index=False):
        row = [latex_escape(r.x), latex_escape(r.y), str(int(r.n_models)),
               _latex_interval(r.rho, r.rho_low, r.rho_high, digits), _latex_p(r.p), _latex_p(r.q)]
        if partial:
            control = _control(r.control)
            row += ([_latex_interval(r.partial_rho, r.partial_low, r.partial_high, digits), _latex_p(r.partial_p),
                     _latex_p(r.partial_q), latex_escape(control)] if control else ["--"] * 4)
        row.append(str(int(r.replicates_used)))
        rows.append(row)
    if caption is None:
        controls = ", ".join(latex_escape(c) for c in _controls(table))
        caption = (f"Spearman rank correlations across {latex_escape(points)}"
                   + (f", raw and partial (controlling for {controls})" if partial else "")
                   + r", with 95\,\% hierarchical-bootstrap percentile intervals, two-sided permutation $p$-values"
                   + r" and Benjamini--Hochberg $q$-values over the table's rows.")
    return latex_table(spec, header, rows, caption=caption, label=label)


def save_correlation_tables(table: pd.DataFrame, out_dir: str | Path, stem: str = "correlation",
                            caption: str | None = None, points: str = DEFAULT_POINTS,
                            levels: str = DEFAULT_LEVELS) -> dict[str, Path]:
    """Write ``<stem>.csv`` (the numbers), ``<stem>.tex`` and ``<stem>.md`` into ``out_dir``
    (``points`` and ``levels``: as in :func:`correlation_markdown`); returns {"csv", "tex", "md"} -> path."""
    _check_table(table)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / f"{stem}.csv", "tex": out / f"{stem}.tex", "md": out / f"{stem}.md"}
    table.to_csv(paths["csv"], index=False)
    paths["tex"].write_text(correlation_latex(table, caption, points=points), encoding="utf-8")
    paths["md"].write_text(correlation_markdown(table, points=points, levels=levels), encoding="utf-8")
    return paths


# ------------------------------------------------------------------ scatter
@dataclass(frozen=True)
class LineFit:
    """A least-squares line y = intercept + slope·x and its band over ``grid`` (G,): ``low`` and
    ``high`` (G,) bound the fitted line's 95 % bootstrap band (NaN arrays: no band)."""

    slope: float
    intercept: float
    grid: np.ndarray
    low: np.ndarray
    high: np.ndarray


def least_squares_fit(x: np.ndarray, y: np.ndarray, replicates: int = 1000, seed: int = 0,
                      points: int = 100) -> LineFit | None:
    """Least-squares line through the points (x, y), (m,) each, and its 95 % band: for each of
    ``replicates`` resamples of the points (with replacement) the refitted line at ``points``
    grid values over the range of x, then the 2.5 and 97.5 percentiles per grid value
    (resamples with a constant x are dropped). None when fewer than 3 finite points or x is
    constant (no line to fit)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.all(x == x[0]):
        return None
    slope, intercept = _line(x[None, :], y[None, :])
    grid = np.linspace(float(x.min()), float(x.max()), points)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(x), size=(replicates, len(x)))
    slopes, intercepts = _line(x[pick], y[pick])
    lines = intercepts[:, None] + slopes[:, None] * grid[None, :]
    lines = lines[np.isfinite(slopes)]
    if len(lines):
        tail = 100.0 * (1.0 - LEVEL) / 2.0
        low, high = np.percentile(lines, [tail, 100.0 - tail], axis=0)
    else:
        low = high = np.full(points, np.nan)
    return LineFit(float(slope[0]), float(intercept[0]), grid, low, high)


def _line(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise least-squares slope and intercept: (B, m) x (B, m) -> ((B,), (B,)); NaN where a
    row's x is constant."""
    xc = x - x.mean(axis=1, keepdims=True)
    sxx = (xc * xc).sum(axis=1)
    sxy = (xc * (y - y.mean(axis=1, keepdims=True))).sum(axis=1)
    scale = np.maximum(np.abs(x).max(axis=1), 1e-300) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(sxx <= 1e-12 * scale, np.nan, sxy / sxx)
    return slope, y.mean(axis=1) - slope * x.mean(axis=1)


def model_points(frame: pd.DataFrame, x: str, y: str, family_column: str = "family",
                 model_column: str = "model") -> pd.DataFrame:
    """One row per model name: its family and the mean of x and y over its seeds (rows with
    NaN in x or y left out), in the order models first appear."""
    for column in (x, y, family_column, model_column):
        if column not in frame.columns:
            raise ConfigError(f"the models frame has no column {column!r}; it has {list(map(str, frame.columns))}")
    rows = frame[np.isfinite(frame[x].to_numpy(dtype=float)) & np.isfinite(frame[y].to_numpy(dtype=float))]
    families = rows.groupby(model_column, sort=False)[family_column].nunique()
    mixed = families[families > 1]
    if len(mixed):
        raise ConfigError(f"model(s) {list(map(str, mixed.index))} belong to several families: "
                          "one family per model name expected")
    grouped = rows.groupby(model_column, sort=False)
    family = grouped[family_column].first()
    return pd.DataFrame({model_column: family.index.to_numpy(), family_column: family.to_numpy(),
                         x: grouped[x].mean().reindex(family.index).to_numpy(dtype=float),
                         y: grouped[y].mean().reindex(family.index).to_numpy(dtype=float)})


LOG_SPAN = 30.0  # a positive axis with max/min at least this (about 1.5 decades) ...
SKEW = 0.2  # ... and the median in the lowest fifth of the range (bunched low, a few far above) is logged
MARGIN = 0.08  # of the points' range (in log10 on a log axis), around them


def _wants_log(values: np.ndarray) -> bool:
    """Whether the points (n,) call for a log axis: all positive, spanning LOG_SPAN or more, and
    heavy-tailed (median below min + SKEW·range; evenly spread values keep a linear axis)."""
    if not (np.all(values > 0) and values.max() >= LOG_SPAN * values.min()):
        return False
    low, high = float(values.min()), float(values.max())
    return bool(np.median(values) < low + SKEW * (high - low))


def _scaled(values: np.ndarray, log: bool) -> np.ndarray:
    return np.log10(values) if log else values


def _unscaled(values: np.ndarray, log: bool) -> np.ndarray:
    return np.power(10.0, values) if log else values


def _limits(values: np.ndarray, log: bool) -> tuple[float, float]:
    """Axis limits holding every finite value of (n,) with a MARGIN of their range each side (in
    log10 on a log axis); a single value gets ±5 % of itself (±0.05 at zero)."""
    scaled = _scaled(values[np.isfinite(values)], log)
    low, high = float(scaled.min()), float(scaled.max())
    pad = MARGIN * (high - low) if high > low else (0.05 * abs(low) or 0.05)
    return float(_unscaled(np.array(low - pad), log)), float(_unscaled(np.array(high + pad), log))


def plot_correlation_scatter(frame: pd.DataFrame, x: str, y: str, path: str | Path, family_column: str = "family",
                             model_column: str = "model", fit: LineFit | bool | None = None,
                             replicates: int = 1000, seed: int = 0, annotate: bool = True,
                             title: str | None = None) -> Figure:
    """Scatter of y against x over the models, saved as a PNG at ``path``; returns the Figure.

    A solid point per model name (mean over its seeds) and its seed-level rows as faint points
    of the same colour; one colour per family, one legend entry per family. ``fit``: None or
    True fits a least-squares line over the model points with a 95 % band from ``replicates``
    bootstrap resamples of them (:func:`least_squares_fit`, seeded by ``seed``); a
    :class:`LineFit` is drawn as given; False draws no line. Axis labels are the column names.
    A heavy-tailed axis (all positive, spanning a factor of 30 or more, its median in the lowest
    fifth of its range: the pullback metric's λ_max, or a MIG where one family is an order of
    magnitude above the rest) is drawn on a log scale and fitted in log10, so one model does not
    flatten the rest. The axes hold the points (model and seed level) with a margin; the band is
    clipped to them, since a few high-leverage models can make the bootstrap lines fan out far
    beyond any data.
    """
    models = model_points(frame, x, y, family_column, model_column)
    if models.empty:
        raise ConfigError(f"no model has finite {x!r} and {y!r}: nothing to plot")
    seeds = frame[np.isfinite(frame[x].to_numpy(dtype=float)) & np.isfinite(frame[y].to_numpy(dtype=float))]
    fig = new_figure(5.2, 4.2)
    ax = fig.add_subplot()
    families = list(dict.fromkeys(models[family_column]))
    colours = {family: f"C{i % 10}" for i, family in enumerate(families)}
    for family in families:
        colour = colours[family]
        faint = seeds[seeds[family_column] == family]
        ax.scatter(faint[x], faint[y], s=14, color=colour, alpha=0.25, linewidths=0, label="_seeds")
        solid = models[models[family_column] == family]
        ax.scatter(solid[x], solid[y], s=40, color=colour, edgecolors="black", linewidths=0.5, label=str(family),
                   zorder=3)
    if annotate:
        for name, x_value, y_value in zip(models[model_column], models[x], models[y]):  # any column name
            ax.annotate(str(name), (x_value, y_value), fontsize=6, xytext=(3, 3), textcoords="offset points",
                        color="0.3")
    points = {column: np.concatenate([models[column].to_numpy(dtype=float), seeds[column].to_numpy(dtype=float)])
              for column in (x, y)}  # model and seed level
    log_x, log_y = (_wants_log(points[column]) for column in (x, y))
    fit_x, fit_y = (_scaled(models[column].to_numpy(dtype=float), log)
                    for column, log in ((x, log_x), (y, log_y)))
    line = (least_squares_fit(fit_x, fit_y, replicates, seed)
            if fit is None or fit is True else (fit if isinstance(fit, LineFit) else None))
    note = ""
    if line is not None:
        grid = _unscaled(line.grid, log_x)
        ax.plot(grid, _unscaled(line.intercept + line.slope * line.grid, log_y), color="0.2", lw=1.2, zorder=2,
                label="_fit")
        if np.all(np.isfinite(line.low)) and np.all(np.isfinite(line.high)):
            ax.fill_between(grid, _unscaled(line.low, log_y), _unscaled(line.high, log_y), color="0.5", alpha=0.2,
                            linewidth=0, label="_band")
        logged = " and ".join(name for name, log in (("x", log_x), ("y", log_y)) if log)
        note = f"line: least squares{f' in log10 {logged}' if logged else ''} over models, band: 95 % bootstrap"
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlim(*_limits(points[x], log_x))
    ax.set_ylim(*_limits(points[y], log_y))
    ax.set_xlabel(x + (" (log scale)" if log_x else ""))
    ax.set_ylabel(y + (" (log scale)" if log_y else ""))
    ax.set_title(title if title is not None else f"{y} against {x}", fontsize=10, loc="left", pad=12)
    if note:
        ax.text(0.0, 1.01, note, transform=ax.transAxes, fontsize=6, color="0.4", va="bottom", ha="left")
    ax.grid(alpha=0.3)
    ax.legend(title=family_column, fontsize=8, title_fontsize=8)
    save_figure(fig, path)
    return fig
