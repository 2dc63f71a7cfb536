"""A reproduction study as data: which runs to make, and which tables to draw from them.

``robust-vae study reports/mnist/study/study.toml`` (or ``python -m robust_vae study ...``)
runs every missing run of the study into ``<study folder>/runs/<model>-seed<S>/<recipe>/``
with the resumable ``robust-vae attack`` code, then writes, next to the study file:

- ``marginals.{csv,tex,md}``: side-by-side per-source marginals (mean over seeds) of the
  ``[marginals]`` models under the main recipe (the multi-run ``robust-vae report`` table);
- ``seeds.{csv,tex,md}``: per-seed overall rates and their spread;
- ``comparisons.{csv,tex,md}``: every ``[[comparisons]]`` entry (hierarchical bootstrap and
  paired tests, :mod:`robust_vae.analysis.comparison`), under the main recipe over all seeds and,
  with ``[attack_strength]``, under each other recipe at its seed;
- ``attacks.{csv,tex,md}`` and ``attacks-comparisons.{csv,tex,md}``: each model under each
  recipe, ranked, and every recipe against the baseline recipe;
- ``figures/*.png`` (marginal bars with intervals per model; attacks) and ``results.md``;
- with ``[robustness]``, ``robustness/<model>-seed<S>/``: each model seed's classifier-free
  report card (the files of ``robust-vae robustness``), made after the runs, and
  ``robustness/cards.csv``, every summary metric of every card
  (:mod:`robust_vae.analysis.study_robustness`);
- with ``[analysis]``, ``analysis/``: the models frame, correlation tables of disentanglement
  against robustness, scatter plots and the β effect (:mod:`robust_vae.analysis.study_analysis`).

A run whose folder holds a finished run of the same configuration is reused; a partial one
resumes; a model not in the zoo or a recipe not in ``attacks/`` is skipped with a message. The
report cards alike: a finished card of the same fingerprint (weights, data, latent classifier,
settings) is reused, a partial one resumes unit by unit, a model seed not in the zoo is skipped.
The cards are made locally, one after another, even when the runs go to a Dask cluster
(``--workers`` / ``--scheduler`` / ``--jobqueue``). ``--dry-run`` lists runs and cards and makes
nothing; ``--report-only`` writes the tables from what is finished.
Everything is rendered from the saved runs and cards, so rerunning the command reproduces the files.

The study file (TOML)::

    [study]
    dataset = "mnist"
    per_pair = 200            # pairs sampled per cell, or "full" for every test pair
    seed = 0                  # sampling and attack seed of every run
    main_recipe = "thesis"
    bootstrap = 2000          # replicates; bootstrap_seed, permutations also optional
    [study.set]               # optional overrides applied to every recipe (like --set)

    [[runs]]                  # the product models x seeds x recipes; repeatable
    models = ["vae", "jointvae"]
    seeds = [0, 1, 2]
    recipes = ["thesis"]
    per_pair = 5              # optional: this table's pairs per cell (expensive recipes)
    set = { divergence = "l2" }         # optional: this table's recipe overrides (over [study.set])
    label_sources = ["true", "classifier"]  # conditional models only: one run per threat model,
                              # named <model>@<label source> in the tables (cond-betavae@true)

    [marginals]               # side-by-side table and per-seed table
    models = ["vae", "jointvae"]
    [figures]                 # marginal bars per model (default: the [marginals] models)
    models = ["vae", "jointvae"]

    [[comparisons]]           # A vs B under the main recipe, every seed of each
    a = "jointvae"
    b = "vae"

    [attack_strength]         # optional: recipes compared on one seed of some models
    models = ["vae", "jointvae"]
    seed = 0
    recipes = ["thesis", "thesis-accumulate"]
    baseline = "thesis"

    [robustness]              # optional: classifier-free report cards, one per model seed
    models = ["vae", "betavae"]   # default: every model of the runs without label_sources
                              # (a conditional model is refused: a card has no label threat model)
    seeds = [0, 1]            # default: each model's seeds in the runs
    examples = 100            # any RobustnessSettings field: examples, norm, radii, metric_radius,
                              # threshold, samples, max_budget, bisection_steps, steps, restarts,
                              # power_iterations, unit_size, seed (defaults: robust-vae robustness's)
    latent_accuracy = true    # also the latent-classifier accuracy (default true)

    [analysis]                # optional: does disentanglement predict robustness? (README table)
    disentanglement = ["mig", "dci_disentanglement"]   # card scores (default: the headline six)
    robustness = ["thesis:as_target", "tabacof:auddc"] # <recipe>:<metric> or robustness:<column>
    control = "recon_bce"     # card metric of the partial correlation
    beta_line = "betavae"     # optional: the family whose β effect is tabulated
    robustness_cards = "../{model_dir}/robustness"     # report card folders (default with
                              # [robustness]: the study's own, robustness/{model}-seed{seed})
"""

from __future__ import annotations

