"""Distortion–distance curves (Tabacof et al. 2016) and AUDDC (Gondim-Ribeiro et al. 2018) of
any swept targeted attack (e.g. ``tabacof``: one L-BFGS-B solution per value of C).

Per example and sweep entry k the raw curve point is (‖d_k‖₂, ‖x̂(x*_k) − x_t‖₂), where
d_k = x*_k − x_s and x̂ is the deterministic reconstruction that the success matrix judges.
AUDDC normalises both axes per example,

    x = ‖d‖ / ‖x_s − x_t‖,   y = (‖x̂(x*) − x_t‖ − ‖x̂(x_t) − x_t‖) / (‖x̂(x_s) − x_t‖ − ‖x̂(x_t) − x_t‖),

keeps the points with 0 ≤ x ≤ 1, clips y to [0, 1], sorts by x, starts the curve at (0, 1)
(zero distortion: x* = x_s, whose normalised distance is 1 by definition), appends
(max x, min y) and (1, min y), and integrates by the trapezoid rule. An attack that cannot move
the reconstruction scores 1; lower means the model is easier to attack. An example whose
source reconstruction is no farther from the target than the target's own (the denominator
≤ 0) has no AUDDC (NaN) and is left out of the means.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from robust_vae.attacks.base import AttackResult

CURVE_KEYS = ("curve_distortion", "curve_distance", "curve_input_distance", "curve_source_distance",
              "curve_target_distance")
CURVE_COLUMNS = ["source", "target", "source_index", "target_index", "sweep_index", "sweep_value",
                 "distortion", "distance", "x", "y"]
GRID = np.linspace(0.0, 1.0, 101)  # where the mean curve of the figure is evaluated


def _flat_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    distance: torch.Tensor = (a - b).flatten(1).double().norm(dim=1)
    return distance


@torch.no_grad()
def sweep_curve_arrays(reconstruct: Callable[[torch.Tensor], torch.Tensor], result: AttackResult,
                       source: torch.Tensor, target: torch.Tensor) -> dict[str, np.ndarray]:
    """The raw curve of every example of a sweep ``result`` (K entries over N examples) with
    ``source``/``target`` (N, C, H, W), judged by ``reconstruct`` (the model's deterministic
    reconstruction, (N, C, H, W) -> (N, C, H, W)): distortion and distance (N, K), and the three
    per-example distances the normalisation needs (N,), all float64."""
    k = result.adversarial.shape[0]
    distances = [_flat_l2(reconstruct(result.adversarial[i].to(target.device)), target) for i in range(k)]
    return {
        "curve_distortion": result.l2.double().t().cpu().numpy(),
        "curve_distance": torch.stack(distances, dim=1).cpu().numpy(),
        "curve_input_distance": _flat_l2(source, target).cpu().numpy(),
        "curve_source_distance": _flat_l2(reconstruct(source), target).cpu().numpy(),
        "curve_target_distance": _flat_l2(reconstruct(target), target).cpu().numpy(),
    }


def normalised(distortion: np.ndarray, distance: np.ndarray, input_distance: np.ndarray,
               source_distance: np.ndarray, target_distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gondim-Ribeiro's axes: x (N, K) = distortion / ‖x_s − x_t‖ and y (N, K), the distance moved
    from the source's reconstruction towards the target's (1: not at all, 0: all the way); NaN
    where a denominator is not positive."""
    distortion, distance = np.asarray(distortion, dtype=np.float64), np.asarray(distance, dtype=np.float64)
    scale = np.asarray(input_distance, dtype=np.float64)[:, None]
    floor = np.asarray(target_distance, dtype=np.float64)[:, None]
    span = np.asarray(source_distance, dtype=np.float64)[:, None] - floor
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(scale > 0, distortion / scale, np.nan)
        y = np.where(span > 0, (distance - floor) / span, np.nan)
    return x, y


