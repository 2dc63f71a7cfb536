"""The *models frame* of a study: one row per (model, seed) with its card's numbers and its
robustness, the input of :mod:`robust_vae.analysis.correlation`.

Columns: ``model`` (the study's name, e.g. ``cond-betavae@true``), ``family`` (the zoo card's),
``seed``, ``beta`` (the card's config value, NaN where it has none), then the card columns asked
for (a disentanglement score recorded by ``robust-vae disentanglement``, else a scalar of the
card's ``metrics`` such as ``recon_bce``), then the robustness columns asked for:

- ``<recipe>:<metric>`` from the model's finished run under that recipe (:data:`RUN_METRICS`);
- ``robustness:<column>`` from the model's report card folder (``robust-vae robustness``, or
  the study's own ``[robustness]`` cards: the per-example columns of its ``examples.csv``, e.g.
  ``margin``, ``damage_r1``).

NaN where a value is missing (no card, no score, no finished run, a run without AUDDC); such a
row stays in the frame and drops out only of the correlations that need the value.

Why means over a run's examples, pooled over its cells: the hierarchical bootstrap resamples each
model's per-example values (``ModelsFrame.examples``), which must average to the frame's value;
the study's own tables average the cells unweighted instead (equal when the cells are equal in
size, within a fraction of a point on the full test set).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from robust_vae.core.errors import ConfigError, ZooError
from robust_vae.evaluation.robustness import LATENT_COLUMNS, RobustnessSettings, example_columns
from robust_vae.zoo import Card, find_card

#: metric of ``<recipe>:<metric>`` -> (run file, its per-example column, what the mean is)
RUN_METRICS: dict[str, tuple[str, str, str]] = {
    "as_target": ("examples.csv.gz", "prediction", "AS target: fraction classified as the target"),
    "as_ignore_target": ("examples.csv.gz", "prediction", "AS ignore-target: fraction not classified as the source"),
    "auddc": ("examples.csv.gz", "auddc", "AUDDC of a swept attack (tabacof), lower = easier to attack"),
    "mean_l2": ("examples.csv.gz", "l2", "mean L2 norm of the perturbation"),
    "mean_linf": ("examples.csv.gz", "linf", "mean L∞ norm of the perturbation"),
    "mean_latent_distance": ("examples.csv.gz", "latent_distance", "mean latent distance to the target's code"),
    "mean_msssim_input": ("metrics.csv", "msssim_input", "mean MS-SSIM of input and adversarial"),
    "mean_msssim_reconstruction": ("metrics.csv", "msssim_reconstruction",
                                   "mean MS-SSIM of the clean and adversarial reconstructions"),
    "mean_symmetric_kl": ("metrics.csv", "symmetric_kl", "mean symmetric KL of the clean and adversarial posteriors"),
}
CARD_PREFIX = "robustness"
#: the report card's per-example columns (``damage_r<r>`` for any budget r besides)
CARD_COLUMNS = tuple(c for c in example_columns(RobustnessSettings()) if not c.startswith("damage_r")) \
    + LATENT_COLUMNS
_DAMAGE = re.compile(r"damage_r\d+(\.\d+)?(e-?\d+)?$")
#: placeholders of a ``robustness_cards`` folder template
CARD_FIELDS = ("model", "seed", "dataset", "model_dir")


def check_robustness_metric(name: str, recipes: Sequence[str], cards: bool) -> None:
    """ConfigError (one line, naming the valid ones) unless ``name`` is ``<recipe>:<metric>`` with a
    recipe of ``recipes``, or ``robustness:<column>`` and ``cards`` (report cards are read)."""
    prefix, _, metric = name.partition(":")
    if prefix == CARD_PREFIX:
        if not cards:
            raise ConfigError(f"[analysis] robustness {name!r} reads report cards: set robustness_cards "
                              f"(a folder template with {{{'}, {'.join(CARD_FIELDS)}}}) or add a [robustness] "
                              "table that makes them")
        if metric not in CARD_COLUMNS and not _DAMAGE.match(metric):
            raise ConfigError(f"[analysis] robustness {name!r}: unknown report-card column {metric!r}; known: "
                              f"damage_r<budget>, {', '.join(CARD_COLUMNS)}")
        return
    if prefix not in recipes:
        raise ConfigError(f"[analysis] robustness {name!r}: {prefix!r} is none of the study's recipes "
                          f"{sorted(set(recipes))} (write <recipe>:<metric> or robustness:<column>)")
    if metric not in RUN_METRICS:
        raise ConfigError(f"[analysis] robustness {name!r}: unknown metric {metric!r}; known: "
                          f"{', '.join(RUN_METRICS)}")


def check_card_template(template: str) -> None:
    """ConfigError unless ``template`` uses only the placeholders :data:`CARD_FIELDS`."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as error:
        raise ConfigError(f"[analysis] robustness_cards {template!r} is not a folder template ({error})") from None
    unknown = sorted(fields - set(CARD_FIELDS))
    if unknown:
        raise ConfigError(f"[analysis] robustness_cards {template!r}: unknown placeholder(s) {unknown}; "
                          f"known: {', '.join(CARD_FIELDS)}")


