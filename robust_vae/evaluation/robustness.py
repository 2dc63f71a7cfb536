"""A model's classifier-free robustness report card (issue 21), resumable unit by unit.

For a fixed, seeded sample of test examples, every example gets:

* ``damage_r<r>``: the max-damage attack's ‖x̂(x + d) − x̂(x)‖₂ for every budget r of the grid
  (:class:`robust_vae.attacks.max_damage.MaxDamage`, one call over the whole grid);
* at the metric budget (one radius of the grid): MS-SSIM of inputs and of reconstructions and
  the posteriors' symmetric KL (:mod:`robust_vae.evaluation.attack_metrics`) for the max-damage
  adversarial and for the unsupervised attack's (top singular direction of J_μ, Kuzina et al.
  2021) at the same budget;
* ``margin``: the r-robustness margin (Camuto et al. 2021), bisection over the max-damage budget
  with the probability over the encoder's sampling (:mod:`robust_vae.evaluation.margins`), and
  ``margin_bound``, the paper's lower bound from σ and J_μ;
* ``pullback_lambda_max`` / ``pullback_entropy``: the pulled-back Fisher–Rao metric's largest
  eigenvalue and spectral entropy (Khan & Storkey 2023; :mod:`robust_vae.evaluation.pullback`);
* with a latent classifier (an MLP on the model's codes φ(x), trained on the train split:
  :mod:`robust_vae.attacks.latent_classifier`): ``latent_correct_clean`` and
  ``maxdamage_latent_correct`` / ``unsupervised_latent_correct``, 1 where it labels φ(x) /
  φ(x*) correctly, so their means are the latent-classifier accuracy clean and under attack.

Examples are processed in fixed units of ``unit_size`` (the sample and the units depend only on
the settings); each finished unit is saved at once (:class:`RunStore`), so an interrupted card
resumes where it stopped. Every random draw of an example is seeded by the example's own test
index, so no number depends on the unit size or on the device's batch.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from robust_vae.attacks.latent_classifier import (
    attack_codes,
    cached_latent_classifier,
    code_predictions,
    latent_classifier_for,
)
from robust_vae.attacks.max_damage import MaxDamage
from robust_vae.attacks.unsupervised import TopSingularDirection
from robust_vae.core import progress
from robust_vae.core.devices import model_device
from robust_vae.core.errors import ConfigError
from robust_vae.core.version import __version__
from robust_vae.data import Dataset
from robust_vae.data.digest import dataset_digest
from robust_vae.data.shape_match import load_dataset_at
from robust_vae.evaluation.attack_metrics import METRIC_COLUMNS, attack_metrics, metrics_settings
from robust_vae.evaluation.margins import bootstrap_interval, camuto_margin_bound, r_robustness_margin
from robust_vae.evaluation.pullback import pullback_scores
from robust_vae.evaluation.run_store import RunStore
from robust_vae.report.robustness import card_latex, card_markdown, damage_figure, margin_figure
from robust_vae.zoo import Card, find_card, load_model

NORMS = ("l2", "linf")
SEED_STRIDE = 1_000_003  # example seed = settings.seed · SEED_STRIDE + test index


def radius_column(radius: float) -> str:
    """The examples-table column of the damage at budget ``radius``, e.g. ``damage_r0.5``."""
    return f"damage_r{radius:g}"


@dataclass(frozen=True)
class RobustnessSettings:
    """Everything that changes a report card's numbers (the fingerprint), with its defaults.

    ``radii``: the max-damage budgets (‖d‖ in ``norm``); ``metric_radius``: the budget (one of
    ``radii``) at which MS-SSIM and the symmetric KL are measured; ``threshold``: r of
    r-robustness, the L2 distance between two stochastic reconstructions that counts as broken
    (MNIST-sized images: two independent reconstructions of a clean zoo image differ by about 2
    at the median); ``samples``: posterior samples per probability estimate; ``max_budget`` and
    ``bisection_steps``: the margin's search interval and its halvings.
    """

    examples: int = 500
    norm: str = "l2"
    radii: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 3.0)
    metric_radius: float = 1.0
    threshold: float = 5.0
    samples: int = 64
    max_budget: float = 8.0
    bisection_steps: int = 8
    steps: int = 50
    restarts: int = 2
    power_iterations: int = 20
    unit_size: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"robustness: norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if not self.radii or any(not (r > 0 and math.isfinite(r)) for r in self.radii):
            raise ConfigError(f"robustness: radii must be positive numbers, got {list(self.radii)}")
        if list(self.radii) != sorted(set(self.radii)):
            raise ConfigError(f"robustness: radii must be increasing and distinct, got {list(self.radii)}")
        if self.metric_radius not in self.radii:
            raise ConfigError(f"robustness: the metric radius {self.metric_radius:g} must be one of the radii "
                              f"{', '.join(f'{r:g}' for r in self.radii)}")
        for name in ("examples", "samples", "bisection_steps", "steps", "restarts", "power_iterations", "unit_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"robustness: {name} must be at least 1, got {getattr(self, name)}")
        if not (self.threshold > 0 and self.max_budget > 0):
            raise ConfigError("robustness: threshold and max_budget must be positive")

    def damage_attack(self) -> MaxDamage:
        """The max-damage attack over the radius grid (PGD with restarts)."""
        return MaxDamage(epsilon=list(self.radii), norm=self.norm, steps=self.steps, restarts=self.restarts,
                         seed=self.seed)

    def margin_attack(self) -> MaxDamage:
        """The max-damage attack the margin's bisection runs at per-example budgets."""
        return MaxDamage(epsilon=self.max_budget, norm=self.norm, steps=self.steps, restarts=self.restarts,
                         seed=self.seed)

    def unsupervised_attack(self) -> TopSingularDirection:
        return TopSingularDirection(epsilon=self.metric_radius, norm=self.norm,
                                    power_iterations=self.power_iterations, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["radii"] = list(self.radii)
        return values


def example_indices(num_test: int, settings: RobustnessSettings) -> np.ndarray:
    """The card's test examples: ``examples`` indices drawn without replacement (seeded), sorted."""
    count = min(settings.examples, num_test)
    rng = np.random.default_rng([settings.seed, 21])
    return np.sort(rng.choice(num_test, size=count, replace=False))


LATENT_COLUMNS = ("latent_correct_clean", "maxdamage_latent_correct", "unsupervised_latent_correct")


def example_columns(settings: RobustnessSettings, *, latent_classifier: bool = False) -> list[str]:
    """The per-example columns of ``examples.csv`` after ``index`` and ``label``, in order
    (:data:`LATENT_COLUMNS` last, with a latent classifier)."""
    columns = [radius_column(r) for r in settings.radii]
    columns += [f"maxdamage_{c}" for c in METRIC_COLUMNS] + [f"unsupervised_{c}" for c in METRIC_COLUMNS]
    columns += ["unsupervised_latent_shift", "margin", "margin_broken_at_max", "margin_bound",
                "clean_probability", "pullback_lambda_max", "pullback_entropy"]
    return columns + list(LATENT_COLUMNS) if latent_classifier else columns


def latent_correct(model: nn.Module, latent_classifier: nn.Module, images: torch.Tensor,
                   labels: torch.Tensor) -> np.ndarray:
    """(N,) float64: 1 where ``latent_classifier`` labels the code φ of ``images`` (N, C, H, W)
    as ``labels`` (N,), else 0 (its mean is the latent-classifier accuracy)."""
    return _numpy(code_predictions(latent_classifier, attack_codes(model, images)) == labels.cpu())


def measure_unit(model: nn.Module, images: torch.Tensor, indices: np.ndarray,
                 settings: RobustnessSettings, *, latent_classifier: nn.Module | None = None,
                 labels: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Every per-example column (:func:`example_columns`) for ``images`` (N, C, H, W) at test
    ``indices`` (N,) with their ``labels`` (N,) when there is a ``latent_classifier``:
    name -> (N,) float64."""
    if latent_classifier is not None and labels is None:
        raise ConfigError("robustness: the latent-classifier accuracy needs the examples' labels")
    seeds = torch.as_tensor(settings.seed * SEED_STRIDE + indices, dtype=torch.int64)
    columns: dict[str, np.ndarray] = {}
    damage = settings.damage_attack()(model, images, images, seeds=seeds)
    values = damage.extras["damage"].double().cpu().numpy()
    for k, radius in enumerate(settings.radii):
        columns[radius_column(radius)] = values[k]
    at = list(settings.radii).index(settings.metric_radius)
    for name, value in attack_metrics(model, images, damage.adversarial[at]).items():
        columns[f"maxdamage_{name}"] = value
    unsupervised = settings.unsupervised_attack()(model, images, images, seeds=seeds)
    for name, value in attack_metrics(model, images, unsupervised.adversarial[0]).items():
        columns[f"unsupervised_{name}"] = value
    columns["unsupervised_latent_shift"] = unsupervised.objective[0].double().cpu().numpy()
    margin = r_robustness_margin(model, images, settings.threshold, attack=settings.margin_attack(),
                                 samples=settings.samples, max_budget=settings.max_budget,
                                 bisection_steps=settings.bisection_steps, seeds=seeds)
    columns["margin"] = _numpy(margin.margin)
    columns["margin_broken_at_max"] = _numpy(margin.broken_at_max)
    columns["clean_probability"] = _numpy(margin.clean_probability)
    # the bound uses the margin's own posterior draws: the same clean probability p̄ in both
    columns["margin_bound"] = _numpy(camuto_margin_bound(model, images, settings.threshold, samples=settings.samples,
                                                         seeds=seeds, clean_probability=margin.clean_probability))
    scores = pullback_scores(model, images)
    columns["pullback_lambda_max"] = _numpy(scores.largest_eigenvalue)
    columns["pullback_entropy"] = _numpy(scores.spectral_entropy)
    if latent_classifier is not None and labels is not None:
        columns["latent_correct_clean"] = latent_correct(model, latent_classifier, images, labels)
        columns["maxdamage_latent_correct"] = latent_correct(model, latent_classifier, damage.adversarial[at], labels)
        columns["unsupervised_latent_correct"] = latent_correct(model, latent_classifier,
                                                                unsupervised.adversarial[0], labels)
    return columns


def _numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().double().cpu().numpy()
    return np.asarray(t, dtype=np.float64)


def card_fingerprint(settings: RobustnessSettings, fingerprint: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a card folder's ``config.json`` holds: ``fingerprint`` (the model's and the data's
    identity) with the settings."""
    return {"card": "robustness", "settings": settings.to_dict(), **dict(fingerprint or {})}


@dataclass
class RobustnessCard:
    """A finished card: ``examples`` (one row per test example: index, label and
    :func:`example_columns`), ``summary`` (the model's mean of each column with a bootstrap
    interval), ``per_class`` (class means) and ``metadata`` (settings, identity, timing)."""

    examples: pd.DataFrame
    summary: pd.DataFrame
    per_class: pd.DataFrame
    metadata: dict[str, Any] = field(default_factory=dict)


SUMMARY_COLUMNS = ("metric", "mean", "low", "high", "n")


def summarise(examples: pd.DataFrame, columns: Sequence[str], *, resamples: int = 2000,
              seed: int = 0) -> pd.DataFrame:
    """Per column: mean over the examples and its 95 % percentile-bootstrap interval."""
    rows = []
    for column in columns:
        values = examples[column].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        low, high = bootstrap_interval(values, resamples=resamples, seed=seed) if values.size else (math.nan, math.nan)
        rows.append({"metric": column, "mean": float(values.mean()) if values.size else math.nan,
                     "low": low, "high": high, "n": int(values.size)})
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def per_class_means(examples: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Class -> mean of every column (and the class's example count ``n``)."""
    grouped = examples.groupby("label")
    frame = grouped[list(columns)].mean()
    frame.insert(0, "n", grouped.size())
    return frame.reset_index()


def robustness_card(model: nn.Module, dataset: Dataset, settings: RobustnessSettings, *,
                    out: Path | None = None, fingerprint: Mapping[str, Any] | None = None,
                    restart: bool = False, progress_bar: bool = False,
                    identity: Mapping[str, Any] | None = None,
                    latent_classifier: nn.Module | None = None) -> RobustnessCard:
    """The report card of ``model`` on ``dataset`` (its test split); with ``latent_classifier``
    ((N, D) codes -> (N, K) logits) also its accuracy clean and under both attacks.

    With ``out``, finished units are kept in ``out/progress/`` under ``fingerprint`` (a mapping
    of everything that changes a number; the settings are added) and reused when the same card is
    asked for again; a folder holding another configuration's card is refused unless ``restart``.
    """
    indices = example_indices(len(dataset.images), settings)
    units = [indices[i:i + settings.unit_size] for i in range(0, len(indices), settings.unit_size)]
    store = RunStore(out) if out is not None else None
    full_fingerprint = card_fingerprint(settings, fingerprint)
    if store is not None:
        store.check(full_fingerprint, restart=restart)
    started = time.perf_counter()
    with store.lock() if store is not None else contextlib.nullcontext():
        if store is not None:
            store.check_or_start(full_fingerprint, restart=restart)
        parts = _measure_units(model, dataset, units, settings, store, progress_bar, latent_classifier)
    examples = pd.DataFrame({"index": indices, "label": dataset.labels[torch.as_tensor(indices)].numpy()})
    columns = example_columns(settings, latent_classifier=latent_classifier is not None)
    for column in columns:
        examples[column] = np.concatenate([part[column] for part in parts]) if parts else np.zeros(0)
    metadata = {
        "settings": settings.to_dict(), **dict(identity or {}), "dataset": dataset.name,
        "num_examples": int(len(indices)), "metrics": metrics_settings(),
        "seconds": round(time.perf_counter() - started, 1), "robust_vae": __version__,
        "torch": torch.__version__, "platform": platform.platform(),
        "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return RobustnessCard(examples, summarise(examples, columns, seed=settings.seed),
                          per_class_means(examples, columns), metadata)


def _measure_units(model: nn.Module, dataset: Dataset, units: list[np.ndarray], settings: RobustnessSettings,
                   store: RunStore | None, progress_bar: bool,
                   latent_classifier: nn.Module | None) -> list[dict[str, np.ndarray]]:
    done = sum(len(unit) for i, unit in enumerate(units) if store is not None and store.done(i))
    bar = tqdm(total=sum(len(u) for u in units), initial=done, desc="robustness", unit="example",
               disable=not progress_bar, dynamic_ncols=True, mininterval=0.5)
    parts = []
    device = model_device(model)
    try:
        for i, unit in enumerate(units):
            if store is not None and store.done(i):
                parts.append(store.load_unit(i))
                continue
            images = dataset.images[torch.as_tensor(unit)].to(device)
            with progress.listen(_postfix(bar, f"unit {i + 1}/{len(units)}")):
                arrays = measure_unit(model, images, unit, settings, latent_classifier=latent_classifier,
                                      labels=dataset.labels[torch.as_tensor(unit)])
            if store is not None:
                store.save_unit(i, arrays)
            parts.append(arrays)
            bar.update(len(unit))
    finally:
        bar.close()
    return parts


def _postfix(bar: Any, prefix: str) -> progress.StepCallback:
    """A progress listener that shows the attack's step in the bar's postfix."""
    def show(step: int, total: int) -> None:
        bar.set_postfix_str(f"{prefix} step {step}/{total}", refresh=False)
    return show


def zoo_robustness(name: str, dataset: str = "mnist", model_seed: int = 0, settings: RobustnessSettings | None = None,
                   *, device: str = "cpu", data_dir: str | None = None, out: Path | None = None,
                   restart: bool = False, progress_bar: bool = False,
                   latent_accuracy: bool = True) -> RobustnessCard:
    """The report card of the zoo model ``name`` (seed ``model_seed``) on ``dataset``'s test split,
    loaded at the model's image shape; the fingerprint holds the weights' and the data's sha256.
    ``latent_accuracy``: also the accuracy of the model's cached latent classifier (trained on
    first use, :func:`~robust_vae.attacks.latent_classifier.latent_classifier_for`)."""
    settings = settings or RobustnessSettings()
    identity, fingerprint = zoo_fingerprint(name, dataset, model_seed, data_dir=data_dir)
    model = load_model(name, dataset, seed=model_seed, device=device)
    test = load_dataset_at(dataset, "test", model.image_shape, data_dir, what=name)
    latent_classifier = None
    if latent_accuracy:
        latent_classifier, latent_card = latent_classifier_for(model, dataset, data_dir=data_dir, progress=progress_bar)
        add_latent_classifier(identity, fingerprint, latent_card)
    return robustness_card(model, test, settings, out=out, fingerprint=fingerprint, restart=restart,
                           progress_bar=progress_bar, identity=identity, latent_classifier=latent_classifier)


def zoo_fingerprint(name: str, dataset: str = "mnist", model_seed: int = 0, *,
                    data_dir: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The identity (in ``card.json``) and the fingerprint (in ``config.json``, less the settings:
    :func:`card_fingerprint`) of the zoo model's card, read from its zoo card and the data files
    without loading the model; ZooError for a model seed not in the zoo. With the latent-classifier
    accuracy both also get :func:`add_latent_classifier`."""
    card = find_card(name, dataset, model_seed)
    identity: dict[str, Any] = {"model": card.name, "family": card.data["family"], "model_seed": card.seed,
                                "weights_sha256": card.data["sha256"]}
    fingerprint = {**identity, "dataset": dataset, "dataset_sha256": dataset_digest(dataset, data_dir)}
    return identity, fingerprint


def add_latent_classifier(identity: dict[str, Any], fingerprint: dict[str, Any], latent_card: Card) -> None:
    """Record the latent classifier of ``latent_card`` (its zoo-format card) in a card's identity
    and fingerprint (:func:`zoo_fingerprint`)."""
    identity["latent_classifier"] = {"sha256": latent_card.data["sha256"],
                                     "test_accuracy": latent_card.data["metrics"]["test_accuracy"]}
    fingerprint["latent_classifier_sha256"] = latent_card.data["sha256"]


def zoo_card_fingerprint(name: str, dataset: str, model_seed: int, settings: RobustnessSettings, *,
                         data_dir: str | None = None, latent_accuracy: bool = True) -> dict[str, Any]:
    """The ``config.json`` that :func:`zoo_robustness` gives the card folder, computed without
    training anything: with ``latent_accuracy`` the model is loaded (on the CPU) to find its
    cached latent classifier, and where none is cached yet ``latent_classifier_sha256`` is left
    out (the classifier is trained when the card is made). ZooError for a model seed not in the zoo."""
    identity, fingerprint = zoo_fingerprint(name, dataset, model_seed, data_dir=data_dir)
    if latent_accuracy:
        cached = cached_latent_classifier(load_model(name, dataset, seed=model_seed), dataset)
        if cached is not None:
            add_latent_classifier(identity, fingerprint, cached[1])
    return card_fingerprint(settings, fingerprint)


@dataclass(frozen=True)
class CardProgress:
    """Where a card folder stands against a fingerprint (:func:`card_progress`): ``done`` (every
    file of :data:`CARD_FILES`, ``card.json`` of that configuration's settings), ``partial`` (some
    units, no finished card), ``new`` (nothing computed) or ``conflict`` (another configuration's
    units; ``reason`` says how)."""

    state: str
    reason: str = ""
    units_done: int = 0


def card_progress(folder: Path, fingerprint: Mapping[str, Any]) -> CardProgress:
    """The state of the card folder ``folder`` for the full ``fingerprint`` (:func:`card_fingerprint`),
    by the check :func:`robustness_card` makes before it computes (:meth:`RunStore.differences`):
    a folder of another configuration's units is a conflict, one without units is new, and a
    finished card (``card.json`` of these settings and every card file) is done, also without its
    ``progress/`` units: they are resume data, not committed with the card."""
    store = RunStore(folder)
    if not store.has_results() and not (folder / "card.json").is_file():
        return CardProgress("new")
    try:
        differs = store.differences(dict(fingerprint))
    except ConfigError as error:
        return CardProgress("conflict", str(error))
    if differs:
        return CardProgress("conflict", f"{folder} holds a robustness card with a different configuration "
                                        f"(differs in: {', '.join(differs)})")
    units = len(list(store.progress.glob("unit-[0-9][0-9][0-9][0-9][0-9].npz")))
    record: Any = None
    with contextlib.suppress(OSError, ValueError):
        record = json.loads((folder / "card.json").read_text())
    settings = json.loads(json.dumps(fingerprint.get("settings")))
    finished = isinstance(record, dict) and record.get("settings") == settings \
        and isinstance(record.get("num_examples"), int) and all((folder / f).is_file() for f in CARD_FILES)
    if finished:
        return CardProgress("done", units_done=units)
    return CardProgress("partial", f"{units} unit(s) saved", units_done=units)


CARD_FILES = ("examples.csv", "summary.csv", "per_class.csv", "card.json", "card.md", "card.tex",
              "damage.png", "margins.png")


def save_card(card: RobustnessCard, folder: Path, command: str | None = None) -> list[Path]:
    """Write :data:`CARD_FILES` into ``folder`` (CSV at 6 decimals); returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    card.examples.to_csv(folder / "examples.csv", index=False, float_format="%.6f")
    card.summary.to_csv(folder / "summary.csv", index=False, float_format="%.6f")
    card.per_class.to_csv(folder / "per_class.csv", index=False, float_format="%.6f")
    record = {**card.metadata, **({"command": command} if command else {}),
              "summary": {row["metric"]: {k: row[k] for k in ("mean", "low", "high", "n")}
                          for _, row in card.summary.iterrows()}}
    (folder / "card.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    (folder / "card.md").write_text(card_markdown(card.summary, card.per_class, card.metadata, command))
    (folder / "card.tex").write_text(card_latex(card.summary, card.metadata))
    name = str(card.metadata.get("model", "model"))
    damage_figure({name: card.summary}, folder / "damage.png", card.metadata["settings"]["norm"])
    margin_figure({name: card.examples}, folder / "margins.png")
    return [folder / f for f in CARD_FILES]
