"""Render saved attack results as tables and figures (protocol §4).

Everything here is pure rendering over a *cells* table: a pandas DataFrame with one row per
ordered class pair (source != target) and the columns

``source, target`` (int), ``n_pairs, n, hits_target, hits_ignore_target`` (int),
``as_target, as_ignore_target`` (float in [0, 1], NaN when ``n == 0``),
``mean_l2, mean_linf, mean_latent_distance`` (float).

K classes make a K × K matrix of K(K − 1) cells, indexed by class index; a
:class:`~robust_vae.report.classes.ClassLabels` (``classes=``) adds the class names: a key line
under the Markdown tables and the names as the figures' tick labels.

Rates are stored as fractions in [0, 1] and shown as percentages. Figures are drawn on
``matplotlib.figure.Figure`` objects with the Agg canvas, so no pyplot state or GUI backend is
touched and nothing needs closing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from robust_vae.core.errors import DataError
from robust_vae.report.classes import ClassLabels
from robust_vae.report.tables import latex_escape, latex_table, markdown_table

Z_95 = 1.959963984540054
RATES = ("as_target", "as_ignore_target")
RATE_LABELS = {"as_target": "AS target", "as_ignore_target": "AS ignore-target"}
HITS = {"as_target": "hits_target", "as_ignore_target": "hits_ignore_target"}
MARGINAL_COLUMNS = ("as_target", "as_ignore_target", "mean_l2", "mean_linf")
METRIC_LABELS = {**RATE_LABELS, "mean_l2": "mean L2", "mean_linf": "mean L∞"}


# ------------------------------------------------------------------------- validation
def _check_columns(frame: pd.DataFrame, required: Iterable[str], what: str = "cells") -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{what} table lacks column(s) {missing}: expected the attack's cells table")


def _check_cells(cells: pd.DataFrame, required: Iterable[str] = ("source", "target")) -> None:
    _check_columns(cells, ("source", "target", *required))
    if cells.duplicated(["source", "target"]).any():
        raise DataError("cells table has duplicate (source, target) rows: one row per pair expected")
    if (cells["source"] == cells["target"]).any():
        raise DataError("cells table has a row with source == target: only ordered pairs s != t")


def num_classes_of(cells: pd.DataFrame, num_classes: int | None = None) -> int:
    """K = ``num_classes`` if given, else the largest class in ``cells`` plus one."""
    if num_classes is not None:
        return int(num_classes)
    if cells.empty:
        return 0
    return int(max(cells["source"].max(), cells["target"].max())) + 1


def _square(cells: pd.DataFrame, column: str, k: int) -> np.ndarray:
    """(K, K) float array of ``column`` indexed [source, target]; NaN where absent."""
    out = np.full((k, k), np.nan)
    src = cells["source"].to_numpy(int)
    tgt = cells["target"].to_numpy(int)
    inside = (src < k) & (tgt < k)
    out[src[inside], tgt[inside]] = cells[column].to_numpy(float)[inside]
    return out


# ------------------------------------------------------------------------- statistics
def wilson_interval(
    successes: Any, n: Any, z: float = Z_95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion, element-wise.

    ``successes`` and ``n`` broadcast; returns float arrays ``(lo, hi)`` in [0, 1], NaN where
    ``n == 0``. Formula: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), p = successes/n.
    """
    k = np.asarray(successes, dtype=float)
    m = np.asarray(n, dtype=float)
    k, m = np.broadcast_arrays(k, m)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / m
        z2 = z * z
        denom = 1.0 + z2 / m
        centre = (p + z2 / (2.0 * m)) / denom
        half = z * np.sqrt(p * (1.0 - p) / m + z2 / (4.0 * m * m)) / denom
        lo = np.where(m > 0, centre - half, np.nan)
        hi = np.where(m > 0, centre + half, np.nan)
    return np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)