import contextlib
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robust_vae.analysis.comparison import (
    Group,
    RunCounts,
    compare_groups,
    comparisons_markdown,
    group_marginals,
    save_comparisons,
)
from robust_vae.analysis.models_frame import ModelRow, card_folder, models_frame
from robust_vae.analysis.study_analysis import Analysis, read_analysis, write_analysis
from robust_vae.analysis.study_robustness import (
    CARD_TEMPLATE,
    CardSpec,
    CardStatus,
    RobustnessPlan,
    card_summaries,
    cards_markdown,
    cards_status,
    make_missing_cards,
    read_robustness,
    train_hint,
    write_cards_table,
)
from robust_vae.attacks import is_recipe, read_recipe
from robust_vae.core.errors import ConfigError, RobustVAEError, ZooError
from robust_vae.core.paths import relative_path
from robust_vae.evaluation.run_config import RunConfig
from robust_vae.evaluation.runner import run_attack
from robust_vae.report.classes import ClassLabels, for_dataset
from robust_vae.report.success import (
    RATE_LABELS,
    RATES,
    marginals_csv_frame,
    marginals_latex,
    marginals_markdown,
    new_figure,
    plot_marginal_bars,
    save_figure,
)
from robust_vae.report.tables import format_p, latex_escape, latex_table, markdown_table

STUDY_KEYS = {"name", "description", "dataset", "per_pair", "seed", "batch_size", "main_recipe",
              "bootstrap", "bootstrap_seed", "permutations", "runs_dir", "set"}
SECTIONS = {"study", "runs", "marginals", "figures", "comparisons", "attack_strength", "robustness", "analysis"}


# ----------------------------------------------------------------------------- the study file
@dataclass(frozen=True)
class RunSpec:
    """One run of the study: a model seed under a recipe, written to ``folder``."""

    model: str
    seed: int
    recipe: str
    folder: Path
    per_pair: int | None = None   # pairs sampled per cell; None: every test pair
    overrides: tuple[tuple[str, Any], ...] = ()  # this run's recipe overrides, over the study's
    label_source: str | None = None  # a conditional model's threat model

    @property
    def name(self) -> str:
        """The model as the study's tables name it: ``<model>@<label source>`` for a conditional one."""
        return self.model if self.label_source is None else f"{self.model}@{self.label_source}"

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.name, self.seed, self.recipe)


@dataclass
class Study:
    """A parsed study file (see the module docstring for the format)."""

    path: Path
    out_dir: Path
    dataset: str
    per_pair: int | None
    seed: int
    batch_size: int
    main_recipe: str
    bootstrap: int
    bootstrap_seed: int
    permutations: int
    overrides: dict[str, Any]
    runs: list[RunSpec]
    marginal_models: list[str]
    figure_models: list[str]
    comparisons: list[dict[str, str]]
    attack_strength: dict[str, Any] | None
    name: str = "study"
    description: str = ""
    command: str = ""  # the command line that makes this study's files (for results.md)
    raw: dict[str, Any] = field(default_factory=dict)
    analysis: Analysis | None = None  # the [analysis] table, if any
    robustness: RobustnessPlan | None = None  # the [robustness] table (the study's report cards), if any

    @property
    def runs_dir(self) -> Path:
        return self.out_dir / str(self.raw.get("study", {}).get("runs_dir", "runs"))

    @property
    def classes(self) -> ClassLabels:
        """The dataset's classes (noun in captions, key lines under class-indexed tables)."""
        return for_dataset(self.dataset)


def _need(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where} lacks {key!r}")
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ConfigError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def _names(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where} must be a list of names, e.g. [\"vae\", \"jointvae\"]")
    return list(value)


