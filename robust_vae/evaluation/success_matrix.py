"""Success matrices (protocol §4 steps 1–6) for any attack, resumable pair by pair.

For every ordered class pair (s, t), s ≠ t: pair shuffled test images of s and t one to one,
keep the sources whose clean reconstruction the classifier labels s, attack them towards
their targets, classify the deterministic reconstruction of each adversarial, and count
AS target (#pred = t / N) and AS ignore-target (#pred ≠ s / N).

Every attacked example also gets the classifier-free metrics of
:mod:`robust_vae.evaluation.attack_metrics` (MS-SSIM of inputs and of reconstructions, symmetric
KL of the posteriors), written to ``metrics.csv`` (per example) and ``metrics_cells.csv`` (cell
means) so that the protocol's own files keep their layout. Per-example values an attack reports
itself (:attr:`AttackResult.extras`, e.g. the ensemble's ``winner``) become extra columns of
``examples.csv.gz``; for an ensemble, ``winners.csv`` counts each member's wins per cell.

Pairs are grouped into fixed *units* (batches of whole pairs) that depend only on the
configuration; each finished unit is written to ``<out>/progress/`` at once, so an
interrupted run resumes where it stopped and ends with the same files as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import foolbox
import numpy as np
import pandas as pd
import scipy
import torch
from torch import nn
from tqdm.auto import tqdm

from robust_vae.attacks.base import Attack
from robust_vae.core import progress
from robust_vae.core.devices import model_device
from robust_vae.core.errors import ConfigError
from robust_vae.core.version import __version__
from robust_vae.data import Dataset, class_pairs
from robust_vae.evaluation.attack_metrics import METRIC_COLUMNS, attack_metrics, metrics_settings
from robust_vae.evaluation.curves import CURVE_KEYS, auddc_of_table, curves_table, sweep_curve_arrays
from robust_vae.evaluation.run_config import fingerprint_of
from robust_vae.evaluation.run_store import RunStore
from robust_vae.models import attackable
from robust_vae.models.conditional import (
    CLASSIFIER,
    DESCRIPTIONS,
    TRUE,
    ClassifierLabel,
    TrueLabel,
    check_label_source,
    is_conditional,
)
from robust_vae.report.classes import ClassLabels, from_metadata
from robust_vae.report.per_example import KEY_COLUMNS, metrics_cells, winners_markdown, winners_table
from robust_vae.report.success import add_intervals

CELL_COLUMNS = [
    "source", "target", "n_pairs", "n", "hits_target", "hits_ignore_target",
    "as_target", "as_ignore_target", "mean_l2", "mean_linf", "mean_latent_distance",
]
CSV_DECIMALS = 6
CSV_FORMAT = f"%.{CSV_DECIMALS}f"
EXAMPLE_COLUMNS = [
    "source", "target", "source_index", "target_index", "prediction", "l2", "linf",
    "latent_distance", "sweep_index",
]
EXTRA_PREFIX = "extra_"  # unit arrays of an attack's per-example extras (AttackResult.extras)


@dataclass(frozen=True)
class PairPlan:
    """One ordered class pair: test-set indices of its sampled sources/targets and the kept mask."""

    source: int
    target: int
    source_index: np.ndarray
    target_index: np.ndarray
    kept: np.ndarray  # bool, clean reconstruction labelled as the source

    @property
    def n_pairs(self) -> int:
        return len(self.source_index)

    @property
    def n(self) -> int:
        return int(self.kept.sum())


@torch.no_grad()
def clean_predictions(model: nn.Module, classifier: nn.Module, images: torch.Tensor,
                      batch_size: int = 1000, *, labels: torch.Tensor | None = None,
                      label_source: str | None = None) -> np.ndarray:
    """Classifier labels of the deterministic reconstructions of ``images`` (N,) int64.

    A conditional model reconstructs under its threat model ``label_source``: ``true`` under
    each image's class in ``labels`` (N,), ``classifier`` under the classifier's prediction.
    """
    if label_source == TRUE:
        if labels is None:
            raise ConfigError("clean_predictions under the 'true' threat model needs the images' labels")
        predictions = np.empty(len(images), dtype=np.int64)
        for label in torch.unique(labels).tolist():
            rows = (labels == label).nonzero().flatten()
            predictions[rows.numpy()] = clean_predictions(TrueLabel(model, int(label)), classifier, images[rows],
                                                          batch_size)
        return predictions
    device = model_device(model)
    net = attackable(ClassifierLabel(model, classifier) if label_source == CLASSIFIER else model)
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        out.append(classifier(net.reconstruct(x)).argmax(-1).cpu())
    return torch.cat(out).numpy()


def plan_pairs(labels: torch.Tensor, clean_pred: np.ndarray, num_classes: int,
               per_pair: int | None, seed: int) -> list[PairPlan]:
    """Protocol steps 1–2 for every ordered pair, in (source, target) order."""
    plans = []
    for s in range(num_classes):
        for t in range(num_classes):
            if s == t:
                continue
            src, tgt = class_pairs(labels, s, t, seed)
            if per_pair is not None:
                src, tgt = src[:per_pair], tgt[:per_pair]
            src_np, tgt_np = src.numpy(), tgt.numpy()
            plans.append(PairPlan(s, t, src_np, tgt_np, clean_pred[src_np] == s))
    return plans


def group_units(plans: list[PairPlan], batch_size: int) -> list[list[int]]:
    """Consecutive pairs grouped so that each unit attacks at most ``batch_size`` examples
    (a pair larger than that forms a unit of its own and is attacked in several batches)."""
    units: list[list[int]] = []
    current: list[int] = []
    count = 0
    for i, plan in enumerate(plans):
        if current and count + plan.n > batch_size:
            units.append(current)
            current, count = [], 0
        current.append(i)
        count += plan.n
    if current:
        units.append(current)
    return units


SEED_POSITIONS = 100_000  # positions in a pair that get distinct seeds (a class has at most this many test images)


def seed_radix(num_classes: int) -> int:
    """R = max(10, K): the radix that packs (seed, s, t) into one number (10 up to ten classes, so
    that the seeds of such datasets are the ones they always were)."""
    return max(10, int(num_classes))


def example_seeds(seed: int, plan: PairPlan, num_classes: int) -> torch.Tensor:
    """Per-example attack seeds that depend only on (seed, s, t, position in the pair):
    ``((seed·R + s)·R + t)·100,000 + position`` with R = :func:`seed_radix` (K), distinct
    across the cells of one run for any K."""
    radix = seed_radix(num_classes)
    if not (0 <= plan.source < radix and 0 <= plan.target < radix):
        raise ValueError(f"pair ({plan.source}, {plan.target}) outside the {num_classes} classes")
    base = ((seed * radix + plan.source) * radix + plan.target) * SEED_POSITIONS
    positions = np.nonzero(plan.kept)[0]
    return torch.from_numpy(base + positions).to(torch.int64)


@dataclass
class SuccessMatrix:
    """Results of one success-matrix run (pandas underneath).

    cells: one row per ordered pair (:data:`CELL_COLUMNS` plus Wilson bounds);
    examples: one row per attacked example; samples: a few image rows for figures;
    metadata: everything ``run.json`` records.
    """

    cells: pd.DataFrame
    examples: pd.DataFrame
    samples: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    curves: pd.DataFrame | None = None  # a targeted sweep's distortion–distance curves (curves.csv)
    # auddc()'s bootstrap, kept for the examples table it was computed from (saving needs it twice)
    _auddc_cache: tuple[pd.DataFrame, pd.DataFrame] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Every table is derived from what cells.csv keeps, so a run renders the same now and
        # when re-rendered from its folder: rates and their Wilson bounds are recomputed from the
        # integer counts, the mean distortions held at the 6 decimals the CSV stores.
        cells = self.cells.copy()
        if {"n", "hits_target", "hits_ignore_target"} <= set(cells.columns):
            n = cells["n"].to_numpy(dtype=float)
            with np.errstate(invalid="ignore", divide="ignore"):
                cells["as_target"] = np.where(n > 0, cells["hits_target"].to_numpy() / n, np.nan)
                cells["as_ignore_target"] = np.where(n > 0, cells["hits_ignore_target"].to_numpy() / n, np.nan)
            cells = add_intervals(cells)
        means = [c for c in cells.columns if c.startswith("mean_")]
        self.cells = cells.assign(**{c: cells[c].astype(float).round(CSV_DECIMALS) for c in means})
        # the metrics too, so that their cell means are the same from a run and from its folder
        metrics = [c for c in METRIC_COLUMNS if c in self.examples.columns]
        self.examples = self.examples.assign(
            **{c: self.examples[c].astype(float).round(CSV_DECIMALS) for c in metrics})
        if self.curves is not None:  # AUDDC from the curves as curves.csv keeps them
            floats = ["sweep_value", "distortion", "distance", "x", "y"]
            self.curves = self.curves.assign(**{c: self.curves[c].astype(float).round(CSV_DECIMALS) for c in floats})
            per_example = auddc_of_table(self.curves)
            if len(per_example) != len(self.examples):
                raise ConfigError(f"the curves list {len(per_example)} examples, the run {len(self.examples)}")
            self.examples = self.examples.assign(auddc=per_example["auddc"].round(CSV_DECIMALS).to_numpy())

    @property
    def classes(self) -> ClassLabels:
        """The run's classes (noun, names, K) as ``run.json`` records them; a run written before
        it recorded them gets its dataset's noun and names, and K counted from the cells."""
        return from_metadata(self.metadata)

    def marginals(self) -> pd.DataFrame:
        from robust_vae.report.success import marginals

        return marginals(self.cells)

    def to_csv(self, out_dir: str | Path) -> None:
        """cells.csv, matrix.csv, marginals.csv and examples.csv.gz."""
        from robust_vae.report.success import matrix_strings

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.cells.to_csv(out / "cells.csv", index=False, float_format=CSV_FORMAT)
        matrix_strings(self.cells, self.classes.num_classes).to_csv(out / "matrix.csv", index_label="source")
        self.marginals().to_csv(out / "marginals.csv", index=False, float_format=CSV_FORMAT)
        self.examples.reindex(columns=self.example_columns()).to_csv(out / "examples.csv.gz", index=False, float_format=CSV_FORMAT,
                                                                     compression={"method": "gzip", "mtime": 0})
        metrics = [c for c in METRIC_COLUMNS if c in self.examples.columns]
        if metrics:
            self.examples[KEY_COLUMNS + metrics].to_csv(out / "metrics.csv", index=False, float_format=CSV_FORMAT)
            metrics_cells(self.examples, metrics, self.cells).to_csv(out / "metrics_cells.csv", index=False,
                                                                     float_format=CSV_FORMAT)
        winners = self.winners()
        if winners is not None:
            winners.to_csv(out / "winners.csv", index=False)
        table = self.auddc()
        if self.curves is not None and table is not None:
            self.curves.to_csv(out / "curves.csv", index=False, float_format=CSV_FORMAT)
            table.to_csv(out / "auddc.csv", index=False, float_format=CSV_FORMAT)

    def auddc(self) -> pd.DataFrame | None:
        """AUDDC per cell and over the run with bootstrap intervals
        (:func:`robust_vae.evaluation.curves.auddc_summary`); None for a run without curves."""
        from robust_vae.evaluation.curves import auddc_summary

        if self.curves is None:
            return None
        if self._auddc_cache is None or self._auddc_cache[0] is not self.examples:
            self._auddc_cache = (self.examples, auddc_summary(self.examples[["source", "target", "auddc"]]))
        return self._auddc_cache[1]

    def example_columns(self) -> list[str]:
        """The columns of ``examples.csv.gz``: :data:`EXAMPLE_COLUMNS` plus the attack's extras."""
        known = set(EXAMPLE_COLUMNS) | set(METRIC_COLUMNS)
        return EXAMPLE_COLUMNS + [c for c in self.examples.columns if c not in known]

    def members(self) -> list[str]:
        """The member recipes of an ensemble run (``run.json``'s hyperparameters; a ``.toml`` path
        by its file stem), else []."""
        members = (self.metadata.get("hyperparameters") or {}).get("members") if self.metadata.get(
            "attack") == "ensemble" else None
        if not isinstance(members, list):
            return []
        return [Path(str(m)).stem if str(m).endswith(".toml") else str(m) for m in members]

    def winners(self) -> pd.DataFrame | None:
        """Per cell, each ensemble member's wins (:func:`robust_vae.report.per_example.winners_table`);
        None for a run that is not an ensemble."""
        members = self.members()
        if not members or "winner" not in self.examples.columns:
            return None
        return winners_table(self.examples, members, self.cells)

    def to_latex(self, out_dir: str | Path, label: str | None = None) -> None:
        """matrix.tex (thesis appendix layout) and marginals.tex (thesis Tables 5.x layout)."""
        from robust_vae.report.success import marginals_latex, matrix_latex

        out = Path(out_dir)
        label = label or self.metadata.get("label", "model")
        classes = self.classes
        (out / "matrix.tex").write_text(matrix_latex(
            self.cells, caption=f"Attack success rates, {label}: AS ignore-target (AS target).",
            label=f"tab:matrix-{_slug(label)}", classes=classes))
        (out / "marginals.tex").write_text(marginals_latex(
            {label: self.marginals()}, caption=f"Marginal attack success rates per source {classes.noun}, {label}.",
            label=f"tab:marginals-{_slug(label)}", classes=classes))

    def plot(self, out_dir: str | Path) -> None:
        """heatmaps.png and examples.png."""
        from robust_vae.report.success import plot_examples, plot_heatmaps

        out = Path(out_dir)
        title = self.metadata.get("label", "")
        plot_heatmaps(self.cells, out / "heatmaps.png", title=title, classes=self.classes)
        if self.samples:
            plot_examples(self.samples, out / "examples.png", title=title, classes=self.classes)
        if self.curves is not None:
            from robust_vae.evaluation.curves import plot_mean_curve

            plot_mean_curve(self.curves, out / "curve.png", title=title)

    def to_markdown(self) -> str:
        from robust_vae.report.success import summary_markdown

        keys = ("model", "model_seed", "recipe", "attack", "per_pair", "seed", "examples_attacked",
                "device", "wall_seconds")
        meta = {k: self.metadata[k] for k in keys if k in self.metadata}
        text = summary_markdown(self.cells, self.marginals(), self.metadata.get("label", "run"), meta,
                                classes=self.classes)
        winners = self.winners()
        if winners is not None:
            text = text.rstrip("\n") + "\n\n" + winners_markdown(winners, self.members())
        table = self.auddc()
        if table is not None:
            run = table[table["scope"] == "all"].iloc[0]
            text = text.rstrip("\n") + (
                f"\n\nAUDDC (area under the normalised distortion–distance curve, lower = easier to attack): "
                f"{run['auddc']:.4f} [{run['auddc_lo']:.4f}, {run['auddc_hi']:.4f}] over {run['n']} examples "
                f"({run['n_undefined']} without one); per cell in `auddc.csv`, curves in `curves.csv` and "
                "`curve.png`.\n")
        return text

    def save(self, out_dir: str | Path, html: bool = False) -> None:
        """Every report file of the run, rendered from these results (``html``: also the
        run's static page, ``index.html``)."""
        out = Path(out_dir)
        self.to_csv(out)
        self.to_latex(out)
        self.plot(out)
        (out / "summary.md").write_text(self.to_markdown())
        (out / "run.json").write_text(json.dumps(self.metadata, indent=2, default=str) + "\n")
        np.savez_compressed(out / "samples.npz", **dict[str, Any](_samples_to_arrays(self.samples)))
        if html:
            from robust_vae.report.html import write_html  # needs markdown-it-py; only for pages

            write_html(out)

    @classmethod
    def load(cls, run_dir: str | Path) -> SuccessMatrix:
        """Read a saved run (cells.csv, examples.csv.gz, run.json, samples.npz)."""
        run = Path(run_dir)
        missing = [n for n in ("cells.csv", "run.json") if not (run / n).exists()]
        if missing:
            raise ConfigError(f"{run} is not a finished run (missing {', '.join(missing)}): pass a folder "
                              "written by `robust-vae attack`")
        fix = "restore the folder, or rerun the `command` in its run.json"
        try:
            cells = pd.read_csv(run / "cells.csv")
            examples_path = run / "examples.csv.gz"
            examples = (pd.read_csv(examples_path) if examples_path.exists()
                        else pd.DataFrame(columns=EXAMPLE_COLUMNS))
            metrics_path = run / "metrics.csv"
            if metrics_path.exists():
                metrics = pd.read_csv(metrics_path)
                if len(metrics) != len(examples) or not (
                        metrics[KEY_COLUMNS].to_numpy() == examples[KEY_COLUMNS].to_numpy()).all():
                    raise ValueError("metrics.csv does not list the examples of examples.csv.gz")
                examples = pd.concat([examples, metrics.drop(columns=KEY_COLUMNS)], axis=1)
            metadata = json.loads((run / "run.json").read_text())
            curves = pd.read_csv(run / "curves.csv") if (run / "curves.csv").exists() else None
            samples = []
            if (run / "samples.npz").exists():
                with np.load(run / "samples.npz") as data:
                    samples = _arrays_to_samples({k: data[k] for k in data.files})
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, pd.errors.ParserError) as error:
            raise ConfigError(f"{run} cannot be read ({type(error).__name__}: {error}): {fix}") from None
        absent = [c for c in CELL_COLUMNS if c not in cells.columns]
        if absent or not isinstance(metadata, dict):
            what = f"cells.csv lacks {', '.join(absent)}" if absent else "run.json is not a JSON object"
            raise ConfigError(f"{run}: {what}: {fix}")
        for column in ("source", "target", "n", "hits_target", "hits_ignore_target"):
            if not pd.api.types.is_integer_dtype(cells[column]):
                raise ConfigError(f"{run}: cells.csv column {column} must hold whole numbers: {fix}")
        return cls(cells, examples, samples, metadata, curves=curves)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in str(text)).strip("-").lower()


