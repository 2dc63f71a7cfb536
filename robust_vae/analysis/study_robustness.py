"""A study's ``[robustness]``: the classifier-free report cards (``robust-vae robustness``,
:mod:`robust_vae.evaluation.robustness`) of its models, one per model seed, made by the study.

Each card goes to ``<study folder>/robustness/<model>-seed<S>/`` (:data:`CARD_TEMPLATE`): the
:data:`~robust_vae.evaluation.robustness.CARD_FILES` with ``config.json`` (the fingerprint) and
``progress/`` (its finished units), so an interrupted card resumes unit by unit. A card folder is

- ``done`` when it holds a finished card of the same fingerprint (the zoo weights' and the data's
  sha256, the latent classifier's, the settings): it is reused, not recomputed;
- ``partial`` when some units of that fingerprint are saved (making it resumes);
- ``new`` when nothing is computed yet (its fingerprint is not even computed to say so);
- ``skipped`` when the model seed is not in the zoo (with the command that trains it);
- ``conflict`` when it holds units of another configuration (the study stops before making anything).

The cards are made locally, one after another, after the study's runs, also when the runs go to a
Dask cluster (a card is minutes of one process; its latent classifier is cached on the machine).
``results.md`` gets a section with one row per card and the means of its headline metrics, and
``robustness/cards.csv`` holds every summary metric of every finished card (mean, interval, n).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from robust_vae.core.errors import ConfigError, ZooError
from robust_vae.core.paths import relative_path
from robust_vae.evaluation.robustness import (
    RobustnessSettings,
    card_progress,
    radius_column,
    save_card,
    zoo_card_fingerprint,
    zoo_robustness,
)
from robust_vae.models import FAMILIES, get_family
from robust_vae.models.conditional import is_conditional
from robust_vae.report.robustness import number
from robust_vae.report.tables import markdown_table
from robust_vae.zoo import find_card

FOLDER = "robustness"
#: the study's own card folders, relative to the study folder (an ``[analysis] robustness_cards`` template)
CARD_TEMPLATE = FOLDER + "/{model}-seed{seed}"
SETTING_KEYS = tuple(f.name for f in fields(RobustnessSettings))
#: the keys of ``[robustness]``
ROBUSTNESS_KEYS = ("models", "seeds", "latent_accuracy", *SETTING_KEYS)
STATES = ("done", "partial", "new", "skipped", "conflict")
LATENT_KEY = "latent_classifier_sha256"
#: the summary metrics of results.md's means table ("damage": at the metric radius), with headers
MEAN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("damage", "max damage at r"),
    ("margin", "margin"),
    ("margin_bound", "margin bound"),
    ("maxdamage_msssim_reconstruction", "MS-SSIM x̂ (max damage)"),
    ("unsupervised_msssim_reconstruction", "MS-SSIM x̂ (unsup.)"),
    ("pullback_lambda_max", "λ_max"),
    ("maxdamage_latent_correct", "latent acc. (max damage)"),
)


@dataclass(frozen=True)
class CardSpec:
    """One report card of the study: zoo ``model`` seed ``seed``, written to ``folder``."""

    model: str
    seed: int
    folder: Path


@dataclass(frozen=True)
class RobustnessPlan:
    """A parsed ``[robustness]`` table: the settings of every card, whether the cards measure the
    latent-classifier accuracy, and the cards (model seeds in file order)."""

    settings: RobustnessSettings
    latent_accuracy: bool
    cards: tuple[CardSpec, ...]


@dataclass
class CardStatus:
    """Where one card stands: one of :data:`STATES`, with why (skipped, conflict) or how far (partial)."""

    spec: CardSpec
    state: str
    reason: str = ""
    units_done: int = 0


def train_hint(model: str, dataset: str, seed: int) -> str:
    """Why a model seed is skipped: not in the zoo, and the command that trains it."""
    how = (f"robust-vae train --model {model} --dataset {dataset} --seed {seed}" if model in FAMILIES else
           f"a variant: robust-vae train --model FAMILY --dataset {dataset} --seed {seed} "
           f"--set KEY=VALUE --name {model}")
    return f"model {model} seed {seed} is not in the zoo yet (train it: {how})"


# ----------------------------------------------------------------------------- the table
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_settings(table: dict[str, Any], where: str) -> RobustnessSettings:
    """The :class:`RobustnessSettings` of a ``[robustness]`` table (its defaults for the keys it
    lacks); a one-line ConfigError naming the key for a wrong type or value."""
    defaults = RobustnessSettings()
    values: dict[str, Any] = {}
    for key in SETTING_KEYS:
        if key not in table:
            continue
        value, default, w = table[key], getattr(defaults, key), f"{where}: [robustness] {key}"
        if isinstance(default, tuple):
            if not isinstance(value, list) or not value or not all(_is_number(v) for v in value):
                raise ConfigError(f"{w} must be a non-empty list of numbers, e.g. [0.5, 1.0], got {value!r}")
            value = tuple(float(v) for v in value)
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"{w} must be a string, got {value!r}")
        elif isinstance(default, int):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{w} must be a whole number, got {value!r}")
        elif not _is_number(value):
            raise ConfigError(f"{w} must be a number, got {value!r}")
        else:
            value = float(value)
        values[key] = value
    try:
        return RobustnessSettings(**values)
    except ConfigError as error:
        raise ConfigError(f"{where}: [robustness] {str(error).removeprefix('robustness: ')}") from None


def read_robustness(table: Any, where: str, runs: Sequence[tuple[str, int, str | None]], out: Path) -> RobustnessPlan:
    """Check a ``[robustness]`` table against the study's runs ((model, seed, label source) each)
    and place its cards under ``out/robustness/``; every problem is a one-line ConfigError.

    ``models`` default to every model of the runs without label sources, ``seeds`` to each
    model's seeds in the runs; a conditional model (runs with label sources) is refused, since a
    card has no label threat model."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [robustness] must be a table of keys {', '.join(ROBUSTNESS_KEYS)}")
    unknown = sorted(set(table) - set(ROBUSTNESS_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown [robustness] key(s) {unknown}; known: {', '.join(ROBUSTNESS_KEYS)}")
    conditional = list(dict.fromkeys(model for model, _, source in runs if source is not None))
    run_models = list(dict.fromkeys(model for model, _, _ in runs))
    if "models" in table:
        value = table["models"]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where}: [robustness] models must be a non-empty list of names, e.g. [\"vae\"], "
                              f"got {value!r}")
        models = list(dict.fromkeys(value))
        refused = [m for m in models if m in conditional]
        if refused:
            raise ConfigError(f"{where}: [robustness] models {refused} are conditional (their runs have "
                              "label_sources): a report card has no label threat model; leave them out")
        strange = [m for m in models if m not in run_models]
        if strange:
            raise ConfigError(f"{where}: [robustness] models {strange} are not models of the study's [[runs]]; "
                              f"known: {', '.join(m for m in run_models if m not in conditional)}")
    else:
        models = [m for m in run_models if m not in conditional]
        if not models:
            raise ConfigError(f"{where}: [robustness] has no model to make a card of: every model of the runs is "
                              "conditional (label_sources)")
    if "seeds" in table:
        value = table["seeds"]
        if not isinstance(value, list) or not value or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            raise ConfigError(f"{where}: [robustness] seeds must be a non-empty list of whole numbers >= 0, "
                              f"e.g. [0, 1], got {value!r}")
        seeds: dict[str, list[int]] = {m: list(dict.fromkeys(value)) for m in models}
    else:
        seeds = {m: list(dict.fromkeys(seed for model, seed, _ in runs if model == m)) for m in models}
    latent = table.get("latent_accuracy", True)
    if not isinstance(latent, bool):
        raise ConfigError(f"{where}: [robustness] latent_accuracy must be true or false, got {latent!r}")
    settings = read_settings(table, where)
    cards = tuple(CardSpec(m, s, out / CARD_TEMPLATE.format(model=m, seed=s)) for m in models for s in seeds[m])
    return RobustnessPlan(settings, latent, cards)


# ----------------------------------------------------------------------------- card status
def card_status(plan: RobustnessPlan, spec: CardSpec, dataset: str, data_dir: str | None = None) -> CardStatus:
    """Where ``spec``'s card stands (:data:`STATES`). Its fingerprint is computed only when its
    folder holds one to compare with, and never trains anything (a latent classifier no longer
    cached leaves the card's own recorded one standing: the cache is regenerable)."""
    try:
        card = find_card(spec.model, dataset, spec.seed)
    except ZooError:
        return CardStatus(spec, "skipped", train_hint(spec.model, dataset, spec.seed))
    family = card.data.get("family")
    if isinstance(family, str) and is_conditional(get_family(family)):
        raise ConfigError(f"[robustness]: {spec.model} is conditioned on the class label (family {family}): a report "
                          "card has no label threat model; leave it out of [robustness] models")
    config = spec.folder / "config.json"
    if not config.is_file():
        return CardStatus(spec, "new")
    expected = zoo_card_fingerprint(spec.model, dataset, spec.seed, plan.settings, data_dir=data_dir,
                                    latent_accuracy=plan.latent_accuracy)
    if plan.latent_accuracy and LATENT_KEY not in expected:  # not cached (any more): the card's own stands
        with contextlib.suppress(OSError, ValueError):
            stored = json.loads(config.read_text())
            if isinstance(stored, dict):  # a card made without one differs in it
                expected[LATENT_KEY] = stored.get(LATENT_KEY, "none cached yet")
    progress = card_progress(spec.folder, expected)
    return CardStatus(spec, progress.state, progress.reason, progress.units_done)


def cards_status(plan: RobustnessPlan | None, dataset: str, data_dir: str | None = None) -> list[CardStatus]:
    """:func:`card_status` of every card of ``plan`` ([] without a ``[robustness]`` table)."""
    return [] if plan is None else [card_status(plan, spec, dataset, data_dir) for spec in plan.cards]


def settings_line(plan: RobustnessPlan) -> str:
    """The cards' settings in one line."""
    s = plan.settings
    return (f"{s.examples} test examples per card (seed {s.seed}); {s.norm.upper()} max-damage budgets r ∈ "
            f"{{{', '.join(f'{r:g}' for r in s.radii)}}}, PGD {s.steps} steps × {s.restarts} restarts; metrics at "
            f"r = {s.metric_radius:g}; r-robustness threshold {s.threshold:g}, {s.samples} posterior samples, "
            f"margin bisection over [0, {s.max_budget:g}] in {s.bisection_steps} steps; unsupervised attack "
            f"{s.power_iterations} power iterations; latent-classifier accuracy: "
            f"{'yes' if plan.latent_accuracy else 'no'}")


def format_cards(statuses: Sequence[CardStatus], root: Path | None = None) -> str:
    """The ``--dry-run`` listing of the cards, below the runs table."""
    lines = [f"{'robustness card':<24}{'seed':>5}  {'state':<10}detail"]
    for st in statuses:
        lines.append(f"{st.spec.model:<24}{st.spec.seed:>5}  {st.state:<10}"
                     f"{st.reason or relative_path(st.spec.folder, root)}")
    counts = {s: sum(st.state == s for st in statuses) for s in STATES}
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items() if v) + " robustness card(s)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- making cards
def make_missing_cards(plan: RobustnessPlan, statuses: Sequence[CardStatus], dataset: str, command: str, *,
                       device: str = "cpu", data_dir: str | None = None,
                       log: Callable[[str], Any] = print) -> list[CardSpec]:
    """Make every ``new`` or ``partial`` card (resuming partial ones) with the card's progress bar,
    one after another; ``command`` (the study's) is recorded in each. A card another process finished
    since ``statuses`` were read is kept as it is. Returns those made."""
    todo = [st for st in statuses if st.state in ("new", "partial")]
    made = []
    for i, st in enumerate(todo, 1):
        spec = st.spec
        if card_status(plan, spec, dataset, data_dir).state == "done":  # finished meanwhile by another process
            log(f"[{i}/{len(todo)}] the robustness card of {spec.model} seed {spec.seed}: finished meanwhile, kept")
            continue
        verb = "resuming" if st.state == "partial" else "making"
        log(f"[{i}/{len(todo)}] {verb} the robustness card of {spec.model} seed {spec.seed} in {spec.folder}")
        card = zoo_robustness(spec.model, dataset, spec.seed, plan.settings, device=device, data_dir=data_dir,
                              out=spec.folder, progress_bar=True, latent_accuracy=plan.latent_accuracy)
        save_card(card, spec.folder, command)
        made.append(spec)
    return made