def _ints(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{where} must be a list of whole numbers, e.g. [0, 1, 2]")
    return list(value)


def _per_pair(value: Any, where: str) -> int | None:
    """A study file's per_pair: a whole number >= 1, or "full" (None: every test pair)."""
    if value == "full":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ConfigError(f"{where}: per_pair must be a whole number >= 1 or \"full\", got {value!r}")


def read_study(path: str | Path, per_pair: int | None = None, overrides: dict[str, Any] | None = None,
               out_dir: str | Path | None = None) -> Study:
    """Parse and check a study file; ``per_pair`` and ``overrides`` replace its values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {path} not found: pass the path of a study .toml "
                          "(e.g. reports/mnist/study/study.toml)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"study file {path} is not valid TOML: {error}") from None
    unknown = sorted(set(raw) - SECTIONS)
    if unknown:
        raise ConfigError(f"study file {path}: unknown section(s) {unknown}; known: {sorted(SECTIONS)}")
    head = raw.get("study", {})
    bad = sorted(set(head) - STUDY_KEYS)
    if bad:
        raise ConfigError(f"study file {path}: unknown [study] key(s) {bad}; known: {sorted(STUDY_KEYS)}")
    where = f"study file {path}"
    per_pair_value = _per_pair(head.get("per_pair", 200), where) if per_pair is None else per_pair
    numbers: dict[str, Any] = {}
    for key, default, low in (("seed", 0, 0), ("batch_size", 512, 1), ("bootstrap", 2000, 1),
                              ("bootstrap_seed", 0, 0), ("permutations", 10_000, 1)):
        value = head.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{where}: [study] {key} must be a whole number >= {low}, got {value!r}")
        numbers[key] = value
    set_values = dict(head.get("set", {}))
    set_values.update(overrides or {})
    out = Path(out_dir) if out_dir is not None else path.parent
    main_recipe = head.get("main_recipe", "thesis")
    runs_dir = out / head.get("runs_dir", "runs")

    specs: dict[tuple[str, int, str], RunSpec] = {}
    tables = raw.get("runs", [])
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{where} needs at least one [[runs]] table (models, seeds, recipes)")
    for i, table in enumerate(tables):
        w = f"{where}, [[runs]] #{i + 1}"
        known = ("models", "seeds", "recipes", "per_pair", "set", "label_sources")
        extra = sorted(set(table) - set(known))
        if extra:
            raise ConfigError(f"{w}: unknown key(s) {extra}; known: {', '.join(known)}")
        table_set = _need(table, "set", dict, w) if "set" in table else {}
        label_sources: list[str | None] = list(_names(table["label_sources"], f"{w} label_sources")) \
            if "label_sources" in table else [None]
        models = _names(_need(table, "models", list, w), f"{w} models")
        seeds = _ints(table.get("seeds", [0]), f"{w} seeds")
        recipes = _names(table.get("recipes", [main_recipe]), f"{w} recipes")
        # --per-pair replaces every table's value; otherwise a table may set its own
        table_per_pair = per_pair_value if per_pair is not None or "per_pair" not in table else \
            _per_pair(table["per_pair"], w)
        for model in models:
            for seed in seeds:
                for recipe in recipes:
                    for label_source in label_sources:
                        folder = model if label_source is None else f"{model}-{label_source}-label"
                        spec = RunSpec(model, seed, recipe, runs_dir / f"{folder}-seed{seed}" / recipe, table_per_pair,
                                       tuple(table_set.items()), label_source)
                        if specs.setdefault(spec.key, spec) != spec:
                            raise ConfigError(f"{w}: {spec.name} seed {seed} / {recipe} is already in an earlier "
                                              "[[runs]] table with another per_pair or set")
    marginal_models = _names(raw.get("marginals", {}).get("models", sorted({s.name for s in specs.values()})),
                             f"{where}, [marginals] models")
    figure_models = _names(raw.get("figures", {}).get("models", marginal_models), f"{where}, [figures] models")
    comparisons = []
    for i, table in enumerate(raw.get("comparisons", [])):
        w = f"{where}, [[comparisons]] #{i + 1}"
        a, b = _need(table, "a", str, w), _need(table, "b", str, w)
        comparisons.append({"a": a, "b": b, "name": str(table.get("name", f"{a} vs {b}"))})
    strength = raw.get("attack_strength")
    if strength is not None:
        w = f"{where}, [attack_strength]"
        strength_seed = strength.get("seed", 0)
        if not isinstance(strength_seed, int) or isinstance(strength_seed, bool):
            raise ConfigError(f"{w}: seed must be a whole number, got {strength_seed!r}")
        strength = {
            "models": _names(_need(strength, "models", list, w), f"{w} models"),
            "seed": strength_seed,
            "recipes": _names(_need(strength, "recipes", list, w), f"{w} recipes"),
            "baseline": strength.get("baseline", main_recipe),
            "compare_models": bool(strength.get("compare_models", True)),
        }
    robustness = None
    if "robustness" in raw:
        robustness = read_robustness(raw["robustness"], where,
                                     [(s.model, s.seed, s.label_source) for s in specs.values()], out)
    analysis = None
    if "analysis" in raw:
        analysis = read_analysis(raw["analysis"], where, recipes=sorted({s.recipe for s in specs.values()}),
                                 models=[s.name for s in specs.values()], main_recipe=main_recipe,
                                 bootstrap=numbers["bootstrap"], cards=CARD_TEMPLATE if robustness else None)
    return Study(path=path, out_dir=out, dataset=str(head.get("dataset", "mnist")), per_pair=per_pair_value,
                 main_recipe=main_recipe, overrides=set_values, runs=list(specs.values()),
                 marginal_models=marginal_models, figure_models=figure_models, comparisons=comparisons,
                 attack_strength=strength, name=str(head.get("name", path.parent.name)),
                 description=str(head.get("description", "")), raw=raw, analysis=analysis,
                 robustness=robustness, **numbers)


# ----------------------------------------------------------------------------- run status
@dataclass
class RunStatus:
    """Where one run stands: ``done``, ``partial``, ``new``, ``skipped`` or ``conflict``."""

    spec: RunSpec
    state: str
    reason: str = ""
    units_done: int = 0


def run_config(study: Study, spec: RunSpec, device: str = "cpu", data_dir: str | None = None) -> RunConfig:
    """The :class:`RunConfig` that makes ``spec``'s run."""
    return RunConfig.create(
        spec.model, dataset=study.dataset, model_seed=spec.seed, recipe=spec.recipe,
        overrides=study.overrides | dict(spec.overrides), per_pair=spec.per_pair, seed=study.seed,
        batch_size=study.batch_size, device=device, data_dir=data_dir, label_source=spec.label_source,
    )


def expected_fingerprint(study: Study, spec: RunSpec) -> dict[str, Any]:
    """The ``config.json`` that ``spec``'s run folder holds once made.

    Raises ZooError for a model seed not in the zoo and ConfigError for an unusable recipe.
    """
    return run_config(study, spec).fingerprint()


def run_status(study: Study, spec: RunSpec) -> RunStatus:
    if not is_recipe(spec.recipe):
        return RunStatus(spec, "skipped", f"recipe {spec.recipe!r} does not exist yet (no {spec.recipe}.toml "
                                          "among the shipped recipes)")
    try:
        read_recipe(spec.recipe)
    except ConfigError as error:
        return RunStatus(spec, "skipped", f"recipe {spec.recipe!r} cannot be used yet ({error})")
    try:
        run_config(study, spec).check_available()
    except ZooError:
        return RunStatus(spec, "skipped", train_hint(spec.model, study.dataset, spec.seed))
    config = spec.folder / "config.json"
    if not config.is_file():  # nothing to compare: the fingerprint (which may train an artefact) can wait
        return RunStatus(spec, "new")
    expected = expected_fingerprint(study, spec)
    try:
        found = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError) as error:
        return RunStatus(spec, "conflict", f"{config} cannot be read ({error})")
    if found != expected:
        differs = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
        return RunStatus(spec, "conflict", f"{spec.folder} holds a run with a different configuration "
                                           f"(differs in: {', '.join(differs)})")
    units = len(list((spec.folder / "progress").glob("unit-[0-9][0-9][0-9][0-9][0-9].npz")))
    if (spec.folder / "cells.csv").is_file() and (spec.folder / "run.json").is_file():
        return RunStatus(spec, "done", units_done=units)
    return RunStatus(spec, "partial", f"{units} unit(s) saved", units_done=units)