def _samples_to_arrays(samples: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    if not samples:
        return {"pairs": np.zeros((0, 3), dtype=np.int64), "images": np.zeros((0, 4, 0, 0), np.float32)}
    pairs = np.array([[s["source"], s["target"], s.get("predicted", -1)] for s in samples], dtype=np.int64)
    keys = ("source", "adversarial", "reconstruction", "target")
    images = np.stack([np.stack([_grey_or_colour(s["images"][k]) for k in keys]) for s in samples])
    return {"pairs": pairs, "images": images.astype(np.float32)}


def _grey_or_colour(image: Any) -> np.ndarray:
    """(H, W) or (1, H, W) -> (H, W); (C, H, W) with C > 1 stays (C, H, W)."""
    array = np.asarray(image)
    return array[0] if array.ndim == 3 and array.shape[0] == 1 else array


def _arrays_to_samples(arrays: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    keys = ("source", "adversarial", "reconstruction", "target")
    return [
        {"source": int(p[0]), "target": int(p[1]), "predicted": int(p[2]),
         "images": {k: img[j] for j, k in enumerate(keys)}}
        for p, img in zip(arrays["pairs"], arrays["images"])
    ]


def cells_from_examples(plans: list[PairPlan], examples: pd.DataFrame) -> pd.DataFrame:
    """Aggregate per-example records into the per-pair cells table (with Wilson bounds)."""
    rows = []
    grouped = {key: frame for key, frame in examples.groupby(["source", "target"])}
    for plan in plans:
        frame = grouped.get((plan.source, plan.target), examples.iloc[0:0])
        n = len(frame)
        hits_t = int((frame["prediction"] == plan.target).sum())
        hits_i = int((frame["prediction"] != plan.source).sum())
        rows.append({
            "source": plan.source, "target": plan.target, "n_pairs": plan.n_pairs, "n": n,
            "hits_target": hits_t, "hits_ignore_target": hits_i,
            "as_target": hits_t / n if n else math.nan,
            "as_ignore_target": hits_i / n if n else math.nan,
            "mean_l2": frame["l2"].mean() if n else math.nan,
            "mean_linf": frame["linf"].mean() if n else math.nan,
            "mean_latent_distance": frame["latent_distance"].mean() if n else math.nan,
        })
    return add_intervals(pd.DataFrame(rows, columns=CELL_COLUMNS))


def _batches(indices: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), size):
        yield indices[start:start + size]


def _batches_with_views(model: nn.Module, classifier: nn.Module, label_source: str | None,
                        sources: np.ndarray, targets: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, nn.Module]]:
    """The rows of a unit (classes ``sources``, ``targets``, (N,)) in batches of at most ``size``,
    each with the model as its threat model sees it: the model itself (no label), the
    classifier-labelled view (any rows), or, under ``true``, one view per cell (its source's
    class; targets under their own), so a batch never straddles two cells."""
    rows = np.arange(len(sources))
    if label_source is None or label_source == CLASSIFIER:
        view = model if label_source is None else ClassifierLabel(model, classifier)
        for batch in _batches(rows, size):
            yield batch, view
        return
    starts = np.flatnonzero((np.diff(sources) != 0) | (np.diff(targets) != 0)) + 1
    for cell in np.split(rows, starts):
        if len(cell):
            cell_view = TrueLabel(model, int(sources[cell[0]]), int(targets[cell[0]]))
            for batch in _batches(cell, size):
                yield batch, cell_view