@dataclass(frozen=True)
class ModelRow:
    """One row of the frame: ``name`` as the study's tables give it, the zoo ``model`` and ``seed``."""

    name: str
    model: str
    seed: int


def card_folder(template: str, root: Path, row: ModelRow, dataset: str) -> Path:
    """The report card folder of ``row``: ``template`` filled in (``model_dir``: ``<model>`` for seed
    0, else ``<model>-seed<S>``, as ``robust-vae robustness`` names its folders), under ``root``
    unless absolute."""
    model_dir = row.model if row.seed == 0 else f"{row.model}-seed{row.seed}"
    return root / template.format(model=row.model, seed=row.seed, dataset=dataset, model_dir=model_dir)


@dataclass
class ModelsFrame:
    """``frame``: one row per :class:`ModelRow` (index 0..n−1; columns in the module docstring);
    ``examples``: column -> row index -> that row's per-example values (1-D, finite), whose mean is
    the frame's value; ``notes``: one line per missing value group, why it is missing."""

    frame: pd.DataFrame
    examples: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def card_value(card: Card, name: str) -> float:
    """A card's disentanglement score ``name``, else its scalar ``metrics`` entry, else its
    ``config`` value (``beta``); NaN if none is a number."""
    scores = card.disentanglement_scores
    if name in scores:
        return float(scores[name])
    for part in ("metrics", "config"):
        value = (card.data.get(part) or {}).get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return math.nan


def run_examples(folder: Path, metrics: Sequence[str]) -> dict[str, np.ndarray]:
    """metric -> per-example values (finite ones) of the finished run in ``folder``, for the
    :data:`RUN_METRICS` asked for; a metric whose column the run lacks (AUDDC of an unswept
    attack) is left out. ConfigError for an unreadable run."""
    wanted: dict[str, set[str]] = {}
    for metric in metrics:
        file, column, _ = RUN_METRICS[metric]
        wanted.setdefault(file, set()).add(column)
    wanted.setdefault("examples.csv.gz", set()).update({"source", "target"})
    tables = {}
    for file, columns in wanted.items():
        path = folder / file
        if not path.is_file():
            continue
        try:
            tables[file] = pd.read_csv(path, usecols=columns.__contains__)
        except (OSError, ValueError, EOFError, pd.errors.ParserError) as error:
            raise ConfigError(f"{path} cannot be read ({type(error).__name__}: {error}): rerun its run") from None
    out: dict[str, np.ndarray] = {}
    for metric in metrics:
        file, column, _ = RUN_METRICS[metric]
        table = tables.get(file)
        if table is None or column not in table.columns:
            continue
        if metric == "as_target":
            values = (table["prediction"] == table["target"]).to_numpy(dtype=float)
        elif metric == "as_ignore_target":
            values = (table["prediction"] != table["source"]).to_numpy(dtype=float)
        else:
            values = table[column].to_numpy(dtype=float)
        out[metric] = values[np.isfinite(values)]
    return out