def add_intervals(cells: pd.DataFrame, z: float = Z_95) -> pd.DataFrame:
    """Copy of ``cells`` with ``as_target_lo/hi`` and ``as_ignore_target_lo/hi`` (Wilson, 95%)."""
    _check_cells(cells, ("n", *HITS.values()))
    out = cells.copy()
    for rate, hits in HITS.items():
        lo, hi = wilson_interval(out[hits].to_numpy(), out["n"].to_numpy(), z)
        out[f"{rate}_lo"] = lo
        out[f"{rate}_hi"] = hi
    return out


def marginals(cells: pd.DataFrame) -> pd.DataFrame:
    """Per-source, per-target and overall marginals of the cell rates and distances.

    Each marginal is the *unweighted* mean over cells (the thesis's definition), skipping NaN.
    Columns: ``kind`` ("source" | "target" | "overall"), ``cls`` (int, -1 for overall),
    ``as_target``, ``as_ignore_target``, ``mean_l2``, ``mean_linf``.
    """
    _check_cells(cells, MARGINAL_COLUMNS)
    values = cells[list(MARGINAL_COLUMNS)].astype(float)
    parts = []
    for kind in ("source", "target"):
        grouped = values.groupby(cells[kind].astype(int)).mean()
        grouped = grouped.rename_axis("cls").reset_index()
        grouped.insert(0, "kind", kind)
        parts.append(grouped)
    overall = pd.DataFrame([values.mean()])
    overall.insert(0, "cls", -1)
    overall.insert(0, "kind", "overall")
    parts.append(overall)
    out = pd.concat(parts, ignore_index=True)
    out["cls"] = out["cls"].astype(int)
    return out[["kind", "cls", *MARGINAL_COLUMNS]]


def marginal_intervals(
    cells: pd.DataFrame, metric: str = "as_target", kind: str = "source"
) -> pd.DataFrame:
    """Per-class mean of the cells' Wilson bounds: columns ``cls``, ``lo``, ``hi`` (fractions).

    A descriptive band for :func:`plot_marginal_bars`, averaged like the marginals
    (unweighted over cells, NaN skipped); not an exact interval for the mean rate.
    """
    if metric not in RATES:
        raise ValueError(f"metric must be one of {RATES}, got {metric!r}")
    if kind not in ("source", "target"):
        raise ValueError(f"kind must be 'source' or 'target', got {kind!r}")
    framed = add_intervals(cells)
    bounds = framed[[f"{metric}_lo", f"{metric}_hi"]]
    means = bounds.groupby(framed[kind].astype(int)).mean()
    means.columns = ["lo", "hi"]
    return means.rename_axis("cls").reset_index()


# ------------------------------------------------------------------------- formatting
def _pct(x: float, latex: bool = False) -> str:
    """``0.1234 -> "12.34%"`` (``"12.34\\%"`` for LaTeX); NaN -> ``"n/a"``."""
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{100.0 * x:.2f}" + ("\\%" if latex else "%")


