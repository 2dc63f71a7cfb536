"""All seven disentanglement metrics of a trained VAE on a dataset with ground-truth factors.

:func:`measure_disentanglement` (a model object) and :func:`zoo_disentanglement` (a zoo model by
name, with its card's identity) draw factor indices, have the dataset render them
(``DatasetSource.render_factors``) and take the model's *code*:

* ``code="mean"`` (the default): the posterior means, i.e. the Gaussian means and, for a model
  with a categorical latent, the categorical posterior's mean, its probabilities
  softmax(logits) (K more dimensions; τ plays no part: it only shapes the Concrete relaxation
  used in training);
* ``code="gaussian"``: the Gaussian means alone.

The fixed-code metrics (MIG, SAP, DCI, modularity, explicitness) share one sample of
``num_train + num_test`` points (15,000 by default) with factors drawn uniformly and
independently, i.e. uniformly over the full factor grid, as disentanglement_lib samples its
ground-truth data; the β-VAE and FactorVAE scores draw their own interventions through a
:class:`ModelSampler`. Sample sizes default to disentanglement_lib's (10,000 train, 5,000
test / eval points, groups of 64 factor vectors). Images are rendered in batches of
``batch_size`` on the model's device and encoded without gradients, in eval mode, in chunks
of :data:`ENCODE_CHUNK` images that start at fixed positions: an encoder's float arithmetic
can depend on how many images it sees at once, so this is what makes the codes, and every
score, independent of ``batch_size``. Everything is deterministic for ``seed``.

A dataset without factors but with classes (MNIST, Fashion-MNIST) is measured with the class
as its only factor (:func:`measure_class_factor`): MIG, SAP, DCI completeness and
informativeness and explicitness on a sample of training images; the scores that are
constant with one factor (DCI disentanglement, modularity) or need rendered interventions
(the β-VAE and FactorVAE scores) are left out.
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import sklearn
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from robust_vae.core.errors import ConfigError, DataError
from robust_vae.core.version import __version__
from robust_vae.data import DatasetSource, dataset_source
from robust_vae.data.shape_match import load_dataset_at
from robust_vae.evaluation.disentanglement.base import FloatArray, IntArray, MetricResult, UniformFactors
from robust_vae.evaluation.disentanglement.betavae_score import BATCH_SIZE as BETAVAE_GROUP
from robust_vae.evaluation.disentanglement.common import NUM_TEST, NUM_TRAIN
from robust_vae.evaluation.disentanglement.factorvae_score import BATCH_SIZE as FACTORVAE_GROUP
from robust_vae.evaluation.disentanglement.registry import METRICS, evaluate_all
from robust_vae.models import LatentVAE
from robust_vae.zoo import find_card, load_model

ENCODE_CHUNK = 64           # images per encoder call, at fixed offsets: codes independent of batch_size
DEFAULT_BATCH_SIZE = 1024   # images rendered (and moved to the device) at once; a multiple of ENCODE_CHUNK
CODES = {
    "mean": "posterior means: Gaussian means, then the categorical's probabilities softmax(logits) if the model "
            "has a categorical latent",
    "gaussian": "Gaussian posterior means only (a categorical latent is left out)",
    "variables": "one dimension per latent variable: the Gaussian means, then the categorical's most probable "
                 "value (one discrete dimension) if the model has a categorical latent",
}
SAMPLE_STREAM = 1  # the fixed-code sample's factors come from numpy default_rng([seed, SAMPLE_STREAM])
#: the metrics that are defined with one factor (the class of a dataset without factors)
CLASS_FACTOR_METRICS = ("mig", "sap", "dci", "explicitness")
#: scores that are constant with one factor, hence left out in that case (why)
ONE_FACTOR_CONSTANTS = {
    "dci_disentanglement": "1 for every code: each dimension's importance goes to the one factor",
    "modularity": "1 for every code: each dimension is informative about at most the one factor",
    "betavae_score": "needs images rendered with one factor held fixed and the others drawn",
    "factorvae_score": "needs images rendered with one factor held fixed and the others drawn",
}
# the score each metric is known by (the tables' and the zoo's headline), in reading order
HEADLINE: tuple[tuple[str, str], ...] = (
    ("betavae_score", "betavae_score"), ("factorvae_score", "factorvae_score"), ("mig", "mig"), ("sap", "sap"),
    ("dci", "dci_disentanglement"), ("dci", "dci_completeness"), ("dci", "dci_informativeness_test"),
    ("modularity", "modularity"), ("explicitness", "explicitness_test"),
)


def code_dimensions(model: LatentVAE, code: str) -> list[str]:
    """Names of the code's dimensions: ``z0 ..`` (Gaussian means), then ``c0 ..`` (probabilities) or
    ``c`` (the categorical's most probable value, code ``variables``)."""
    names = [f"z{j}" for j in range(model.config.latent_dim)]
    if code == "mean":
        names += [f"c{k}" for k in range(model.config.categorical_dim)]
    elif code == "variables" and model.config.categorical_dim:
        names.append("c")
    return names


def describe_code(model: LatentVAE, code: str) -> str:
    """The code of ``model`` in words, e.g. "the 10 Gaussian posterior means and the 10 probabilities
    softmax(logits) of the categorical latent"."""
    text = f"the {model.config.latent_dim} Gaussian posterior means"
    if code == "mean" and model.config.categorical_dim:
        text += f" and the {model.config.categorical_dim} probabilities softmax(logits) of the categorical latent"
    elif code == "variables" and model.config.categorical_dim:
        text += f" and the most probable value (of {model.config.categorical_dim}) of the categorical latent"
    elif model.config.categorical_dim:
        text += " (the categorical latent left out)"
    return text


def factor_source(dataset: str, *, class_factor: bool = False) -> DatasetSource:
    """The registered dataset ``dataset`` if it has ground-truth factors (or, with ``class_factor``,
    at least classes: the class is then the one factor), else a one-line error."""
    source = dataset_source(dataset)
    if source.factor_sizes or class_factor and source.num_classes:
        return source
    hint = "" if class_factor or not source.num_classes else (
        f"; its class ({source.class_noun}) can serve as the one factor of MIG, SAP, DCI completeness and "
        "explicitness: `robust-vae disentanglement --dataset " + source.name + "`")
    raise DataError(f"{source.name} has no ground-truth factors, so its disentanglement cannot be measured with "
                    f"the factor metrics: use a dataset with factors (dsprites){hint}")


def uses_class_factor(source: DatasetSource) -> bool:
    """Whether ``source``'s disentanglement is measured with its class as the only factor."""
    return not source.factor_sizes


@dataclass
class ModelSampler:
    """A :class:`FactorSampler`: factor values drawn uniformly and independently, images rendered by
    the dataset, codes from the model (``(n, D)`` float64; see :data:`CODES`).

    ``on_images(n)`` is told how many images each batch encoded (a progress bar).
    """

    model: LatentVAE
    source: DatasetSource
    render_options: dict[str, int | None]
    code: str = "mean"
    batch_size: int = DEFAULT_BATCH_SIZE
    on_images: Callable[[int], None] | None = None
    images_encoded: int = 0

    @property
    def num_values(self) -> tuple[int, ...]:
        return tuple(self.source.factor_sizes)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def sample_factors(self, n: int, rng: np.random.Generator) -> IntArray:
        """``(n, F)`` factor indices, each uniform over its values, independent of the others."""
        return UniformFactors(self.num_values, self.represent).sample_factors(n, rng)

    def render(self, factors: torch.Tensor) -> torch.Tensor:
        """Images ``(n, C, H, W)`` of ``(n, F)`` int64 factor indices, on the model's device."""
        images = self.source.render_factors(factors.to(self.device), **self.render_options)
        return images.to(self.device, torch.float32)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The codes ``(n, D)`` of ``images``, :data:`ENCODE_CHUNK` images per encoder call."""
        parts = []
        for start in range(0, images.shape[0], ENCODE_CHUNK):
            params = self.model.encode(images[start:start + ENCODE_CHUNK])
            if self.code == "mean" and params.logits is not None:
                parts.append(torch.cat([params.mean, F.softmax(params.logits, dim=-1)], dim=-1))
            elif self.code == "variables" and params.logits is not None:
                value = params.logits.argmax(dim=-1, keepdim=True).to(params.mean.dtype)
                parts.append(torch.cat([params.mean, value], dim=-1))
            else:
                parts.append(params.mean)
        return torch.cat(parts)

    def represent(self, factors: IntArray) -> FloatArray:
        """Render ``factors (n, F)`` and return the model's codes ``(n, D)`` as float64."""
        rows = np.ascontiguousarray(factors, dtype=np.int64)
        return self._codes(rows.shape[0], lambda start, stop: self.render(torch.from_numpy(rows[start:stop])))

    def represent_images(self, images: torch.Tensor) -> FloatArray:
        """The model's codes ``(n, D)`` (float64) of given ``images (n, C, H, W)`` (a dataset without
        factors, whose class is the one factor)."""
        return self._codes(images.shape[0], lambda start, stop: images[start:stop].to(self.device, torch.float32))

    def _codes(self, n: int, batch: Callable[[int, int], torch.Tensor]) -> FloatArray:
        """Codes of ``n`` images, ``batch(start, stop)`` giving ``batch_size`` of them at a time."""
        out: list[FloatArray] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for start in range(0, n, self.batch_size):
                    stop = min(n, start + self.batch_size)
                    out.append(self.encode(batch(start, stop)).double().cpu().numpy())
                    self.images_encoded += stop - start
                    if self.on_images is not None:
                        self.on_images(stop - start)
        finally:
            self.model.train(was_training)
        if not out:
            return np.zeros((0, len(code_dimensions(self.model, self.code))), dtype=np.float64)
        return np.concatenate(out)


def metric_options(num_train: int, num_test: int, group_size: int | None,
                   options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Every metric's keyword arguments: the sample sizes (``num_train`` / ``num_test`` for all,
    FactorVAE's variance estimate on ``num_train`` points, ``group_size`` factor vectors per
    β-VAE / FactorVAE point when given), then ``options[metric]`` over them."""
    unknown = sorted(set(options or {}) - set(METRICS.names()))
    if unknown:
        raise ConfigError(f"options for unknown metrics {unknown}: choose from {', '.join(METRICS.names())}")
    group = {} if group_size is None else {"batch_size": group_size}
    sizes: dict[str, dict[str, Any]] = {
        "betavae_score": {"num_train": num_train, "num_eval": num_test, **group},
        "factorvae_score": {"num_train": num_train, "num_eval": num_test, "num_variance": num_train, **group},
        "mig": {"num_train": num_train},
        "modularity": {"num_train": num_train},
        "sap": {"num_train": num_train, "num_test": num_test},
        "dci": {"num_train": num_train, "num_test": num_test},
        "explicitness": {"num_train": num_train, "num_test": num_test},
    }
    return {name: {**sizes.get(name, {}), **dict((options or {}).get(name, {}))} for name in METRICS.names()}


def images_needed(points: int, kwargs: Mapping[str, Mapping[str, Any]]) -> int:
    """How many images the fixed sample and the interventional metrics render (the progress total;
    FactorVAE renders fewer when no code dimension is active)."""
    beta, factor = kwargs.get("betavae_score", {}), kwargs.get("factorvae_score", {})
    total = points
    if "betavae_score" in kwargs:
        total += 2 * (beta.get("num_train", NUM_TRAIN) + beta.get("num_eval", NUM_TEST)) \
            * beta.get("batch_size", BETAVAE_GROUP)
    if "factorvae_score" in kwargs:
        total += factor.get("num_variance", NUM_TRAIN) + (factor.get("num_train", NUM_TRAIN) + factor.get(
            "num_eval", NUM_TEST)) * factor.get("batch_size", FACTORVAE_GROUP)
    return int(total)


def _check(seed: int, code: str, batch_size: int, num_train: int, num_test: int, group_size: int | None) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a whole number >= 0, got {seed!r}")
    if code not in CODES:
        raise ConfigError(f"unknown code {code!r}: choose {' or '.join(CODES)}")
    if batch_size < 1 or batch_size % ENCODE_CHUNK:
        raise ConfigError(f"batch_size must be a positive multiple of {ENCODE_CHUNK}, got {batch_size}")
    if num_train < 1 or num_test < 1:
        raise ConfigError(f"num_train and num_test must be >= 1, got {num_train} and {num_test}")
    if group_size is not None and group_size < 2:
        raise ConfigError(f"group_size must be >= 2 (FactorVAE needs a variance within each group), got {group_size}")


def _render_options(model: LatentVAE, source: DatasetSource, image_size: int | None) -> dict[str, int | None]:
    """The dataset's render options: ``image_size`` (default: the model's) where the dataset takes one."""
    if "image_size" not in source.options:
        if image_size is not None:
            raise ConfigError(f"{source.name} renders one image size: leave image_size unset")
        return {}
    return {"image_size": image_size if image_size is not None else model.image_shape[1]}


def _check_shape(model: LatentVAE, sampler: ModelSampler) -> tuple[int, int, int]:
    """The rendered image shape (C, H, W), checked against the shape ``model`` takes."""
    expected = model.image_shape
    probe = torch.zeros(1, len(sampler.num_values), dtype=torch.int64)
    try:
        shape = tuple(int(s) for s in sampler.render(probe).shape[1:])
    except DataError as error:
        raise ConfigError(f"{model.family} takes {expected} images but {sampler.source.name} cannot render them "
                          f"({error})") from None
    if shape != expected:
        raise ConfigError(f"{model.family} takes {expected} images but {sampler.source.name} renders {shape}: "
                          "evaluate a model trained on this dataset at its image size")
    return expected


def _progress_bar(total: int, progress: bool) -> Any:
    """The images-encoded bar (on stderr; every 30 s when stderr is not a terminal)."""
    return tqdm(total=total, desc="disentanglement", unit="image", disable=not progress,
                mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)


def _metric_timer(bar: Any, seconds: dict[str, float]) -> Callable[[str], None]:
    """``on_metric(name)``: shows ``name`` in the bar and records the previous step's wall seconds in
    ``seconds`` (the codes first; ``on_metric("")`` closes the last metric)."""
    current: list[tuple[str, float]] = [("codes", time.perf_counter())]
    bar.set_postfix_str("codes")

    def on_metric(name: str) -> None:
        now = time.perf_counter()
        seconds[current[0][0]] = round(now - current[0][1], 3)
        current[:] = [(name, now)]
        bar.set_postfix_str(name)

    return on_metric


def measure_disentanglement(
    model: LatentVAE,
    dataset: str = "dsprites",
    *,
    seed: int = 0,
    code: str = "mean",
    num_train: int = NUM_TRAIN,
    num_test: int = NUM_TEST,
    group_size: int | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    image_size: int | None = None,
    identity: Mapping[str, Any] | None = None,
    progress: bool = False,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """β-VAE score, FactorVAE score, MIG, SAP, DCI, modularity and explicitness of ``model`` on
    ``dataset`` (which must have ground-truth factors), as a JSON-ready dict.

    ``code``: see :data:`CODES`. ``num_train`` / ``num_test``: every metric's train and test (or
    eval) points (disentanglement_lib's 10,000 / 5,000 by default; the fixed codes are one sample
    of both together); ``group_size``: factor vectors per β-VAE / FactorVAE point (default 64);
    ``options[metric]``: any further keyword of one metric (e.g. ``{"dci": {"regressor": "gbt"}}``).
    ``batch_size`` (a multiple of 64) only sets how many images are rendered at once: it does not
    change any number. ``image_size``: the render size (default: the model's). ``identity``: what
    the model is (name, seed, sha256, card), recorded as given. ``progress``: a tqdm bar over the
    images encoded, on stderr.

    A dataset without factors but with classes (mnist, fashion-mnist) is measured with its class
    as the only factor (:func:`measure_class_factor`, ``data_dir`` locating its files).

    Returns ``{"dataset", "factor_names", "factor_sizes", "image_shape", "model", "code", "seed",
    "sample", "scores" (every score of every metric, flat), "headline" (one line per metric's
    main scores), "metrics" ({name: {"scores", "settings"}}: sample sizes, seeds, classifiers),
    "images_encoded", "batch_size", "encode_chunk", "seconds", "versions", "date"}``.
    """
    _check(seed, code, batch_size, num_train, num_test, group_size)
    source = factor_source(dataset, class_factor=True)
    if uses_class_factor(source):
        if group_size is not None or image_size is not None:
            raise ConfigError(f"{source.name} has no factors to render: group_size and image_size do not apply")
        return measure_class_factor(model, source, seed=seed, code=code, num_train=num_train, num_test=num_test,
                                    options=options, batch_size=batch_size, identity=identity, progress=progress,
                                    data_dir=data_dir)
    kwargs = metric_options(num_train, num_test, group_size, options)
    sampler = ModelSampler(model, source, _render_options(model, source, image_size), code, batch_size)
    shape = _check_shape(model, sampler)

    points = num_train + num_test
    bar = _progress_bar(images_needed(points, kwargs), progress)
    sampler.on_images = bar.update
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    on_metric = _metric_timer(bar, seconds)
    try:
        factors = sampler.sample_factors(points, np.random.default_rng([seed, SAMPLE_STREAM]))
        codes = sampler.represent(factors)
        results = evaluate_all(codes, factors, sampler, seed=seed, options=kwargs, on_metric=on_metric)
        on_metric("")
    finally:
        bar.total = bar.n  # FactorVAE renders nothing more when every code dimension collapsed
        bar.close()
    return _result(model, source, shape, code, seed, points, results, sampler, identity, seconds,
                   time.perf_counter() - started)


def measure_class_factor(model: LatentVAE, source: DatasetSource, *, seed: int = 0, code: str = "mean",
                         num_train: int = NUM_TRAIN, num_test: int = NUM_TEST,
                         options: Mapping[str, Mapping[str, Any]] | None = None,
                         batch_size: int = DEFAULT_BATCH_SIZE, identity: Mapping[str, Any] | None = None,
                         progress: bool = False, data_dir: str | None = None) -> dict[str, Any]:
    """The metrics of :data:`CLASS_FACTOR_METRICS` with the class label as the only factor, for a
    dataset without ground-truth factors (MNIST's digit, Fashion-MNIST's item).

    How concentrated the class is in one code dimension (MIG, SAP), in few (DCI completeness), and
    how well the code predicts it (DCI informativeness, explicitness). The sample: ``num_train +
    num_test`` training images drawn without replacement (numpy ``default_rng([seed, 1])``; all
    of them if the split is smaller), which each metric splits as on dSprites. The scores that are
    constant with one factor, or need rendered interventions, are left out and named in the
    result's ``"not_applicable"`` (:data:`ONE_FACTOR_CONSTANTS`). Same result layout as
    :func:`measure_disentanglement`.
    """
    _check(seed, code, batch_size, num_train, num_test, None)
    extra = {name: dict(value) for name, value in (options or {}).items()}
    unknown = sorted(set(extra) - set(CLASS_FACTOR_METRICS))
    if unknown:
        raise ConfigError(f"metric option(s) for {unknown}: with the class as the only factor the metrics are "
                          f"{', '.join(CLASS_FACTOR_METRICS)}")
    kwargs = {name: value for name, value in metric_options(num_train, num_test, None, extra).items()
              if name in CLASS_FACTOR_METRICS}
    data = load_dataset_at(source.name, "train", model.image_shape, data_dir, what=model.family)
    points = min(num_train + num_test, int(data.labels.shape[0]))
    rows = np.sort(np.random.default_rng([seed, SAMPLE_STREAM]).choice(data.labels.shape[0], points, replace=False))
    sampler = ModelSampler(model, source, {}, code, batch_size)
    bar = _progress_bar(points, progress)
    sampler.on_images = bar.update
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    on_metric = _metric_timer(bar, seconds)
    try:
        index = torch.from_numpy(rows)
        codes = sampler.represent_images(data.images[index])
        factors = data.labels[index].numpy().astype(np.int64)[:, None]
        results = evaluate_all(codes, factors, None, seed=seed, options=kwargs, on_metric=on_metric,
                               only=CLASS_FACTOR_METRICS)
        on_metric("")
    finally:
        bar.close()
    dci = results["dci"]
    results["dci"] = MetricResult(dci.name, {k: v for k, v in dci.scores.items() if k != "dci_disentanglement"},
                                  dci.settings)
    result = _result(model, source, model.image_shape, code, seed, points, results, sampler, identity, seconds,
                     time.perf_counter() - started)
    result["factor_names"] = [source.class_noun]
    result["factor_sizes"] = [source.num_classes]
    result["factors"] = "class"
    result["sample"]["distribution"] = (f"{points:,} training images drawn without replacement; the factor is the "
                                        f"class ({source.class_noun})")
    result["not_applicable"] = dict(ONE_FACTOR_CONSTANTS)
    return result


def _result(model: LatentVAE, source: DatasetSource, shape: tuple[int, int, int], code: str, seed: int, points: int,
            results: Mapping[str, MetricResult], sampler: ModelSampler, identity: Mapping[str, Any] | None,
            seconds: dict[str, float], wall: float) -> dict[str, Any]:
    dims = code_dimensions(model, code)
    scores = {key: value for result in results.values() for key, value in result.scores.items()}
    return {
        "dataset": source.name,
        "factor_names": list(source.factor_names),
        "factor_sizes": list(source.factor_sizes),
        "factors": "ground truth",
        "image_shape": list(shape),
        "model": dict(identity) if identity is not None else {"name": model.family, "family": model.family},
        "code": {"kind": code, "description": describe_code(model, code), "dims": len(dims), "names": dims,
                 "gaussian_dims": int(model.config.latent_dim),
                 "categorical_dims": int(model.config.categorical_dim) if code != "gaussian" else 0},
        "seed": seed,
        "sample": {"points": points, "distribution": "factors uniform and independent (the full factor grid)",
                   "rng": f"numpy default_rng([{seed}, {SAMPLE_STREAM}])",
                   "used_by": [name for name, entry in METRICS.items() if not entry.interventional]},
        "scores": scores,
        "headline": {key: scores[key] for _, key in HEADLINE if key in scores},
        "metrics": {name: result.to_json() for name, result in results.items()},
        "images_encoded": sampler.images_encoded,
        "batch_size": sampler.batch_size,
        "encode_chunk": ENCODE_CHUNK,
        "seconds": {**seconds, "total": round(wall, 3)},
        "versions": {"robust_vae": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "sklearn": sklearn.__version__},
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def zoo_disentanglement(name: str, dataset: str = "dsprites", model_seed: int = 0, device: str = "cpu",
                        **kwargs: Any) -> dict[str, Any]:
    """:func:`measure_disentanglement` of the zoo model ``name`` (seed ``model_seed``) of ``dataset``,
    verified on load; the result's ``model`` is its identity (name, family, seed, sha256, card)."""
    factor_source(dataset, class_factor=True)  # a dataset without factors or classes is refused before the zoo is read
    card = find_card(name, dataset, model_seed)
    model = load_model(name, dataset, seed=model_seed, device=device)
    identity = {"name": card.name, "family": card.data["family"], "dataset": card.data["dataset"],
                "seed": card.seed, "sha256": card.data["sha256"], "card": str(card.path),
                "steps": card.data.get("steps")}
    return measure_disentanglement(model, dataset, identity=identity, **kwargs)


def card_record(result: Mapping[str, Any], command: str | None = None) -> dict[str, Any]:
    """What a model card keeps of a result (under ``"disentanglement"``): every score, each
    metric's settings, the code, seed, sample, versions, date and the command."""
    return {
        "scores": dict(result["scores"]),
        "headline": dict(result["headline"]),
        "code": result["code"]["kind"],
        "seed": result["seed"],
        "sample": dict(result["sample"]),
        "factors": result.get("factors", "ground truth"),
        "settings": {name: metric["settings"] for name, metric in result["metrics"].items()},
        "versions": dict(result["versions"]),
        "date": result["date"],
        **({"command": command} if command else {}),
    }
