"""A study's ``[analysis]``: does disentanglement predict robustness across its models?

From the study's models frame (:mod:`robust_vae.analysis.models_frame`) it writes into
``<study folder>/analysis/``:

- ``models.csv``: the frame itself (one row per model and seed);
- ``correlation.{csv,md,tex}``: every (disentanglement, robustness) pair with Spearman's ρ, the
  partial ρ controlling for ``control`` and their hierarchical-bootstrap 95 % intervals
  (:func:`robust_vae.analysis.correlation.bootstrap_correlation`); a point is a model (the mean
  over its seeds; the bootstrap resamples models, their seeds, then each seed's attacked
  examples), or with ``unit = "network"`` each trained network;
- ``scatter-<robustness>.png``: each robustness metric against the *headline* disentanglement
  metric (the first of the list that some model has), one figure per robustness metric rather
  than one per pair, so that the folder stays readable;
- ``beta-effect.{csv,md,tex}`` with ``beta_line``: ρ of every metric against β over that
  family's models (:func:`robust_vae.analysis.correlation.beta_effect`).

A pair that cannot be computed (fewer than 3 models with every value, a constant column) is
listed with its reason in the Markdown section instead of stopping the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robust_vae.analysis.convergence import HEADLINE_SCORES
from robust_vae.analysis.correlation import TABLE_COLUMNS, beta_effect, bootstrap_correlation, with_q_values
from robust_vae.analysis.models_frame import ModelsFrame, check_card_template, check_robustness_metric
from robust_vae.core.errors import ConfigError
from robust_vae.report.correlation import (
    DEFAULT_UNIT,
    UNIT_GROUPS,
    correlation_markdown,
    plot_correlation_scatter,
    save_correlation_tables,
    unit_levels,
    unit_points,
)
from robust_vae.report.html import slug

#: the keys of ``[analysis]``
ANALYSIS_KEYS = ("disentanglement", "robustness", "control", "beta_line", "bootstrap", "models",
                 "robustness_cards", "unit")
DEFAULT_CONTROL = "recon_bce"
FOLDER = "analysis"


@dataclass(frozen=True)
class Analysis:
    """A parsed ``[analysis]`` table (keys: :data:`ANALYSIS_KEYS`; see the README's table).

    ``models``: the study names whose rows enter (all when empty); ``robustness_cards``: the
    report card folder template (placeholders :data:`CARD_FIELDS`), relative to the study folder
    (by default the study's own cards when it has a ``[robustness]`` table). ``unit``: ``"model"``
    makes each model name one point (the mean over its seeds; the bootstrap resamples models, then
    their seeds), ``"network"`` each trained network (model × seed row)."""

    disentanglement: tuple[str, ...]
    robustness: tuple[str, ...]
    control: str | None
    beta_line: str | None
    bootstrap: int
    models: tuple[str, ...] = ()
    robustness_cards: str | None = None
    unit: str = DEFAULT_UNIT

    @property
    def groups(self) -> str | None:
        """The models-frame column that groups rows into points (None: every row a point)."""
        return UNIT_GROUPS[self.unit]

    @property
    def points(self) -> str:
        """What a point of ρ is, for the tables' key."""
        return unit_points(self.unit)

    @property
    def levels(self) -> str:
        """What the bootstrap resamples, in order, for the tables' key."""
        return unit_levels(self.unit)


def _strings(table: dict[str, Any], key: str, default: Sequence[str], where: str) -> tuple[str, ...]:
    value = table.get(key, list(default))
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: [analysis] {key} must be a non-empty list of names, got {value!r}")
    return tuple(dict.fromkeys(value))


def _string(table: dict[str, Any], key: str, default: str | None, where: str) -> str | None:
    value = table.get(key, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{where}: [analysis] {key} must be a non-empty string, got {value!r}")
    return value


def read_analysis(table: Any, where: str, recipes: Sequence[str], models: Sequence[str],
                  main_recipe: str, bootstrap: int, cards: str | None = None) -> Analysis:
    """Check an ``[analysis]`` table against the study's ``recipes`` and model names; every
    problem is a one-line ConfigError naming the key and the valid values. Defaults: the
    headline disentanglement scores, AS target and AS ignore-target of ``main_recipe``, control
    ``recon_bce``, the study's ``bootstrap``, and ``cards`` as ``robustness_cards`` (the
    template of the study's own report cards, when it makes some)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [analysis] must be a table of keys {', '.join(ANALYSIS_KEYS)}")
    unknown = sorted(set(table) - set(ANALYSIS_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown [analysis] key(s) {unknown}; known: {', '.join(ANALYSIS_KEYS)}")
    cards = _string(table, "robustness_cards", cards, where)
    if cards is not None:
        _located(where, check_card_template, cards)
    robustness = _strings(table, "robustness", [f"{main_recipe}:as_target", f"{main_recipe}:as_ignore_target"],
                          where)
    for name in robustness:
        _located(where, check_robustness_metric, name, recipes, cards is not None)
    disentanglement = _strings(table, "disentanglement", HEADLINE_SCORES, where)
    control = _string(table, "control", DEFAULT_CONTROL, where)
    if control in disentanglement:
        raise ConfigError(f"{where}: [analysis] control {control!r} is also a disentanglement metric: "
                          "control for another card metric")
    chosen = _strings(table, "models", models, where) if "models" in table else ()
    strange = [m for m in chosen if m not in models]
    if strange:
        raise ConfigError(f"{where}: [analysis] models {strange} are not models of the study; known: "
                          f"{', '.join(dict.fromkeys(models))}")
    unit = table.get("unit", DEFAULT_UNIT)
    if unit not in UNIT_GROUPS:
        raise ConfigError(f"{where}: [analysis] unit must be one of {', '.join(map(repr, UNIT_GROUPS))}, got {unit!r}")
    replicates = table.get("bootstrap", bootstrap)
    if not isinstance(replicates, int) or isinstance(replicates, bool) or replicates < 1:
        raise ConfigError(f"{where}: [analysis] bootstrap must be a whole number >= 1, got {replicates!r}")
    return Analysis(disentanglement=disentanglement, robustness=robustness, control=control,
                    beta_line=_string(table, "beta_line", None, where), bootstrap=replicates, models=chosen,
                    robustness_cards=cards, unit=unit)


def _located(where: str, check: Any, *args: Any) -> None:
    """Run ``check(*args)``, prefixing its ConfigError with the study file."""
    try:
        check(*args)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


# ----------------------------------------------------------------------------- the report
@dataclass
class AnalysisReport:
    """What :func:`write_analysis` made: the files, the figures (also in ``written``), the
    correlation and β-effect tables (:data:`TABLE_COLUMNS`) and the results.md section."""

    written: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    correlation: pd.DataFrame | None = None
    beta_effect: pd.DataFrame | None = None
    markdown: str = ""


def _usable(frame: pd.DataFrame, columns: Sequence[str], notes: list[str], groups: str | None = None) -> list[str]:
    """The columns that at least 3 points (rows, or values of column ``groups``) have a finite
    value of; a line in ``notes`` for each of the others, unless a note already says that no
    model has it."""
    kept = []
    for column in columns:
        finite = np.isfinite(frame[column].to_numpy(dtype=float))
        count = int(finite.sum()) if groups is None else int(frame.loc[finite, groups].nunique())
        if count >= 3:
            kept.append(column)
        elif not (count == 0 and any(note.startswith(f"`{column}` missing for every model") for note in notes)):
            notes.append(f"`{column}` left out: {count} model(s) have it, a rank correlation needs 3")
    return kept


def correlation_rows(models: ModelsFrame, xs: Sequence[str], ys: Sequence[str], control: str | None,
                     replicates: int, seed: int, notes: list[str], groups: str | None = None) -> pd.DataFrame:
    """One :data:`TABLE_COLUMNS` row per (x, y) pair that can be computed (as
    ``correlation_table``, but a pair that cannot is a line in ``notes``, not an error). Where
    only the partial ρ is undefined (x or y a monotone function of the control), the row keeps
    the raw ρ over the same models, with no control. ``groups``: as in ``bootstrap_correlation``;
    the q-values are over the rows returned."""
    frame = models.frame
    controlled = frame if control is None else frame[np.isfinite(frame[control].to_numpy(dtype=float))]
    rows = []
    for x in xs:
        for y in ys:
            pair_control = None if control in (x, y) else control
            try:
                rows.append(bootstrap_correlation(frame, x, y, pair_control, models.examples, replicates, seed,
                                                  groups).row())
                continue
            except ConfigError as error:
                if pair_control is None or "monotone function" not in str(error):
                    notes.append(f"`{x}` vs `{y}`: {error}")
                    continue
                notes.append(f"`{x}` vs `{y}`: no partial ρ, {error}")
            rows.append(bootstrap_correlation(controlled, x, y, None, models.examples, replicates, seed, groups).row())
    return with_q_values(pd.DataFrame(rows, columns=list(TABLE_COLUMNS)))


def write_analysis(analysis: Analysis, models: ModelsFrame, out: Path, seed: int = 0) -> AnalysisReport:
    """Write the files of the module docstring into ``out/analysis/`` from ``models``; bootstrap
    seeded by ``seed``. Returns them and the results.md section (links relative to ``out``)."""
    folder = out / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rep = AnalysisReport()
    frame = models.frame
    frame.to_csv(folder / "models.csv", index=False)
    rep.written.append(folder / "models.csv")
    notes = list(models.notes)
    control = analysis.control
    if control is not None and not _usable(frame, [control], notes, analysis.groups):
        control = None  # no partial ρ
    xs = _usable(frame, analysis.disentanglement, notes, analysis.groups)
    ys = _usable(frame, analysis.robustness, notes, analysis.groups)
    table = correlation_rows(models, xs, ys, control, analysis.bootstrap, seed, notes, analysis.groups)
    lines = [unit_sentence(analysis, frame, seed) + (f", and the partial ρ controlling for the card's `{control}`"
                                                     if control else "") + ".", ""]
    if len(table):
        rep.correlation = table
        rep.written += save_correlation_tables(table, folder, "correlation", points=analysis.points,
                                               levels=analysis.levels).values()
        lines += [correlation_markdown(table, points=analysis.points, levels=analysis.levels).rstrip(), "",
                  f"Tables: `{FOLDER}/correlation.csv`, `.md`, `.tex`."]
    else:
        lines.append("No pair could be computed (see below).")
    headline = xs[0] if xs else None
    if headline is not None:
        for y in ys:
            path = folder / f"scatter-{slug(y)}.png"
            try:
                plot_correlation_scatter(frame, headline, y, path, seed=seed)
            except ConfigError as error:
                notes.append(f"scatter of `{y}` against `{headline}`: {error}")
                continue
            rep.figures.append(path)
            rep.written.append(path)
    if rep.figures:
        lines += ["", f"Each robustness metric against `{headline}` (the first disentanglement metric 3 models have):",
                  "", *[f"![{p.stem}]({FOLDER}/{p.name})" for p in rep.figures]]
    if analysis.beta_line is not None:
        lines += _write_beta_effect(analysis, [*xs, *ys, *([control] if control else [])], models, seed, folder,
                                    rep, notes)
    if notes:
        lines += ["", "Not computed or missing:", "", *[f"- {note}" for note in notes]]
    rep.markdown = "\n".join(lines) + "\n"
    return rep


def unit_sentence(analysis: Analysis, frame: pd.DataFrame, seed: int) -> str:
    """What a point of the correlation is and how the interval is drawn, for results.md."""
    rows = f"the {len(frame)} model × seed rows of `{FOLDER}/models.csv`"
    points = (f"{rows}, each trained network one point" if analysis.groups is None else
              f"the {frame[analysis.groups].nunique()} models, each the mean over its seeds of {rows}")
    return (f"Points: {points} (`unit = \"{analysis.unit}\"`); Spearman ρ across them with 95 % hierarchical-bootstrap "
            f"intervals ({analysis.bootstrap} replicates, seed {seed}: {analysis.levels})")


def _write_beta_effect(analysis: Analysis, columns: Sequence[str], models: ModelsFrame, seed: int,
                       folder: Path, rep: AnalysisReport, notes: list[str]) -> list[str]:
    """beta-effect.{csv,md,tex}: ρ of each of ``columns`` against β over the models of
    ``analysis.beta_line``; its Markdown lines."""
    family = str(analysis.beta_line)
    frame = models.frame
    lines = ["", f"### β effect along {family}", ""]
    line = frame[(frame["family"] == family) & np.isfinite(frame["beta"].to_numpy(dtype=float))]
    if line["beta"].nunique() < 2 or len(line) < 3:
        notes.append(f"β effect: {len(line)} model(s) of family {family} with {line['beta'].nunique()} distinct β; "
                     "it needs 3 models and 2 values of β")
        return [*lines, "Not computed (see below)."]
    rows = []
    for y in columns:
        try:
            rows.append(beta_effect(frame, "beta", y=y, family=family, examples=models.examples,
                                    replicates=analysis.bootstrap, seed=seed, groups=analysis.groups).row())
        except ConfigError as error:
            notes.append(f"β effect on `{y}` along {family}: {error}")
    if not rows:
        return [*lines, "Not computed (see below)."]
    table = with_q_values(pd.DataFrame(rows, columns=list(TABLE_COLUMNS)))
    rep.beta_effect = table
    rep.written += save_correlation_tables(table, folder, "beta-effect", points=analysis.points,
                                           levels=analysis.levels).values()
    return [*lines, f"Spearman ρ of each metric against β over the {family} {analysis.points}:", "",
            correlation_markdown(table, points=analysis.points, levels=analysis.levels).rstrip(), "",
            f"Tables: `{FOLDER}/beta-effect.csv`, `.md`, `.tex`."]