def _num(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _cell_pair(cells: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
    _check_cells(cells, RATES)
    return _square(cells, "as_ignore_target", k), _square(cells, "as_target", k)


def matrix_strings(cells: pd.DataFrame, num_classes: int | None = None) -> pd.DataFrame:
    """K×K table of thesis strings ``"ignore% (target%)"``; diagonal ``"-"``, missing ``"n/a"``.

    Index ``source`` and columns ``target`` are the ints 0..K-1.
    """
    k = num_classes_of(cells, num_classes)
    ignore, target = _cell_pair(cells, k)
    table = [[_thesis_string(s, t, ignore, target) for t in range(k)] for s in range(k)]
    frame = pd.DataFrame(table, index=pd.Index(range(k), name="source"),
                         columns=pd.Index(range(k), name="target"))
    return frame


def _thesis_string(s: int, t: int, ignore: np.ndarray, target: np.ndarray,
                   latex: bool = False) -> str:
    if s == t:
        return "-"
    if not (np.isfinite(ignore[s, t]) and np.isfinite(target[s, t])):
        return "n/a"
    a, b = _pct(ignore[s, t], latex), _pct(target[s, t], latex)
    return f"\\makecell{{{a} \\\\ ({b})}}" if latex else f"{a} ({b})"


def matrix_latex(
    cells: pd.DataFrame,
    caption: str = "Adversarial success per source/target pair: AS ignore-target (AS target).",
    label: str = "tab:as-matrix",
    num_classes: int | None = None,
    classes: ClassLabels | None = None,
) -> str:
    """The thesis appendix matrix (Tables 7.1–7.3) as a LaTeX ``table``.

    Rows = source, columns = target, cells ``\\makecell{12.34\\% \\\\ (5.67\\%)}``, diagonal
    ``-``, missing ``n/a``. ``caption`` and ``label`` are inserted verbatim (raw LaTeX); named
    ``classes`` append their key to the caption. K is ``num_classes``, else
    ``classes.num_classes``, else the largest class in ``cells`` plus one.
    Needs ``booktabs`` and ``makecell``.
    """
    k = num_classes_of(cells, num_classes if num_classes is not None else
                       classes.num_classes if classes is not None else None)
    ignore, target = _cell_pair(cells, k)
    rows = [[str(s), *(_thesis_string(s, t, ignore, target, latex=True) for t in range(k))] for s in range(k)]
    return latex_table(f"c{'c' * k}", ["Source $\\backslash$ Target", *(str(t) for t in range(k))], rows,
                       caption=caption + latex_key(classes, range(k)), label=label,
                       packages=("booktabs", "makecell"), size="scriptsize")


def latex_key(classes: ClassLabels | None, shown: Iterable[int] | None = None) -> str:
    """`` Classes: 0 = T-shirt/top, ...`` (escaped, with a leading space) to append to a LaTeX
    caption when ``classes`` are named; ``""`` otherwise."""
    key = classes.key(shown) if classes is not None else ""
    return f" {latex_escape(key)}" if key else ""


# ------------------------------------------------------------------------- marginal tables
def _source_rows(marginals_by_run: Mapping[str, pd.DataFrame]) -> tuple[list[int], list[str]]:
    """Sorted union of source classes over runs, and the run names in order."""
    if not marginals_by_run:
        raise ValueError("marginals_by_run is empty: give at least one run")
    classes: set[int] = set()
    for name, frame in marginals_by_run.items():
        _check_columns(frame, ("kind", "cls", *RATES), what=f"marginals of {name!r}")
        classes |= set(frame.loc[frame["kind"] == "source", "cls"].astype(int))
    return sorted(classes), list(marginals_by_run)


def _marginal_value(frame: pd.DataFrame, kind: str, cls: int, column: str) -> float:
    hit = frame.loc[(frame["kind"] == kind) & (frame["cls"] == cls), column]
    return float(hit.iloc[0]) if len(hit) else float("nan")


def _side_by_side(marginals_by_run: Mapping[str, pd.DataFrame]) -> tuple[list[str], list[list[float]]]:
    """Row labels ("0".."K-1", "Mean") and, per row, [run1 target, run1 ignore, run2 ...]."""
    classes, runs = _source_rows(marginals_by_run)
    keys = [("source", c) for c in classes] + [("overall", -1)]
    labels = [str(c) for c in classes] + ["Mean"]
    values = [[_marginal_value(marginals_by_run[r], kind, cls, m) for r in runs for m in RATES]
              for kind, cls in keys]
    return labels, values


def marginals_latex(
    marginals_by_run: Mapping[str, pd.DataFrame],
    caption: str = "Adversarial success per source class (mean over targets).",
    label: str = "tab:as-marginals",
    classes: ClassLabels | None = None,
) -> str:
    """Thesis Tables 5.1–5.3: one row per source class plus "Mean", two columns per run.

    With several runs each gets a ``\\multicolumn`` group header (run names are escaped);
    ``caption``/``label`` are verbatim LaTeX (named ``classes`` append their key). The "Mean"
    row is each run's ``overall`` marginal. Needs ``booktabs``.
    """
    labels, values = _side_by_side(marginals_by_run)
    runs = list(marginals_by_run)
    above: list[str] = []
    if len(runs) > 1:
        groups = [f"\\multicolumn{{2}}{{c}}{{{latex_escape(r)}}}" for r in runs]
        rules = "".join(f"\\cmidrule(lr){{{2 + 2 * i}-{3 + 2 * i}}}" for i in range(len(runs)))
        above = [" & " + " & ".join(groups) + " \\\\", rules]
    header = ["Source", *("AS target & AS ignore-target" for _ in runs)]
    rows = [[name, *(_pct(v, latex=True) for v in row)] for name, row in zip(labels, values)]
    key = latex_key(classes, _source_rows(marginals_by_run)[0])
    return latex_table(f"c{'rr' * len(runs)}", header, rows, caption=caption + key, label=label,
                       above_header=above, midrule_before={len(rows) - 1})


def _run_columns(runs: Sequence[str]) -> list[str]:
    return [f"{r} {RATE_LABELS[m]}" for r in runs for m in RATES]


def marginals_markdown(marginals_by_run: Mapping[str, pd.DataFrame], classes: ClassLabels | None = None) -> str:
    """The side-by-side marginals table as GitHub Markdown (percent, two decimals); with named
    ``classes``, the key line of its class indices below it."""
    labels, values = _side_by_side(marginals_by_run)
    header = ["source", *_run_columns(list(marginals_by_run))]
    rows = [[name, *(_pct(v) for v in row)] for name, row in zip(labels, values)]
    table = markdown_table(header, rows, align="l" + "r" * (len(header) - 1))
    return _with_key(table, classes, _source_rows(marginals_by_run)[0])


def _with_key(text: str, classes: ClassLabels | None, shown: Iterable[int] | None = None) -> str:
    """``text`` and, when ``classes`` are named, their key line as a paragraph below it."""
    key = classes.key(shown) if classes is not None else ""
    return f"{text}\n\n{key}" if key else text


def marginals_csv_frame(marginals_by_run: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The side-by-side marginals table as a DataFrame for CSV.

    Column ``source`` holds strings "0".."K-1" and "Mean"; then ``"<run> AS target"``,
    ``"<run> AS ignore-target"`` per run, in percent rounded to 2 decimals (NaN if absent).
    """
    labels, values = _side_by_side(marginals_by_run)
    frame = pd.DataFrame(values, columns=_run_columns(list(marginals_by_run)))
    frame = (frame * 100.0).round(2)
    frame.insert(0, "source", labels)
    return frame


def _auddc_rows(auddc_by_run: Mapping[str, pd.DataFrame]) -> tuple[list[str], list[list[float]]]:
    """Row labels (source classes, "Mean") and per row [run1 AUDDC, lo, hi, run2 ...] from
    :func:`robust_vae.evaluation.curves.auddc_summary` tables."""
    if not auddc_by_run:
        raise ValueError("auddc_by_run is empty: give at least one swept run")
    classes = sorted({int(c) for f in auddc_by_run.values() for c in f.loc[f["scope"] == "source", "cls"]})

    def pick(frame: pd.DataFrame, scope: str, cls: int | None) -> list[float]:
        rows = frame[(frame["scope"] == scope) & ((frame["cls"].astype(str) == str(cls)) if cls is not None else True)]
        return [float(rows[c].iloc[0]) if len(rows) else float("nan") for c in ("auddc", "auddc_lo", "auddc_hi")]

    values = [[v for f in auddc_by_run.values() for v in pick(f, "source", c)] for c in classes]
    values.append([v for f in auddc_by_run.values() for v in pick(f, "all", None)])
    return [str(c) for c in classes] + ["Mean"], values


def auddc_csv_frame(auddc_by_run: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """AUDDC per source class (unweighted mean over its cells) and over the run, side by side:
    column ``source`` ("0".."K-1", "Mean"), then ``"<run> AUDDC"``, ``"<run> AUDDC lo"`` and
    ``"<run> AUDDC hi"`` per run (95 % bootstrap interval), rounded to 4 decimals."""
    labels, values = _auddc_rows(auddc_by_run)
    columns = [f"{r} AUDDC{end}" for r in auddc_by_run for end in ("", " lo", " hi")]
    frame = pd.DataFrame(values, columns=columns).round(4)
    frame.insert(0, "source", labels)
    return frame


def auddc_markdown(auddc_by_run: Mapping[str, pd.DataFrame], classes: ClassLabels | None = None) -> str:
    """:func:`auddc_csv_frame` as GitHub Markdown, one "mean [lo, hi]" column per run."""
    labels, values = _auddc_rows(auddc_by_run)

    def show(x: float) -> str:
        return "n/a" if not np.isfinite(x) else f"{x:.3f}"

    header = ["source", *(f"{r} AUDDC" for r in auddc_by_run)]
    rows = [[name, *(f"{show(row[i])} [{show(row[i + 1])}, {show(row[i + 2])}]" for i in range(0, len(row), 3))]
            for name, row in zip(labels, values)]
    table = markdown_table(header, rows, align="l" + "r" * (len(header) - 1))
    note = ("AUDDC: area under the normalised distortion–distance curve (lower = easier to attack); "
            "per source class the unweighted mean over its cells, 95 % bootstrap intervals over examples.")
    return _with_key(f"{table}\n\n{note}", classes, [int(c) for c in labels[:-1]])


# ------------------------------------------------------------------------- summary
def _metadata_lines(metadata: Mapping[str, Any]) -> list[str]:
    def show(value: Any) -> str:
        if isinstance(value, (dict, list, tuple)):
            return "`" + json.dumps(value, default=str) + "`"
        return str(value)

    return [f"- **{key}**: {show(value)}" for key, value in metadata.items()]


def _overall_lines(cells: pd.DataFrame, marg: pd.DataFrame) -> list[str]:
    framed = add_intervals(cells)
    lines = []
    for rate in RATES:
        overall = _marginal_value(marg, "overall", -1, rate)
        lo, hi = framed[f"{rate}_lo"].mean(), framed[f"{rate}_hi"].mean()
        lines.append(f"- **{RATE_LABELS[rate]}**: {_pct(overall)} "
                     f"(mean of per-cell 95% Wilson bounds: {_pct(lo)} – {_pct(hi)})")
    pairs = f"{int(cells['n'].sum())} kept"
    if "n_pairs" in cells.columns:
        pairs += f" of {int(cells['n_pairs'].sum())} sampled"
    lines.append(f"- **pairs**: {pairs} over {len(cells)} cells")
    return lines


def _source_marginal_table(marg: pd.DataFrame, classes: ClassLabels | None = None) -> str:
    rows = []
    picks = [("source", int(c)) for c in sorted(marg.loc[marg["kind"] == "source", "cls"])]
    for kind, cls in picks + [("overall", -1)]:
        name = "Mean" if kind == "overall" else str(cls)
        rates = [_pct(_marginal_value(marg, kind, cls, m)) for m in RATES]
        dists = [_num(_marginal_value(marg, kind, cls, m)) for m in ("mean_l2", "mean_linf")]
        rows.append([name, *rates, *dists])
    header = ["source", *(RATE_LABELS[m] for m in RATES), "mean L2", "mean L∞"]
    return _with_key(markdown_table(header, rows, align="lrrrr"), classes, [c for _, c in picks])


def _matrix_markdown(cells: pd.DataFrame, classes: ClassLabels | None = None) -> str:
    strings = matrix_strings(cells, classes.num_classes if classes is not None else None)
    header = ["source \\ target", *(str(t) for t in strings.columns)]
    rows = [[str(s), *strings.loc[s].tolist()] for s in strings.index]
    return _with_key(markdown_table(header, rows, align="l" + "r" * len(strings.columns)), classes, strings.index)


def summary_markdown(
    cells: pd.DataFrame, marginals: pd.DataFrame, title: str, metadata: Mapping[str, Any],
    classes: ClassLabels | None = None,
) -> str:
    """A short Markdown report: title, metadata, overall rates, per-source table, matrix.

    ``classes``: K for the matrix (else the largest class in ``cells`` plus one) and, when
    named, a key line of the class indices under each table.
    """
    _check_cells(cells, ("n", *HITS.values(), *RATES))
    parts = [
        f"# {title}",
        "\n".join(_metadata_lines(metadata)) if metadata else "_no metadata_",
        "## Overall (unweighted mean over cells)",
        "\n".join(_overall_lines(cells, marginals)),
        "## Per source class (mean over targets)",
        _source_marginal_table(marginals, classes),
        "## Success matrix: AS ignore-target (AS target)",
        _matrix_markdown(cells, classes),
    ]
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------- figures
def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure on the Agg canvas (nothing global to close)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)


def _tick_labels(classes: ClassLabels | None, shown: Sequence[int]) -> tuple[list[str], dict[str, Any]]:
    """Tick labels of the classes ``shown`` (names when ``classes`` are named, else indices) and
    the text keywords that draw them rotated when they are long."""
    labels = classes.ticks(shown) if classes is not None else [str(int(c)) for c in shown]
    rotated = classes is not None and classes.rotate_ticks(shown)
    return labels, ({"rotation": 45, "ha": "right", "rotation_mode": "anchor"} if rotated else {})


def _draw_heatmap(ax: Any, values: np.ndarray, title: str, cmap: Any, labels: ClassLabels | None = None) -> Any:
    """One K×K heatmap of percentages; NaN cells grey, annotated except the diagonal (smaller
    text beyond 10 classes)."""
    k = values.shape[0]
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=100.0)
    fontsize = 7 if k <= 10 else max(3.0, 70.0 / k)
    for s in range(k):
        for t in range(k):
            if s == t:
                continue
            v = values[s, t]
            text = "n/a" if not np.isfinite(v) else f"{v:.1f}"
            colour = "white" if np.isfinite(v) and v < 55 else "black"
            ax.text(t, s, text, ha="center", va="center", fontsize=fontsize, color=colour)
    if labels is not None and labels.named:
        ticks, style = _tick_labels(labels, range(k))
        ax.set_xticks(range(k), ticks, **style)
        ax.set_yticks(range(k), ticks)
    else:
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    ax.set_title(title)
    return image


def plot_heatmaps(cells: pd.DataFrame, path: str | Path, title: str = "",
                  num_classes: int | None = None, classes: ClassLabels | None = None) -> None:
    """Save a PNG with AS target and AS ignore-target heatmaps side by side (0–100%).

    K is ``num_classes``, else ``classes.num_classes``, else the largest class in ``cells``
    plus one; named ``classes`` label the ticks.
    """
    import matplotlib

    k = num_classes_of(cells, num_classes if num_classes is not None else
                       classes.num_classes if classes is not None else None)
    ignore, target = _cell_pair(cells, k)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    fig = new_figure(12.5, 5.6)
    axes = fig.subplots(1, 2)
    image = None
    for ax, values, rate in zip(axes, (target, ignore), RATES):
        image = _draw_heatmap(ax, 100.0 * values, f"{RATE_LABELS[rate]} (%)", cmap, classes)
    assert image is not None
    fig.colorbar(image, ax=list(axes), label="success rate (%)", shrink=0.85)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


EXAMPLE_COLUMNS = (("source", "source"), ("adversarial", "adversarial"),
                   ("reconstruction", "its reconstruction"), ("target", "target"))


def _as_image(array: Any) -> np.ndarray:
    """(H, W) or (1, H, W) -> (H, W); (3, H, W) -> (H, W, 3) for ``imshow``."""
    image = np.asarray(array, dtype=float)
    if image.ndim == 3 and image.shape[0] == 3:
        return np.transpose(image, (1, 2, 0))
    image = np.squeeze(image)
    if image.ndim != 2:
        raise ValueError(f"expected a (H, W), (1, H, W) or (3, H, W) image, got shape {np.shape(array)}")
    return image


def _example_label(row: Mapping[str, Any], classes: ClassLabels | None = None) -> str:
    def name(c: Any) -> str:
        return classes.name(int(c)) if classes is not None and classes.named else str(int(c))

    label = f"{name(row['source'])} → {name(row['target'])}"
    predicted = row.get("predicted", row["images"].get("predicted"))
    gap = "\n" if classes is not None and classes.named else " "  # names: the prediction on a line of its own
    return label if predicted is None else f"{label}{gap}(pred {name(predicted)})"


def plot_examples(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "",
                  classes: ClassLabels | None = None) -> None:
    """Save a PNG grid: one row per example, columns source / adversarial / reconstruction / target.

    Each row: ``source``, ``target`` (int), ``images`` = dict of (H, W), (1, H, W) or (3, H, W) arrays
    in [0, 1] under "source", "adversarial", "reconstruction", "target"; optional
    ``predicted`` (int, in the row or in ``images``) is shown in the row label, by name when
    ``classes`` are named.
    """
    if not rows:
        raise ValueError("plot_examples needs at least one row")
    fig = new_figure(4 * 1.7 + 0.6, len(rows) * 1.7 + (0.4 if title else 0.0))
    axes = np.atleast_2d(fig.subplots(len(rows), 4, squeeze=False))
    for i, row in enumerate(rows):
        for j, (key, heading) in enumerate(EXAMPLE_COLUMNS):
            ax = axes[i, j]
            ax.imshow(_as_image(row["images"][key]), cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(heading, fontsize=10)
        axes[i, 0].set_ylabel(_example_label(row, classes), fontsize=10)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def plot_marginal_bars(
    marginals_by_run: Mapping[str, pd.DataFrame],
    path: str | Path,
    metric: str = "as_target",
    intervals: Mapping[str, pd.DataFrame] | None = None,
    title: str = "",
    classes: ClassLabels | None = None,
) -> None:
    """Save a PNG of grouped bars per source class, one colour per run.

    ``metric`` is a marginals column (rates are drawn in percent). ``intervals`` maps run
    name to a DataFrame with ``cls``, ``lo``, ``hi`` in the metric's own units (fractions for
    rates), e.g. from :func:`marginal_intervals`; runs absent from it get no error bars.
    Named ``classes`` label the bars by name.
    """
    if metric not in MARGINAL_COLUMNS:
        raise ValueError(f"metric must be one of {MARGINAL_COLUMNS}, got {metric!r}")
    sources, runs = _source_rows(marginals_by_run)
    scale = 100.0 if metric in RATES else 1.0
    width = 0.8 / len(runs)
    x = np.arange(len(sources))
    fig = new_figure(max(6.0, 1.0 + 0.35 * len(sources) * len(runs)), 4.2)
    ax = fig.subplots()
    top = 0.0
    for i, run in enumerate(runs):
        heights = np.array([_marginal_value(marginals_by_run[run], "source", c, metric)
                            for c in sources])
        yerr = _bar_errors(intervals, run, sources, heights)
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, heights * scale, width, label=run,
               yerr=None if yerr is None else yerr * scale, capsize=2)
        tips = heights if yerr is None else heights + yerr[1]
        top = max(top, float(np.nanmax(tips, initial=0.0)) * scale)
    ticks, style = _tick_labels(classes, sources)
    ax.set_xticks(x, ticks, **style)
    ax.set_xlabel("source")
    ax.set_ylabel(METRIC_LABELS[metric] + (" (%)" if scale != 1.0 else ""))
    if scale != 1.0:  # rates: 0 to 100 % unless every bar is far below (small rates stay readable)
        ax.set_ylim(0, min(100.0, max(10.0, 1.15 * top)))
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    save_figure(fig, path)


def _bar_errors(intervals: Mapping[str, pd.DataFrame] | None, run: str,
                classes: Sequence[int], heights: np.ndarray) -> np.ndarray | None:
    """(2, K) non-negative [below, above] error lengths, or None without intervals."""
    if not intervals or run not in intervals:
        return None
    frame = intervals[run]
    _check_columns(frame, ("cls", "lo", "hi"), what=f"intervals of {run!r}")
    by_cls = frame.set_index(frame["cls"].astype(int))
    lo = by_cls["lo"].reindex(classes).to_numpy(float)
    hi = by_cls["hi"].reindex(classes).to_numpy(float)
    errors = np.vstack([heights - lo, hi - heights])
    clipped: np.ndarray = np.nan_to_num(np.clip(errors, 0.0, None), nan=0.0)
    return clipped