def library_versions() -> dict[str, str]:
    """Versions of Python and of every library a result depends on (for run.json)."""
    return {"python": platform.python_version(), "robust_vae": __version__, "torch": torch.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__, "pandas": pd.__version__,
            "foolbox": foolbox.__version__}


def success_matrix(
    model: nn.Module,
    classifier: nn.Module,
    dataset: Dataset,
    attack: Attack,
    per_pair: int | None = None,
    seed: int = 0,
    *,
    batch_size: int = 512,
    out_dir: str | Path | None = None,
    metadata: dict[str, Any] | None = None,
    fingerprint: dict[str, Any] | None = None,
    restart: bool = False,
    progress: bool = True,
    samples_per_run: int = 6,
    label_source: str | None = None,
) -> SuccessMatrix:
    """Run protocol §4 steps 1–6 with ``attack`` on every ordered class pair.

    ``per_pair`` caps the pairs sampled per cell (None: every test pair). With ``out_dir``
    each finished unit is persisted there and a rerun resumes; without it nothing is written.
    A sweep attack (K > 1) is reduced per example to the entry closest to the target code.
    ``fingerprint`` (from :meth:`RunConfig.fingerprint`) identifies the run in ``out_dir``;
    without it one is made from ``metadata`` (model, model_seed, weights and classifier sha256).
    ``label_source``: the threat model of a conditional model (``true`` or ``classifier``, see
    :mod:`robust_vae.models.conditional`); required for one, refused for any other model.
    """
    if per_pair is not None and per_pair < 1:
        raise ConfigError(f"per_pair must be >= 1 (or None for every pair), got {per_pair}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    meta = dict(metadata or {})
    label_source = check_label_source(is_conditional(model), label_source,
                                      str(meta.get("model") or getattr(model, "family", type(model).__name__)))
    device = model_device(model)
    classifier = classifier.to(device).eval()
    attack.bind(classifier=classifier)  # classifier-guided attacks attack the judging classifier
    model.eval()
    clean_pred = clean_predictions(model, classifier, dataset.images, labels=dataset.labels, label_source=label_source)
    classes = dataset.classes
    plans = plan_pairs(dataset.labels, clean_pred, dataset.num_classes, per_pair, seed)
    units = group_units(plans, batch_size)
    if label_source is not None:
        meta.update(label_source=label_source, label_source_description=DESCRIPTIONS[label_source])
    if fingerprint is None:
        fingerprint = fingerprint_of(
            model=meta.get("model"), model_seed=meta.get("model_seed"), weights_sha256=meta.get("weights_sha256"),
            dataset=dataset.name, attack=attack, per_pair=per_pair, seed=seed, batch_size=batch_size,
            classifier_sha256=meta.get("classifier_sha256"), label_source=label_source,
        )
    store = RunStore(Path(out_dir)) if out_dir is not None else None
    with contextlib.ExitStack() as stack:
        if store is not None:
            store.check(fingerprint, restart=restart)  # refuse before touching the folder
            stack.enter_context(store.lock())
            store.check_or_start(fingerprint, restart=restart)
        results = _attack_units(plans, units, model, classifier, dataset, attack, seed, batch_size, device,
                                store, progress, label_source)
    total_pairs = len(plans)

    records = [results[i] for i in range(len(units))]
    examples = pd.DataFrame({
        col: np.concatenate([r[col] for r in records]) if records else np.array([])
        for col in EXAMPLE_COLUMNS
    })
    examples = _with_optional_columns(examples, records)
    curves = _curves(examples, records)
    cells = cells_from_examples(plans, examples)
    samples = _choose_samples(records, samples_per_run)
    meta.update({
        "dataset": dataset.name, **classes.metadata(),
        "attack": attack.name, "hyperparameters": attack.hyperparameters(),
        "per_pair": per_pair, "full": per_pair is None, "seed": seed, "batch_size": batch_size,
        "pairs": total_pairs, "pairs_sampled": int(sum(p.n_pairs for p in plans)),
        "examples_attacked": int(len(examples)), "units": len(units),
        "attack_seconds": round(float(sum(r["seconds"].sum() for r in records)), 2),
        "device": str(device), "threads": torch.get_num_threads(),
        "versions": library_versions(),
        "conventions": {
            "evaluation": "deterministic: Gaussian means and argmax one-hot categorical (no Gumbel noise)",
            "kept": "sources whose clean reconstruction the classifier labels as the source",
            "sweep_reduction": "per example, the sweep entry with the smallest latent distance",
            "marginals": "unweighted mean over cells",
        },
        "metrics": metrics_settings(),
    })
    return SuccessMatrix(cells, examples, samples, meta, curves=curves)


def _curves(examples: pd.DataFrame, records: list[dict[str, np.ndarray]]) -> pd.DataFrame | None:
    """The run's distortion–distance curves (:func:`robust_vae.evaluation.curves.curves_table`)
    when every unit that attacked examples recorded them (a targeted sweep), else None."""
    attacked = [r for r in records if len(r["prediction"])]
    if not attacked or not all("curve_sweep_values" in r for r in attacked):
        return None
    arrays = {key: np.concatenate([r[key] for r in attacked]) for key in CURVE_KEYS}
    return curves_table(examples, arrays, [float(v) for v in attacked[0]["curve_sweep_values"]])


def _with_optional_columns(examples: pd.DataFrame, records: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """``examples`` plus the metric columns and the attack's extras the units recorded (NaN in
    the rows of a unit saved before a metric existed)."""
    extras = sorted({k[len(EXTRA_PREFIX):] for r in records for k in r if k.startswith(EXTRA_PREFIX)})
    columns: dict[str, np.ndarray] = {}
    for name, key in [(c, c) for c in METRIC_COLUMNS] + [(e, EXTRA_PREFIX + e) for e in extras]:
        parts = [r[key] if key in r else np.full(len(r["prediction"]), np.nan) for r in records]
        columns[name] = np.concatenate(parts) if parts else np.array([])
    return examples.assign(**columns) if records else examples


@torch.no_grad()
def _classify_reconstructions(model: nn.Module, classifier: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    recon = attackable(model).reconstruct(x)
    return recon, classifier(recon).argmax(-1)


def _attack_units(plans: list[PairPlan], units: list[list[int]], model: nn.Module, classifier: nn.Module,
                  dataset: Dataset, attack: Attack, seed: int, batch_size: int, device: torch.device,
                  store: RunStore | None, progress: bool,
                  label_source: str | None = None) -> dict[int, dict[str, np.ndarray]]:
    """Every unit's per-example records: loaded when ``store`` has it, else attacked (and saved)."""
    unit_sizes = [sum(plans[i].n for i in unit) for unit in units]
    done_examples = sum(size for i, size in enumerate(unit_sizes) if store is not None and store.done(i))
    bar = tqdm(total=sum(unit_sizes), initial=done_examples, desc=f"{attack.name}", unit="example",
               disable=not progress, dynamic_ncols=True, mininterval=0.5)
    results: dict[int, dict[str, np.ndarray]] = {}
    for unit_id, unit in enumerate(units):
        if store is not None and store.done(unit_id):
            results[unit_id] = store.load_unit(unit_id)
            continue
        started = time.perf_counter()
        arrays = attack_unit([plans[i] for i in unit], model, classifier, dataset, attack,
                             seed, batch_size, device, bar, label_source)
        arrays["seconds"] = np.array([time.perf_counter() - started])
        if store is not None:
            store.save_unit(unit_id, arrays)
        results[unit_id] = arrays
    bar.close()
    return results


def _batch_progress(bar: Any, size: int) -> Callable[[int, int], None]:
    """A :func:`robust_vae.core.progress.listen` callback that moves ``bar`` through a batch of
    ``size`` examples as the attack reports its steps."""
    start = bar.n

    def move(done: int, total: int) -> None:
        position = start + (size * done) // total
        if position > bar.n:
            bar.update(position - bar.n)

    return move


def attack_unit(plans: list[PairPlan], model: nn.Module, classifier: nn.Module, dataset: Dataset,
                 attack: Attack, seed: int, batch_size: int, device: torch.device,
                 bar: Any = None, label_source: str | None = None) -> dict[str, np.ndarray]:
    """Attack every kept example of ``plans``; per-example records plus one sample per pair.

    ``bar`` (a tqdm bar over examples, optional) moves with the attack's steps inside each batch.
    ``label_source``: a conditional model's threat model (each batch then sees the model through it).
    """
    src = np.concatenate([p.source_index[p.kept] for p in plans])
    tgt = np.concatenate([p.target_index[p.kept] for p in plans])
    seeds = torch.cat([example_seeds(seed, p, dataset.num_classes) for p in plans]) if plans else torch.zeros(0, dtype=torch.int64)
    s_cls = np.concatenate([np.full(p.n, p.source) for p in plans])
    t_cls = np.concatenate([np.full(p.n, p.target) for p in plans])
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("prediction", "l2", "linf", "latent_distance", "sweep_index",
                                                             *METRIC_COLUMNS)}
    adversarials, reconstructions = [], []
    sweep_values: np.ndarray | None = None
    for rows, view in _batches_with_views(model, classifier, label_source, s_cls, t_cls, batch_size):
        xs = dataset.images[src[rows]].to(device)
        xt = dataset.images[tgt[rows]].to(device)
        start = bar.n if bar is not None else 0
        with progress.listen(_batch_progress(bar, len(rows))) if bar is not None else contextlib.nullcontext():
            result = attack(view, xs, xt, seeds=seeds[rows], target_classes=torch.from_numpy(t_cls[rows]))
        if bar is not None and bar.n < start + len(rows):
            bar.update(start + len(rows) - bar.n)
        if result.l2.shape[0] > 1 and not attack.untargeted:  # a targeted sweep: its distortion–distance curve
            for name, values in sweep_curve_arrays(attackable(view).reconstruct, result, xs, xt).items():
                columns.setdefault(name, []).append(values)
            sweep_values = np.asarray(result.sweep_values, dtype=np.float64)
        result, sweep_index = attack.reduce_sweep(result)
        adversarial = result.adversarial[0]
        recon, pred = _classify_reconstructions(view, classifier, adversarial)
        columns["prediction"].append(pred.cpu().numpy())
        columns["l2"].append(result.l2[0].cpu().numpy())
        columns["linf"].append(result.linf[0].cpu().numpy())
        columns["latent_distance"].append(result.latent_distance[0].cpu().numpy())
        columns["sweep_index"].append(sweep_index.cpu().numpy())
        for name, values in attack_metrics(view, xs, adversarial).items():
            columns[name].append(values)
        for name, extra in result.extras.items():
            columns.setdefault(EXTRA_PREFIX + name, []).append(extra[0].cpu().numpy())
        adversarials.append(adversarial.cpu())
        reconstructions.append(recon.cpu())
    out = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in columns.items()}
    out.update({"source": s_cls, "target": t_cls, "source_index": src, "target_index": tgt})
    if sweep_values is not None:
        out["curve_sweep_values"] = sweep_values
    # one sample per pair (its first kept example) for the examples figure
    first = np.cumsum([0] + [p.n for p in plans])[:-1]
    has = np.array([p.n > 0 for p in plans], dtype=bool)
    picks = first[has]
    if len(src):
        adv_all = torch.cat(adversarials).numpy()
        rec_all = torch.cat(reconstructions).numpy()
        out["sample_rows"] = picks
        out["sample_images"] = np.stack([
            dataset.images[src[picks]].numpy(), adv_all[picks], rec_all[picks], dataset.images[tgt[picks]].numpy()
        ], axis=1).astype(np.float32)
    else:
        out["sample_rows"] = np.zeros(0, dtype=np.int64)
        out["sample_images"] = np.zeros((0, 4, *dataset.images.shape[1:]), dtype=np.float32)
    return out


def _choose_samples(records: list[dict[str, np.ndarray]], count: int) -> list[dict[str, Any]]:
    """Up to ``count`` pairs for examples.png: successful targeted examples first, by source."""
    candidates = []
    for r in records:
        for row, images in zip(r["sample_rows"], r["sample_images"]):
            s, t, p = int(r["source"][row]), int(r["target"][row]), int(r["prediction"][row])
            candidates.append((p != t, s, t, p, images))
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))
    chosen, seen_sources = [], set()
    for _failed, s, t, p, images in candidates:
        if s in seen_sources:
            continue
        seen_sources.add(s)
        chosen.append({"source": s, "target": t, "predicted": p,
                       "images": {k: images[j, 0] for j, k in enumerate(("source", "adversarial", "reconstruction", "target"))}})
        if len(chosen) == count:
            break
    return chosen