def study_status(study: Study) -> list[RunStatus]:
    return [run_status(study, spec) for spec in study.runs]


def format_status(statuses: Sequence[RunStatus], root: Path | None = None) -> str:
    lines = [f"{'model':<24}{'seed':>5}  {'recipe':<20}{'pairs':>6}  {'state':<10}detail"]
    for st in statuses:
        folder = st.spec.folder
        if root is not None:
            with contextlib.suppress(ValueError):
                folder = folder.relative_to(root)
        detail = st.reason or str(folder)
        lines.append(f"{st.spec.name:<24}{st.spec.seed:>5}  {st.spec.recipe:<20}{_pairs_label(st.spec.per_pair):>6}  "
                     f"{st.state:<10}{detail}")
    counts = {s: sum(st.state == s for st in statuses) for s in ("done", "partial", "new", "skipped", "conflict")}
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items() if v) or "no runs")
    return "\n".join(lines)


def robustness_status(study: Study, data_dir: str | None = None) -> list[CardStatus]:
    """Where each report card of the study's ``[robustness]`` stands ([] without one)."""
    return cards_status(study.robustness, study.dataset, data_dir)


# ----------------------------------------------------------------------------- running
def run_missing(study: Study, statuses: Sequence[RunStatus], device: str = "cpu",
                data_dir: str | None = None, log: Any = print) -> list[RunSpec]:
    """Make every ``new`` or ``partial`` run (resuming partial ones); returns those made. A run that
    another process (a second study, a hand-run attack) finished since ``statuses`` were read is kept
    as it is, so its recorded timings stay those of the call that made it."""
    todo = [st for st in statuses if st.state in ("new", "partial")]
    made = []
    for i, st in enumerate(todo, 1):
        if run_status(study, st.spec).state == "done":  # finished meanwhile by another process: keep its record
            log(f"[{i}/{len(todo)}] {st.spec.name} seed {st.spec.seed} / {st.spec.recipe}: finished meanwhile, kept")
            continue
        config = run_config(study, st.spec, device, data_dir)
        verb = "resuming" if st.state == "partial" else "running"
        log(f"[{i}/{len(todo)}] {verb} {st.spec.name} seed {st.spec.seed} / {st.spec.recipe}: "
            f"{config.command(st.spec.folder)}")
        run_attack(config, st.spec.folder)
        made.append(st.spec)
    return made


def make_cards(study: Study, statuses: Sequence[CardStatus], device: str = "cpu", data_dir: str | None = None,
               log: Any = print) -> list[CardSpec]:
    """Make every ``new`` or ``partial`` report card of the study's ``[robustness]`` (locally, one
    after another, resuming partial ones); returns those made."""
    if study.robustness is None:
        return []
    return make_missing_cards(study.robustness, statuses, study.dataset, _command(study), device=device,
                              data_dir=data_dir, log=log)


def _command(study: Study) -> str:
    return study.command or f"robust-vae study {study.path}"


# ----------------------------------------------------------------------------- reporting
def _groups(study: Study, done: dict[tuple[str, int, str], RunSpec]) -> dict[tuple[str, str], Group]:
    """(model, recipe) -> comparison.Group over every finished seed, seeds ascending."""
    keys = sorted({(m, r) for m, _, r in done})
    groups = {}
    for model, recipe in keys:
        seeds = sorted(s for m, s, r in done if (m, r) == (model, recipe))
        runs = tuple(RunCounts.load(done[(model, s, recipe)].folder) for s in seeds)
        groups[(model, recipe)] = Group(model if recipe == study.main_recipe else f"{model} / {recipe}", runs)
    return groups


def _seed_group(group: Group | None, seed: int) -> Group | None:
    """The runs of ``group`` made with model seed ``seed`` (None if there are none)."""
    if group is None:
        return None
    runs = tuple(r for r in group.runs if r.metadata.get("model_seed") == seed)
    return Group(group.label, runs) if runs else None


def write_text(out: Path, name: str, text: str) -> Path:
    path = out / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _seeds_label(group: Any) -> str:
    k = len(group.runs)
    return f"{group.label} ({k} seed{'s' if k != 1 else ''})"


@dataclass
class _Report:
    """What the report's sections share: the study, its finished runs grouped, the parts written."""

    study: Study
    groups: dict[tuple[str, str], Group]
    log: Any
    parts: dict[str, Any] = field(default_factory=lambda: {"written": [], "figures": []})

    @property
    def out(self) -> Path:
        return self.study.out_dir

    @property
    def main(self) -> dict[str, Group]:
        """model -> group of its runs under the main recipe."""
        return {m: g for (m, r), g in self.groups.items() if r == self.study.main_recipe}

    def note(self, path: Path) -> Path:
        self.parts["written"].append(path)
        return path

    def write(self, name: str, text: str) -> Path:
        return self.note(write_text(self.out, name, text))

    def marginal_intervals(self) -> dict[str, pd.DataFrame]:
        """model -> bootstrap marginals of its main-recipe runs (marginal and figure models)."""
        study, main = self.study, self.main
        return {model: group_marginals(main[model], study.bootstrap, study.bootstrap_seed)
                for model in dict.fromkeys(study.marginal_models + study.figure_models) if model in main}


