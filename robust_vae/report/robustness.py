"""Tables and figures of classifier-free robustness report cards (``robust-vae robustness``).

One card: ``card.md`` / ``card.tex`` (every metric's mean with its 95 % bootstrap interval, then
the class means) and ``damage.png`` (mean max damage against the budget r, with the band). Several
cards (one per model): :func:`models_markdown` / :func:`models_latex`, one row per model with the
headline numbers, and :func:`damage_figure` with one curve per model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robust_vae.report.success import new_figure, save_figure
from robust_vae.report.tables import latex_escape, latex_table, markdown_table

# column -> label of the summary tables; damage columns get theirs from the radius
LABELS: dict[str, str] = {
    "maxdamage_msssim_input": "MS-SSIM(x, x*), max damage",
    "maxdamage_msssim_reconstruction": "MS-SSIM(x̂, x̂*), max damage",
    "maxdamage_symmetric_kl": "symmetric KL, max damage",
    "unsupervised_msssim_input": "MS-SSIM(x, x*), unsupervised",
    "unsupervised_msssim_reconstruction": "MS-SSIM(x̂, x̂*), unsupervised",
    "unsupervised_symmetric_kl": "symmetric KL, unsupervised",
    "unsupervised_latent_shift": "‖μ(x*) − μ(x)‖, unsupervised",
    "margin": "r-robustness margin",
    "margin_broken_at_max": "share broken within the largest budget",
    "margin_bound": "Camuto et al. lower bound on the margin",
    "clean_probability": "P(‖f(x) − f(x)‖ ≤ r) without attack",
    "pullback_lambda_max": "pullback metric λ_max",
    "pullback_entropy": "pullback metric spectral entropy",
    "latent_correct_clean": "latent-classifier accuracy, clean",
    "maxdamage_latent_correct": "latent-classifier accuracy, max damage",
    "unsupervised_latent_correct": "latent-classifier accuracy, unsupervised",
}
# the headline columns of the one-row-per-model table, with short headers
HEADLINE: tuple[tuple[str, str], ...] = (
    ("damage", "max damage at r"),
    ("margin", "margin"),
    ("margin_bound", "bound"),
    ("maxdamage_msssim_reconstruction", "MS-SSIM x̂"),
    ("maxdamage_symmetric_kl", "sym. KL"),
    ("unsupervised_symmetric_kl", "sym. KL (unsup.)"),
    ("pullback_lambda_max", "λ_max"),
    ("pullback_entropy", "entropy"),
    ("latent_correct_clean", "latent acc."),
    ("maxdamage_latent_correct", "latent acc. (max damage)"),
)


def label(column: str) -> str:
    if column.startswith("damage_r"):
        return f"max damage ‖x̂(x+d) − x̂(x)‖ at r = {column[len('damage_r'):]}"
    return LABELS.get(column, column)


def number(value: float, digits: int = 4) -> str:
    """A table cell: ``digits`` significant digits, "–" for NaN."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}g}"


def interval(row: Mapping[str, Any]) -> str:
    return f"{number(row['mean'])} [{number(row['low'])}, {number(row['high'])}]"


def _settings_lines(metadata: Mapping[str, Any]) -> list[str]:
    s = metadata["settings"]
    radii = ", ".join(f"{r:g}" for r in s["radii"])
    return [
        f"- examples: {metadata['num_examples']:,} test images of {metadata['dataset']} (seed {s['seed']})",
        f"- max damage: {s['norm'].upper()} budgets r ∈ {{{radii}}}, PGD {s['steps']} steps × {s['restarts']} restarts",
        f"- metrics at r = {s['metric_radius']:g}; unsupervised attack: top singular direction of J_μ "
        f"({s['power_iterations']} power iterations)",
        f"- r-robustness: threshold r = {s['threshold']:g} (L2 between stochastic reconstructions), "
        f"{s['samples']} posterior samples per probability, bisection over [0, {s['max_budget']:g}] in "
        f"{s['bisection_steps']} steps",
        "- intervals: 95 % percentile bootstrap over examples",
    ]


def card_markdown(summary: pd.DataFrame, per_class: pd.DataFrame, metadata: Mapping[str, Any],
                  command: str | None = None) -> str:
    """``card.md``: identity and settings, every metric with its interval, then class means."""
    title = f"# Robustness report card: {metadata.get('model', 'model')} on {metadata['dataset']}"
    lines = [title, "", *_settings_lines(metadata)]
    if command:
        lines += ["", f"Command: `{command}`"]
    rows = [[label(row["metric"]), interval(row), f"{int(row['n']):,}"] for _, row in summary.iterrows()]
    lines += ["", "## Per model (mean [95 % interval])", "", markdown_table(("metric", "mean [95 % CI]", "n"), rows, "lrr")]
    columns = [c for c in per_class.columns if c not in ("label", "n")]
    shown = [c for c in columns if c.startswith("damage_r") or c in dict(HEADLINE)]
    class_rows = [[int(row["label"]), int(row["n"]), *[number(row[c]) for c in shown]] for _, row in per_class.iterrows()]
    lines += ["", "## Per class (means)", "", markdown_table(("class", "n", *[_short(c) for c in shown]), class_rows)]
    return "\n".join(lines) + "\n"