def auddc(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Area under the normalised distortion–distance curve (N,) of the points x, y (N, K); NaN
    for an example whose y is undefined."""
    x, y = np.atleast_2d(np.asarray(x, dtype=np.float64)), np.atleast_2d(np.asarray(y, dtype=np.float64))
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    areas = np.full(x.shape[0], np.nan)
    for i in range(x.shape[0]):
        points = _curve(x[i], y[i])
        if points is not None:
            xs, ys = points
            areas[i] = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))
    return areas


def _curve(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """One example's curve as AUDDC integrates it (x non-decreasing from 0 to 1), or None."""
    if np.isnan(y).all():
        return None
    keep = np.isfinite(x) & np.isfinite(y) & (x >= 0.0) & (x <= 1.0)
    order = np.argsort(x[keep], kind="stable")
    xs = np.concatenate([[0.0], x[keep][order]])
    ys = np.concatenate([[1.0], np.clip(y[keep][order], 0.0, 1.0)])
    low = ys.min()
    return np.concatenate([xs, [xs.max(), 1.0]]), np.concatenate([ys, [low, low]])


def curves_table(examples: pd.DataFrame, arrays: dict[str, np.ndarray], sweep_values: list[float]) -> pd.DataFrame:
    """One row per (example, sweep entry): :data:`CURVE_COLUMNS`, raw and normalised; ``examples``
    gives the example keys in the order of ``arrays``' rows."""
    distortion = arrays["curve_distortion"]
    n, k = distortion.shape
    x, y = normalised(distortion, arrays["curve_distance"], arrays["curve_input_distance"],
                      arrays["curve_source_distance"], arrays["curve_target_distance"])
    keys = {c: np.repeat(examples[c].to_numpy(), k) for c in ("source", "target", "source_index", "target_index")}
    values = np.asarray(sweep_values, dtype=np.float64)
    return pd.DataFrame({**keys, "sweep_index": np.tile(np.arange(k), n), "sweep_value": np.tile(values, n),
                         "distortion": distortion.ravel(), "distance": arrays["curve_distance"].ravel(),
                         "x": x.ravel(), "y": y.ravel()}, columns=CURVE_COLUMNS)


def auddc_of_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Per example AUDDC from a :func:`curves_table` (its normalised columns): the example keys
    and ``auddc``, in the table's example order."""
    keys = ["source", "target", "source_index", "target_index"]
    k = int(curves["sweep_index"].max()) + 1 if len(curves) else 1
    n = len(curves) // k
    x = curves["x"].to_numpy(dtype=np.float64).reshape(n, k)
    y = curves["y"].to_numpy(dtype=np.float64).reshape(n, k)
    first = curves.iloc[::k][keys].reset_index(drop=True)
    return first.assign(auddc=auddc(x, y))


def cell_bootstrap_means(cells: list[np.ndarray], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(B, C) bootstrap means of each cell's values (a list of C arrays of finite numbers):
    every replicate resamples each cell's examples with replacement; NaN for an empty cell."""
    out = np.full((resamples, len(cells)), np.nan)
    for j, values in enumerate(cells):
        if values.size:
            out[:, j] = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    return out


def _cell_mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """The unweighted mean over cells, NaN cells skipped (as the AS rates average their cells)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # an all-NaN slice stays NaN
        mean: np.ndarray = np.nanmean(values, axis=axis)
    return mean


SUMMARY_COLUMNS = ["scope", "cls", "source", "target", "n", "n_undefined", "auddc", "auddc_lo", "auddc_hi"]


def auddc_summary(per_example: pd.DataFrame, *, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """AUDDC per cell, per source class, per target class and over the run, with 95 %
    percentile-bootstrap intervals that resample the examples inside every cell.

    ``per_example`` has ``source``, ``target`` and ``auddc`` (NaN where undefined). A cell's
    value is the mean over its examples; a class's and the run's (``scope`` "source", "target",
    "all") is the unweighted mean over their cells, as the AS rates are averaged, so a cell
    with many kept examples does not outweigh the others. ``n`` counts the examples with an
    AUDDC, ``n_undefined`` those without. The cells are fixed and only their examples are
    sampled, so with one example per cell (``--per-pair 1``) every interval has zero width.
    """
    frame = per_example[["source", "target", "auddc"]]
    keys = sorted({(int(s), int(t)) for s, t in zip(frame["source"], frame["target"])})
    grouped = {key: g["auddc"].to_numpy(dtype=np.float64) for key, g in frame.groupby(["source", "target"])}
    values = [grouped[key] for key in keys]
    finite = [v[np.isfinite(v)] for v in values]
    point = np.array([v.mean() if v.size else np.nan for v in finite])
    boot = cell_bootstrap_means(finite, resamples, np.random.default_rng(seed))
    sources = np.array([s for s, _ in keys])
    targets = np.array([t for _, t in keys])
    rows: list[dict[str, object]] = []

    def add(scope: str, cls: int | str, source: int | str, target: int | str, mask: np.ndarray) -> None:
        chosen = _cell_mean(boot[:, mask], axis=1)
        chosen = chosen[np.isfinite(chosen)]
        lo, hi = (np.quantile(chosen, [0.025, 0.975]) if chosen.size else (np.nan, np.nan))
        n = int(sum(finite[j].size for j in np.flatnonzero(mask)))
        total = int(sum(values[j].size for j in np.flatnonzero(mask)))
        rows.append({"scope": scope, "cls": cls, "source": source, "target": target, "n": n,
                     "n_undefined": total - n, "auddc": float(_cell_mean(point[mask])) if mask.any() else np.nan,
                     "auddc_lo": float(lo), "auddc_hi": float(hi)})

    for j, (s, t) in enumerate(keys):
        add("cell", "", s, t, np.arange(len(keys)) == j)
    for scope, ids in (("source", sources), ("target", targets)):
        for cls in sorted(set(ids.tolist())):
            add(scope, int(cls), "", "", ids == cls)
    add("all", "", "", "", np.ones(len(keys), dtype=bool))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def step_curves(curves: pd.DataFrame, grid: np.ndarray = GRID) -> np.ndarray:
    """Every example's normalised curve (as AUDDC integrates it) evaluated on ``grid``: (N, G),
    NaN rows for examples without one."""
    k = int(curves["sweep_index"].max()) + 1 if len(curves) else 1
    n = len(curves) // k
    x = curves["x"].to_numpy(dtype=np.float64).reshape(n, k)
    y = curves["y"].to_numpy(dtype=np.float64).reshape(n, k)
    out = np.full((n, grid.size), np.nan)
    for i in range(n):
        points = _curve(x[i], y[i])
        if points is None:
            continue
        xs, ys = points
        last = xs[-3]  # the largest kept x: the curve drops to its minimum there
        out[i] = np.where(grid <= last, np.interp(grid, xs[:-2], ys[:-2]), ys[-1])
    return out


def plot_mean_curve(curves: pd.DataFrame, path: str | Path, *, title: str = "", resamples: int = 1000,
                    seed: int = 0) -> None:
    """curve.png: the mean normalised distortion–distance curve over the run's examples with a
    95 % bootstrap band of the mean, and the run's AUDDC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = step_curves(curves)
    values = values[np.isfinite(values).all(axis=1)]
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    if len(values):
        mean = values.mean(axis=0)
        rng = np.random.default_rng(seed)
        means = np.stack([values[rng.integers(0, len(values), len(values))].mean(axis=0) for _ in range(resamples)])
        lo, hi = np.quantile(means, [0.025, 0.975], axis=0)
        area = float(np.trapezoid(mean, GRID))
        ax.fill_between(GRID, lo, hi, alpha=0.25, color="C0", linewidth=0, label="95 % bootstrap band")
        ax.plot(GRID, mean, color="C0", label=f"mean curve (area {area:.3f}, {len(values)} examples)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("distortion ‖d‖ / ‖x_s − x_t‖")
    ax.set_ylabel("normalised distance to the target")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)