# ----------------------------------------------------------------------------- reporting
Summaries = dict[CardSpec, tuple[pd.DataFrame, dict[str, Any]]]  # spec -> (summary.csv, card.json)


def card_summaries(statuses: Sequence[CardStatus]) -> Summaries:
    """spec -> (summary.csv, card.json) of every finished card, in order (an unreadable one is left out)."""
    found = {}
    for st in statuses:
        if st.state != "done":
            continue
        with contextlib.suppress(OSError, ValueError, pd.errors.ParserError):
            record = json.loads((st.spec.folder / "card.json").read_text())
            found[st.spec] = (pd.read_csv(st.spec.folder / "summary.csv"), record)
    return found


def write_cards_table(summaries: Summaries, out: Path) -> Path | None:
    """``out/robustness/cards.csv``: every summary metric of every finished card (``summaries``:
    :func:`card_summaries`; long format: model, seed, metric, mean, low, high, n); None when no
    card is finished."""
    if not summaries:
        return None
    frame = pd.concat([summary.assign(model=spec.model, seed=spec.seed) for spec, (summary, _) in summaries.items()])
    path = out / FOLDER / "cards.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[["model", "seed", "metric", "mean", "low", "high", "n"]].to_csv(path, index=False, float_format="%.6f")
    return path