def report(study: Study, statuses: Sequence[RunStatus], log: Any = print,
           cards: Sequence[CardStatus] | None = None) -> dict[str, Any]:
    """Write every table, figure and ``results.md`` from the finished runs and report cards
    (``cards``: their statuses, by default :func:`robustness_status`); returns the parts."""
    done = {st.spec.key: st.spec for st in statuses if st.state == "done"}
    rep = _Report(study, _groups(study, done), log)
    if rep.groups:  # the ordered class pairs of the dataset, K(K − 1)
        rep.parts["cells"] = int(next(iter(rep.groups.values())).runs[0].n.size)
    intervals = rep.marginal_intervals()
    _report_marginals(rep, intervals)
    _report_marginal_figures(rep, intervals)
    _report_seeds(rep)
    _report_comparisons(rep)
    if study.attack_strength:
        _report_attack_strength(rep, study.attack_strength)
    if study.robustness is not None:
        card_statuses = robustness_status(study) if cards is None else cards
        summaries = card_summaries(card_statuses)  # each finished card's files, read once
        table = write_cards_table(summaries, study.out_dir)
        if table is not None:
            rep.note(table)
        rep.parts["robustness_md"] = cards_markdown(study.robustness, card_statuses, summaries, study.out_dir)
    if study.analysis is not None:
        _report_analysis(rep, study.analysis, done)
    results = results_markdown(study, statuses, rep.parts)
    rep.write("results.md", results)
    rep.parts["results_md"] = results
    return rep.parts


def study_models(study: Study, analysis: Analysis) -> list[ModelRow]:
    """The rows of the study's models frame: each (model name, seed) of its runs, in file order,
    restricted to ``analysis.models`` when it names some."""
    rows = dict.fromkeys(ModelRow(s.name, s.model, s.seed) for s in study.runs)
    return [row for row in rows if not analysis.models or row.name in analysis.models]


def _report_analysis(rep: _Report, analysis: Analysis, done: dict[tuple[str, int, str], RunSpec]) -> None:
    """analysis/: the models frame, correlation and β-effect tables, scatter plots."""
    study = rep.study
    template = analysis.robustness_cards
    cards = None if template is None else (lambda row: card_folder(template, study.out_dir, row, study.dataset))
    models = models_frame(study_models(study, analysis), study.dataset,
                          [*([analysis.control] if analysis.control else []), *analysis.disentanglement],
                          analysis.robustness, {key: spec.folder for key, spec in done.items()}, cards)
    made = write_analysis(analysis, models, study.out_dir, study.bootstrap_seed)
    for path in made.written:
        rep.note(path)
    rep.parts["analysis"] = made
    rep.parts["analysis_md"] = made.markdown


def _report_marginals(rep: _Report, intervals: dict[str, pd.DataFrame]) -> None:
    """marginals.{csv,tex,md} (side by side, mean over seeds) and marginals-intervals.csv."""
    study, main, out = rep.study, rep.main, rep.out
    by_model = {_seeds_label(main[m]): intervals[m] for m in study.marginal_models if m in main}
    if not by_model:
        return
    classes = study.classes
    marginals_csv_frame(by_model).to_csv(out / "marginals.csv", index=False)
    rep.write("marginals.tex", marginals_latex(
        by_model, caption=f"Marginal attack success per source {classes.noun} ({latex_escape(study.main_recipe)} "
        "attack), mean over model seeds.", label="tab:study-marginals", classes=classes))
    rep.parts["marginals_md"] = marginals_markdown(by_model, classes)
    rep.write("marginals.md", rep.parts["marginals_md"] + "\n")
    rep.note(out / "marginals.csv")
    rows = [{"model": model, "seeds": len(main[model].runs), **rec}
            for model, frame in intervals.items() for rec in frame.to_dict("records")]
    pd.DataFrame(rows).to_csv(out / "marginals-intervals.csv", index=False, float_format="%.6f")
    rep.note(out / "marginals-intervals.csv")


def _report_marginal_figures(rep: _Report, intervals: dict[str, pd.DataFrame]) -> None:
    """figures/marginals-<rate>.png: bars per source with bootstrap intervals, one colour per model."""
    study, main = rep.study, rep.main
    figure_models = {_seeds_label(main[m]): intervals[m] for m in study.figure_models if m in main}
    if not figure_models:
        return
    for rate in RATES:
        path = rep.out / "figures" / f"marginals-{rate.replace('_', '-')}.png"
        bounds = {label: frame.loc[frame["kind"] == "source", ["cls", f"{rate}_lo", f"{rate}_hi"]]
                  .rename(columns={f"{rate}_lo": "lo", f"{rate}_hi": "hi"})
                  for label, frame in figure_models.items()}
        plot_marginal_bars(figure_models, path, metric=rate, intervals=bounds,
                           title=f"{RATE_LABELS[rate]} per source, {study.main_recipe} attack "
                                 "(mean over seeds, bootstrap 95% CI)", classes=study.classes)
        rep.parts["figures"].append(path)
        rep.note(path)