def _short(column: str) -> str:
    if column.startswith("damage_r"):
        return f"damage r={column[len('damage_r'):]}"
    return dict(HEADLINE).get(column, column)


def card_latex(summary: pd.DataFrame, metadata: Mapping[str, Any]) -> str:
    """``card.tex``: the per-model table (metric, mean, interval)."""
    rows = [[latex_escape(label(row["metric"])), number(row["mean"]),
             f"[{number(row['low'])}, {number(row['high'])}]"] for _, row in summary.iterrows()]
    name = latex_escape(metadata.get("model", "model"))
    return latex_table("lrr", ("Metric", "Mean", "95\\% CI"), rows,
                       caption=f"Classifier-free robustness of {name} on {latex_escape(metadata['dataset'])}.",
                       label=f"tab:robustness-{metadata.get('model', 'model')}")


def headline_values(summary: pd.DataFrame, metadata: Mapping[str, Any]) -> list[str]:
    """The headline cells of one model (:data:`HEADLINE`), "mean [low, high]"."""
    by_metric = {row["metric"]: row for _, row in summary.iterrows()}
    radius = metadata["settings"]["metric_radius"]
    cells = []
    for column, _ in HEADLINE:
        key = f"damage_r{radius:g}" if column == "damage" else column
        cells.append(interval(by_metric[key]) if key in by_metric else "–")
    return cells


def models_markdown(cards: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]]) -> str:
    """One row per model (name -> (summary, metadata)), the headline numbers with intervals."""
    first = next(iter(cards.values()))[1]
    radius = first["settings"]["metric_radius"]
    header = ["model", *[h if c != "damage" else f"max damage at r={radius:g}" for c, h in HEADLINE]]
    rows = [[name, *headline_values(summary, metadata)] for name, (summary, metadata) in cards.items()]
    return markdown_table(header, rows, "l" + "r" * (len(header) - 1))


def models_latex(cards: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]]) -> str:
    first = next(iter(cards.values()))[1]
    radius = first["settings"]["metric_radius"]
    header = ["Model", *[latex_escape(h if c != "damage" else f"damage r={radius:g}") for c, h in HEADLINE]]
    rows = [[latex_escape(name), *[latex_escape(v) for v in headline_values(summary, metadata)]]
            for name, (summary, metadata) in cards.items()]
    return latex_table("l" + "r" * (len(header) - 1), header, rows, size="small",
                       caption=f"Classifier-free robustness on {latex_escape(first['dataset'])} "
                               "(mean [95\\% bootstrap CI]).", label="tab:robustness-models")


def damage_figure(curves: Mapping[str, pd.DataFrame], path: str | Path, norm: str = "l2") -> None:
    """Mean max damage against the budget r with the 95 % band, one curve per model.

    ``curves``: name -> summary frame (its ``damage_r*`` rows are the curve)."""
    fig = new_figure(5.0, 3.6)
    ax = fig.add_subplot()
    for name, summary in curves.items():
        rows = summary[summary["metric"].str.startswith("damage_r")]
        radii = np.array([float(m[len("damage_r"):]) for m in rows["metric"]])
        ax.plot(radii, rows["mean"], marker="o", label=name)
        ax.fill_between(radii, rows["low"], rows["high"], alpha=0.25)
    ax.set_xlabel(f"budget r ({'‖d‖₂' if norm == 'l2' else '‖d‖∞'})")
    ax.set_ylabel("max damage ‖x̂(x + d) − x̂(x)‖₂")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def margin_figure(examples: Mapping[str, pd.DataFrame], path: str | Path) -> None:
    """Per model, the margin estimate against Camuto et al.'s bound, one point per example."""
    fig = new_figure(4.6, 4.0)
    ax = fig.add_subplot()
    top = 0.0
    for name, frame in examples.items():
        ax.scatter(frame["margin_bound"], frame["margin"], s=6, alpha=0.5, label=name)
        top = max(top, float(np.nanmax(frame[["margin", "margin_bound"]].to_numpy())) if len(frame) else 0.0)
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--", label="estimate = bound")
    ax.set_xlabel("lower bound on the margin")
    ax.set_ylabel("estimated r-robustness margin")
    ax.grid(alpha=0.3)
    ax.legend(markerscale=2)
    save_figure(fig, path)