def cards_markdown(plan: RobustnessPlan, statuses: Sequence[CardStatus], summaries: Summaries, root: Path) -> str:
    """results.md's section: the settings, one row per card, the means of the finished ones
    (``summaries``: :func:`card_summaries` of ``statuses``)."""
    rows = []
    for st in statuses:
        record = summaries.get(st.spec, (None, {}))[1]
        rows.append([st.spec.model, str(st.spec.seed), st.state, str(record.get("num_examples", "")),
                     st.reason or f"`{relative_path(st.spec.folder, root)}`"])
    lines = [f"Classifier-free report cards (`robust-vae robustness`): {settings_line(plan)}.", "",
             markdown_table(["model", "seed", "state", "examples", "folder / note"], rows, align="lrlrl")]
    if summaries:
        radius = plan.settings.metric_radius
        columns = [(c, h) for c, h in MEAN_COLUMNS if c != "maxdamage_latent_correct" or plan.latent_accuracy]
        header = ["model", "seed", *(f"{h}={radius:g}" if c == "damage" else h for c, h in columns)]
        body = []
        for spec, (summary, _) in summaries.items():
            means = dict(zip(summary["metric"], summary["mean"]))
            body.append([spec.model, str(spec.seed),
                         *(number(float(means.get(radius_column(radius) if c == "damage" else c, math.nan)))
                           for c, _ in columns)])
        lines += ["", "Means over each card's examples (intervals and every metric: each folder's `card.md`; "
                  f"all cards: `{FOLDER}/cards.csv`):", "",
                  markdown_table(header, body, align="lr" + "r" * len(columns))]
    return "\n".join(lines) + "\n"