def _report_seeds(rep: _Report) -> None:
    """seeds.{csv,md,tex}: each model seed's overall rates and their spread."""
    study, main, out = rep.study, rep.main, rep.out
    seed_rows = []
    for model in dict.fromkeys(study.marginal_models + study.figure_models):
        if model not in main:
            continue
        for run in main[model].runs:
            rates = run.rates()
            seed_rows.append({"model": model, "seed": run.metadata.get("model_seed"),
                              "kept": int(run.n.sum()),
                              **{rate: float(np.nanmean(rates[rate])) for rate in RATES}})
    if not seed_rows:
        return
    seeds_frame = pd.DataFrame(seed_rows)
    (seeds_frame.assign(**{r: 100 * seeds_frame[r] for r in RATES})
     .rename(columns={r: f"{r}_pct" for r in RATES})
     .to_csv(out / "seeds.csv", index=False, float_format="%.4f"))
    rep.note(out / "seeds.csv")
    rep.parts["seeds_md"] = _seeds_markdown(seeds_frame)
    rep.write("seeds.md", rep.parts["seeds_md"] + "\n")
    rep.write("seeds.tex", _seeds_latex(seeds_frame))


def _report_comparisons(rep: _Report) -> None:
    """comparisons.{csv,tex,md}: each [[comparisons]] entry under the main recipe over all seeds
    and, with [attack_strength] compare_models, under each other recipe at its seed."""
    study, main, groups = rep.study, rep.main, rep.groups
    seed = study.bootstrap_seed
    comps = []
    for c in study.comparisons:
        a, b = main.get(c["a"]), main.get(c["b"])
        if a is None or b is None:
            missing = [m for m, g in ((c["a"], a), (c["b"], b)) if g is None]
            rep.log(f"comparison {c['name']}: skipped, no finished {study.main_recipe} run of {', '.join(missing)}")
            continue
        comps.append(compare_groups(a, b, study.bootstrap, seed, study.permutations,
                                    name=f"{c['name']} ({study.main_recipe}, seeds "
                                         f"{'/'.join(map(str, a.seeds))} vs {'/'.join(map(str, b.seeds))})"))
    strength = study.attack_strength
    if strength and strength["compare_models"]:
        for recipe in strength["recipes"]:
            if recipe == study.main_recipe:
                continue
            for c in study.comparisons:
                ga = _seed_group(groups.get((c["a"], recipe)), strength["seed"])
                gb = _seed_group(groups.get((c["b"], recipe)), strength["seed"])
                if ga is None or gb is None:
                    continue
                comps.append(compare_groups(ga, gb, study.bootstrap, seed, study.permutations,
                                            name=f"{c['name']} ({recipe}, seed {strength['seed']})"))
    rep.parts["comparisons"] = comps
    if comps:
        for path in save_comparisons(comps, rep.out, stem="comparisons", label="tab:study-comparisons"):
            rep.note(path)
        rep.parts["comparisons_md"] = comparisons_markdown(comps)


def _report_attack_strength(rep: _Report, strength: dict[str, Any]) -> None:
    """attacks.{csv,md,tex}, figures/attacks.png and attacks-comparisons.{csv,tex,md}."""
    study, groups = rep.study, rep.groups
    study_seed = study.bootstrap_seed
    table_rows, recipe_comps = [], []
    for model in strength["models"]:
        base = _seed_group(groups.get((model, strength["baseline"])), strength["seed"])
        for recipe in strength["recipes"]:
            group = _seed_group(groups.get((model, recipe)), strength["seed"])
            if group is None:
                continue
            overall = group_marginals(group, study.bootstrap, study_seed)
            overall = overall[overall["kind"] == "overall"].iloc[0]
            table_rows.append({"model": model, "recipe": recipe, "seed": strength["seed"],
                               **{k: float(overall[k]) for k in overall.index if k.startswith("as_")}})
            if recipe != strength["baseline"] and base is not None:
                recipe_comps.append(compare_groups(group, base, study.bootstrap, study_seed, study.permutations,
                                                   name=f"{model}: {recipe} vs {strength['baseline']} "
                                                        f"(seed {strength['seed']})"))
    if table_rows:
        _write_attacks_table(rep, pd.DataFrame(table_rows), strength)
    rep.parts["attack_comparisons"] = recipe_comps
    if recipe_comps:
        for path in save_comparisons(recipe_comps, rep.out, stem="attacks-comparisons",
                                     label="tab:study-attacks-comparisons"):
            rep.note(path)
        rep.parts["attack_comparisons_md"] = comparisons_markdown(recipe_comps)


def _write_attacks_table(rep: _Report, attacks: pd.DataFrame, strength: dict[str, Any]) -> None:
    attacks["rank_as_target"] = attacks.groupby("model")["as_target"].rank(ascending=False, method="min").astype(int)
    pct = {c: 100 * attacks[c] for c in attacks.columns if c.startswith("as_")}
    (attacks.assign(**pct).rename(columns={c: f"{c}_pct" for c in pct})
     .to_csv(rep.out / "attacks.csv", index=False, float_format="%.4f"))
    rep.note(rep.out / "attacks.csv")
    rep.parts["attacks_md"] = _attacks_markdown(attacks)
    rep.parts["ordering"] = attack_ordering(attacks)
    rep.write("attacks.md", rep.parts["attacks_md"] + "\n\n" + rep.parts["ordering"] + "\n")
    rep.write("attacks.tex", _attacks_latex(attacks))
    path = rep.out / "figures" / "attacks.png"
    plot_attack_strength(attacks, path, title=f"Overall success per attack (model seed {strength['seed']}, "
                                              "bootstrap 95% CI over examples)")
    rep.parts["figures"].append(path)
    rep.note(path)


