"""Figure and table of disentanglement scores over training snapshots (did they settle?).

Both take the frames of ``robust_vae.analysis.convergence`` (nothing here imports it): a
*trajectory* (one row per checkpoint: ``model, seed, step`` and score columns) and a
*settling* table (one row per model, seed and score: ``step_before, step_last, before, last,
change, settled``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from robust_vae.core.errors import ConfigError
from robust_vae.report.success import new_figure, save_figure
from robust_vae.report.tables import markdown_table


def plot_score_trajectories(trajectory: pd.DataFrame, scores: tuple[str, ...], path: str | Path,
                            tolerance: float | None = None) -> Figure:
    """One panel per score: its value against the training step, a line per (model, seed), the
    unmeasured checkpoints left out. ``tolerance`` shades ± tolerance around each line's last value
    (what "stopped changing" allows). Saved as a PNG at ``path``; returns the Figure."""
    shown = [s for s in scores if s in trajectory and np.isfinite(trajectory[s].to_numpy(dtype=float)).any()]
    if not shown:
        raise ConfigError("no checkpoint has a recorded disentanglement score: measure them first "
                          "(robust-vae disentanglement, or robust-vae convergence --measure)")
    columns = min(3, len(shown))
    rows = math.ceil(len(shown) / columns)
    fig = new_figure(3.3 * columns, 2.6 * rows)
    models = list(dict.fromkeys(zip(trajectory["model"], trajectory["seed"], strict=True)))
    colours = {model: f"C{i % 10}" for i, model in enumerate(dict.fromkeys(m for m, _ in models))}
    for i, score in enumerate(shown):
        ax = fig.add_subplot(rows, columns, i + 1)
        for model, seed in models:
            part = trajectory[(trajectory["model"] == model) & (trajectory["seed"] == seed)].sort_values("step")
            part = part[np.isfinite(part[score].to_numpy(dtype=float))]
            if part.empty:
                continue
            label = model if len(models) == len(colours) else f"{model} s{seed}"
            ax.plot(part["step"], part[score], marker="o", ms=3, lw=1.2, color=colours[model], label=label)
            if tolerance is not None:
                last = float(part[score].iloc[-1])
                ax.axhspan(last - tolerance, last + tolerance, color=colours[model], alpha=0.08, lw=0)
        ax.set_title(score, fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7, frameon=False)
    if tolerance is not None:
        fig.suptitle(f"band: last value ± {tolerance:g}", fontsize=8)
    save_figure(fig, path)
    return fig


def settling_markdown(settling: pd.DataFrame, tolerance: float) -> str:
    """The settling table in Markdown: one row per model, seed and score."""
    header = ["model", "seed", "score", "steps", "before", "last", "change", f"|change| < {tolerance:g}"]
    rows = [[f"`{r.model}`", r.seed, r.score, f"{r.step_before:,} → {r.step_last:,}", _number(r.before),
             _number(r.last), _number(r.change, signed=True), "yes" if r.settled else "no"]
            for r in settling.itertuples(index=False)]
    return markdown_table(header, rows, align="lrllrrrl")


def _number(value: float, signed: bool = False) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:+.4f}".replace("-", "\u2212") if signed else f"{value:.4f}"