def card_examples(folder: Path, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """column -> per-example values (finite ones) of the report card in ``folder``
    (``examples.csv``, written by ``save_card``); {} where there is no card."""
    path = folder / "examples.csv"
    if not path.is_file():
        return {}
    try:
        table = pd.read_csv(path, usecols=set(columns).__contains__)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise ConfigError(f"{path} cannot be read ({type(error).__name__}: {error}): rerun `robust-vae robustness`") \
            from None
    out = {}
    for column in table.columns:
        values = table[column].to_numpy(dtype=float)
        out[column] = values[np.isfinite(values)]
    return out


def models_frame(rows: Sequence[ModelRow], dataset: str, card_columns: Sequence[str], robustness: Sequence[str],
                 runs: Mapping[tuple[str, int, str], Path],
                 cards: Callable[[ModelRow], Path] | None = None) -> ModelsFrame:
    """The :class:`ModelsFrame` of ``rows``: ``card_columns`` from each model's zoo card (seed
    ``row.seed`` of ``dataset``), ``robustness`` (``<recipe>:<metric>`` / ``robustness:<column>``)
    from ``runs`` ((name, seed, recipe) -> folder of a finished run) and from the report card
    folder ``cards(row)``. Values are NaN where missing; ``notes`` says why."""
    by_recipe: dict[str, list[str]] = {}
    for name in robustness:
        prefix, _, metric = name.partition(":")
        by_recipe.setdefault(prefix, []).append(metric)
    records: list[dict[str, object]] = []
    result = ModelsFrame(pd.DataFrame())
    missing: dict[tuple[str, str], list[str]] = {}  # (column, why) -> rows
    card_family: dict[str, str] = {}  # study name -> the family its cards give
    for i, row in enumerate(rows):
        label = f"{row.name} seed {row.seed}"
        try:
            card: Card | None = find_card(row.model, dataset, row.seed)
        except ZooError:
            card = None
            missing.setdefault(("", "no zoo card"), []).append(label)
        if card is not None:
            card_family.setdefault(row.name, str(card.data["family"]))
        record: dict[str, object] = {"model": row.name, "seed": row.seed,
                                     "family": str(card.data["family"]) if card is not None else None}
        for column in ("beta", *card_columns):
            value = card_value(card, column) if card is not None else math.nan
            record[column] = value
            if card is not None and math.isnan(value) and column != "beta":
                missing.setdefault((column, "not in the card"), []).append(label)
        values: dict[str, np.ndarray] = {}
        for prefix, metrics in by_recipe.items():
            if prefix == CARD_PREFIX:
                found = card_examples(cards(row), metrics) if cards is not None else {}
                absent = "no report card" if not found else "not in the report card"
            else:
                folder = runs.get((row.name, row.seed, prefix))
                found = run_examples(folder, metrics) if folder is not None else {}
                absent = f"no finished {prefix} run" if folder is None else f"not recorded by its {prefix} run"
            for metric in metrics:
                column = f"{prefix}:{metric}"
                if metric in found and found[metric].size:
                    values[column] = found[metric]
                else:
                    missing.setdefault((column, absent), []).append(label)
        for column in robustness:
            array = values.get(column)
            record[column] = float(array.mean()) if array is not None else math.nan
            if array is not None:
                result.examples.setdefault(column, {})[i] = array
        records.append(record)
    # a seed not trained yet takes its family from a sibling seed's card (else its zoo name), so one name is one family
    for row, record in zip(rows, records):
        if record["family"] is None:
            record["family"] = card_family.get(row.name, row.model)
    columns = list(dict.fromkeys(["model", "family", "seed", "beta", *card_columns, *robustness]))
    result.frame = pd.DataFrame(records, columns=columns)
    result.notes = [(f"`{column}` missing for " if column else "card values missing for ")
                    + ("every model" if len(labels) == len(rows) else ", ".join(labels)) + f" ({why})"
                    for (column, why), labels in missing.items()]
    return result