def _seed_rows(frame: pd.DataFrame) -> tuple[list[int], list[tuple[str, str, dict[int, float], np.ndarray]]]:
    """The seeds, and per (model, rate): its values by seed and as an array."""
    seeds = sorted({int(s) for s in frame["seed"]})
    rows = []
    for model, part in frame.groupby("model", sort=False):
        for rate in RATES:
            values = {int(s): v for s, v in zip(part["seed"], part[rate])}
            rows.append((str(model), rate, values, np.array(list(values.values()), float)))
    return seeds, rows


def _sd(v: np.ndarray) -> str:
    return f"{100 * v.std(ddof=1):.2f}" if len(v) > 1 else "n/a"


def _seeds_markdown(frame: pd.DataFrame) -> str:
    seeds, rows = _seed_rows(frame)
    header = ["model", "rate", *(f"seed {s}" for s in seeds), "mean", "SD", "min – max"]
    body = [[model, RATE_LABELS[rate], *(f"{100 * values[s]:.2f}%" if s in values else "–" for s in seeds),
             f"{100 * v.mean():.2f}%", _sd(v), f"{100 * v.min():.2f} – {100 * v.max():.2f}"]
            for model, rate, values, v in rows]
    return markdown_table(header, body, align="ll" + "r" * (len(header) - 2)) + (
        "\n\nOverall rates per model seed (unweighted mean over cells); SD across seeds in percentage points.")


def _seeds_latex(frame: pd.DataFrame) -> str:
    seeds, rows = _seed_rows(frame)
    header = ["Model", "Rate", *(f"Seed {s}" for s in seeds), "Mean", "SD"]
    body = [[latex_escape(model), RATE_LABELS[rate],
             *(f"{100 * values[s]:.2f}\\%" if s in values else "--" for s in seeds),
             f"{100 * v.mean():.2f}\\%", _sd(v)]
            for model, rate, values, v in rows]
    return latex_table(f"ll{'r' * (len(seeds) + 2)}", header, body,
                       caption="Overall attack success per model seed (SD in percentage points).",
                       label="tab:study-seeds")


def _ci(frame_row: Any, rate: str) -> str:
    return (f"{100 * frame_row[rate]:.2f}% [{100 * frame_row[rate + '_lo']:.2f}, "
            f"{100 * frame_row[rate + '_hi']:.2f}]")


def _attacks_markdown(attacks: pd.DataFrame) -> str:
    header = ["model", "recipe", "seed", "AS target (95% CI)", "AS ignore-target (95% CI)", "rank (AS target)"]
    rows = [[r["model"], r["recipe"], str(r["seed"]), _ci(r, "as_target"), _ci(r, "as_ignore_target"),
             str(r["rank_as_target"])] for r in attacks.to_dict("records")]
    return markdown_table(header, rows, align="llrrrr")


def _attacks_latex(attacks: pd.DataFrame) -> str:
    rows = [[latex_escape(r["model"]), latex_escape(r["recipe"]),
             *(f"{100 * r[k]:.2f} [{100 * r[k + '_lo']:.2f}, {100 * r[k + '_hi']:.2f}]"
               for k in ("as_target", "as_ignore_target"))]
            for r in attacks.to_dict("records")]
    return latex_table("llrr", ["Model", "Attack", "AS target (\\%)", "AS ignore-target (\\%)"], rows,
                       caption="Overall attack success per attack (bootstrap 95\\% intervals over examples).",
                       label="tab:study-attacks")


def _chain(names: Any, values: Any) -> str:
    """``a (12.00%) > b (10.00%) = c (10.00%)`` from names sorted by descending value."""
    text, previous = "", None
    for name, value in zip(names, values):
        shown = f"{100 * value:.2f}"
        if previous is not None:
            text += " = " if shown == previous else " > "
        text += f"{name} ({shown}%)"
        previous = shown
    return text


def attack_ordering(attacks: Any) -> str:
    """Plain-text ordering of the recipes per model (by AS target) and of the models per recipe."""
    lines = ["Ordering by mean AS target (strongest attack / least robust model first):", ""]
    for model, part in attacks.groupby("model", sort=False):
        ranked = part.sort_values("as_target", ascending=False, kind="stable")
        lines.append(f"- {model}: " + _chain(ranked["recipe"], ranked["as_target"]))
    for recipe, part in attacks.groupby("recipe", sort=False):
        ranked = part.sort_values("as_target", ascending=False, kind="stable")
        lines.append(f"- under {recipe}: " + _chain(ranked["model"], ranked["as_target"]))
    return "\n".join(lines)


def plot_attack_strength(attacks: Any, path: Path, title: str = "") -> None:
    """Grouped bars: overall AS target and AS ignore-target per model, one bar per recipe,
    with the bootstrap interval as error bars."""

    models = list(dict.fromkeys(attacks["model"]))
    recipes = list(dict.fromkeys(attacks["recipe"]))
    fig = new_figure(max(7.0, 1.2 * len(models) * len(recipes) * 0.6 + 2), 4.0)
    axes = fig.subplots(1, 2)
    width = 0.8 / max(1, len(recipes))
    x = np.arange(len(models))
    for ax, rate in zip(axes, RATES):
        for i, recipe in enumerate(recipes):
            part = attacks[attacks["recipe"] == recipe].set_index("model").reindex(models)
            h = 100 * part[rate].to_numpy(float)
            err = np.vstack([h - 100 * part[f"{rate}_lo"].to_numpy(float), 100 * part[f"{rate}_hi"].to_numpy(float) - h])
            ax.bar(x + (i - (len(recipes) - 1) / 2) * width, np.nan_to_num(h), width, label=recipe,
                   yerr=np.nan_to_num(np.clip(err, 0, None)), capsize=2)
        ax.set_xticks(x, models)
        ax.set_ylim(0, 100)
        ax.set_ylabel(f"{RATE_LABELS[rate]} (%)")
        ax.set_title(RATE_LABELS[rate])
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def results_markdown(study: Study, statuses: Sequence[RunStatus], parts: dict[str, Any]) -> str:
    """``results.md``: the setup, every run's state, and every table of the study."""
    command = _command(study)
    size = "every test pair (full test set)" if study.per_pair is None else (
        f"{study.per_pair} (source, target) test pairs sampled per cell before the clean-reconstruction filter")
    others = sorted({_pairs_label(spec.per_pair) for spec in study.runs if spec.per_pair != study.per_pair})
    if others:
        size += f" (runs tables with their own per_pair: {', '.join(others)}; see the runs table)"
    lines = [f"# {study.name}: results", "",
             f"Generated by `{command}` from the run folders under `{relative_path(study.runs_dir, study.out_dir)}/`; "
             "do not edit by hand: rerun the command to regenerate this file.", ""]
    if study.description:
        lines += [study.description, ""]
    lines += ["## Setup", "",
              f"- dataset: {study.dataset}; pairs per cell: {size}; sampling and attack seed: {study.seed}",
              f"- main recipe: `{study.main_recipe}`; recipe overrides: "
              f"{json.dumps(study.overrides) if study.overrides else 'none'}",
              f"- intervals: hierarchical bootstrap ({study.bootstrap} replicates, seed {study.bootstrap_seed}): "
              "model seeds resampled, then examples within each cell; percentile 95 %",
              f"- paired tests over the {parts.get('cells', 'K(K−1)')} cells: Wilcoxon signed-rank and sign-flip permutation "
              f"({study.permutations} flips)", ""]
    recipes = sorted({st.spec.recipe for st in statuses if st.state != "skipped"})
    for name in recipes:
        with contextlib.suppress(RobustVAEError):
            lines.append(f"- `{name}`: {read_recipe(name).get('description', '')}")
    lines += ["", "## Runs", ""]
    rows = []
    for st in statuses:
        kept = ""
        if st.state == "done":
            with contextlib.suppress(OSError, ValueError, KeyError):
                kept = str(json.loads((st.spec.folder / "run.json").read_text()).get("examples_attacked", ""))
        rows.append([st.spec.name, str(st.spec.seed), st.spec.recipe, _pairs_label(st.spec.per_pair), st.state,
                     kept, st.reason or f"`{relative_path(st.spec.folder, study.out_dir)}`"])
    lines.append(markdown_table(["model", "seed", "recipe", "pairs per cell", "state", "attacked examples",
                                  "folder / note"], rows, align="lrlrlrl"))
    sections = [
        (f"Marginals per source {study.classes.noun} (main recipe, mean over seeds)", "marginals_md"),
        ("Per-seed variation", "seeds_md"),
        ("Comparisons between models", "comparisons_md"),
        ("Attack strength", "attacks_md"),
        (None, "ordering"),
        ("Attacks against the baseline recipe", "attack_comparisons_md"),
        ("Robustness report cards", "robustness_md"),
        ("Does disentanglement predict robustness?", "analysis_md"),
    ]
    for title, key in sections:
        if parts.get(key):
            lines += (["", f"## {title}"] if title else []) + ["", parts[key].rstrip()]
    if parts.get("figures"):
        lines += ["", "## Figures", ""]
        lines += [f"![{p.stem}]({relative_path(p, study.out_dir)})" for p in parts["figures"]]
    return "\n".join(line for line in lines) + "\n"


def _pairs_label(per_pair: int | None) -> str:
    return "full" if per_pair is None else str(per_pair)


def readme_draft(study: Study, parts: dict[str, Any]) -> str:
    """A draft of the study README: one sentence per comparison with its interval and tests.

    The draft states only what the numbers say (direction when the interval excludes 0);
    the author edits it into README.md.
    """
    lines = [f"# {study.name}", "", "<!-- draft written by `robust-vae study --draft-readme`; edit before committing "
             "as README.md -->", "",
             f"Every number below comes from `{study.command or f'robust-vae study {study.path}'}` "
             "(see results.md).", "",
             "## Answers", ""]
    for c in parts.get("comparisons", []) + parts.get("attack_comparisons", []):
        for m in c.metrics:
            diff = f"{100 * m.difference:+.2f} pp (95 % CI {100 * m.lo:+.2f} to {100 * m.hi:+.2f})"
            if m.lo > 0:
                verdict = f"{c.label_a} is attacked more successfully than {c.label_b}"
            elif m.hi < 0:
                verdict = f"{c.label_a} is attacked less successfully than {c.label_b}"
            else:
                verdict = "no difference is resolved (the interval contains 0)"
            lines.append(f"- {c.name}, {RATE_LABELS[m.metric]}: {diff}; Wilcoxon p = {format_p(m.wilcoxon_p)}, "
                         f"{m.a_higher}/{m.cells} cells higher in A: {verdict}.")
            lines += [f"  - note: {w}" for w in c.warnings if "DIFFERENT ATTACK SETUPS" in w]
    lines += ["", "## Versus the thesis", "", "TODO: compare with the thesis's Tables 5.1–5.3 and its finding "
              "(JointVAE less robust than VAE; weight decay slightly more robust).", ""]
    return "\n".join(lines)
