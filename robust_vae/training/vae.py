"""Resumable VAE training (protocol §2 schedule) and the metrics written to model cards.

Resume state (weights, optimiser, RNG and data order) lives in a cache folder outside the
repository; rerunning the same command after a kill continues from the last checkpoint and
gives the same weights as an uninterrupted run. Only final weights and cards go to ``out``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from robust_vae.core.devices import model_device
from robust_vae.core.errors import ConfigError
from robust_vae.core.paths import default_cache_dir
from robust_vae.data import Dataset, load_dataset
from robust_vae.data.base import OptionValue
from robust_vae.models import FAMILIES, LatentVAE, VAEConfig, get_family
from robust_vae.models.base import categorical_kl
from robust_vae.models.conditional import TrueLabel
from robust_vae.models.protocol import AttackableModel
from robust_vae.training.commands import dataset_option_flags
from robust_vae.zoo import Card, load_classifier_with_card, model_stem, models_root, save_weights


def config_digest(payload: dict[str, Any]) -> str:
    """Short stable hash of a JSON-able dict: names the checkpoint folder of one configuration."""
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class BatchStream:
    """Epoch-wise shuffled minibatch indices whose position can be saved and restored."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(n, generator=self.generator)
        self.position = 0

    def next(self) -> torch.Tensor:
        if self.position + self.batch_size > self.n:  # drop the ragged tail, start a new epoch
            self.order = torch.randperm(self.n, generator=self.generator)
            self.position = 0
        idx = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return idx

    def state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": self.order, "position": self.position}

    def restore(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order = state["order"]
        self.position = int(state["position"])


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class TrainResult:
    card: Card
    resumed_from: int


def environment_info() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


@torch.no_grad()
def evaluate_vae(
    model: LatentVAE,
    test: Dataset,
    classifier: torch.nn.Module | None,
    step: int | None = None,
    batch_size: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Card metrics on the test split.

    recon_bce: BCE of the deterministic reconstruction, summed over pixels, mean over images;
    kl_per_dim: mean KL of each Gaussian dimension; kl_categorical; elbo: one-sample estimate
    (nats per image); objective: the family's training objective at ``step``;
    recon_accuracy: the classifier's accuracy on deterministic reconstructions, and
    recon_confusion (K × K counts: row = the image's class, column = the class the classifier gives
    its reconstruction), which says which class a model's reconstructions lose; family_metrics
    (only for a family that has any): the test-set mean of each family-specific term of its
    objective (β-TCVAE's MI, TC and dimension-wise KL, FactorVAE's discriminator TC, σ-VAE's σ²,
    ...) and its :meth:`card_state` (ControlVAE's β).
    """
    model.eval()
    device = model_device(model)
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    n = len(test)
    total_steps = step if step is not None else model.config.steps
    sums: dict[str, Any] = {"recon_bce": 0.0, "elbo": 0.0, "objective": 0.0, "kl_c": 0.0, "correct": 0}
    kl_dims = torch.zeros(model.config.latent_dim, dtype=torch.float64)
    family_sums: dict[str, float] = {}
    classes = int(test.num_classes) if classifier is not None else 0
    confusion = torch.zeros(classes * classes, dtype=torch.int64)  # flattened (true, predicted) counts
    for start in range(0, n, batch_size):
        x = test.images[start:start + batch_size].to(device)
        y = test.labels[start:start + batch_size].to(device)
        # a conditional family is evaluated under the true labels; any other is the model itself
        view: AttackableModel = TrueLabel(model, y) if model.needs_labels else model
        params = view.encode(x)
        recon = view.decode(view.deterministic_code(params))
        sums["recon_bce"] += F.binary_cross_entropy(recon, x, reduction="sum").item()
        kl_dims += model.latent_kl_per_dim(params).sum(0).double().cpu()
        if params.logits is not None:
            sums["kl_c"] += categorical_kl(params.logits).sum().item()
        terms = model.batch_terms(x, y)
        rows = x.shape[0]
        for name, value in terms.items():
            if name not in ("recon", "kl_z", "kl_c"):
                family_sums[name] = family_sums.get(name, 0.0) + float(value) * rows
        sums["elbo"] -= (terms["recon"] + terms["kl_z"] + terms["kl_c"]).item() * rows
        sums["objective"] += model.objective(model.weighted_terms(terms), total_steps, total_steps).item() * rows
        if classifier is not None:
            predicted = classifier(recon).argmax(-1)
            sums["correct"] += (predicted == y).sum().item()
            confusion += torch.bincount((y * classes + predicted).cpu(), minlength=classes * classes)
    torch.set_rng_state(generator_state)
    metrics: dict[str, Any] = {
        "recon_bce": sums["recon_bce"] / n,
        "kl_per_dim": [round(v, 6) for v in (kl_dims / n).tolist()],
        "kl_gaussian": float(kl_dims.sum() / n),
        "kl_categorical": sums["kl_c"] / n,
        "elbo": sums["elbo"] / n,
        "objective": sums["objective"] / n,
    }
    if classifier is not None:
        metrics["recon_accuracy"] = sums["correct"] / n
        metrics["recon_confusion"] = confusion.reshape(classes, classes).tolist()
    family_metrics = {name: total / n for name, total in family_sums.items()} | model.card_state()
    if family_metrics:
        metrics["family_metrics"] = family_metrics
    return metrics


def check_variant(family: str, config_class: type, settings: dict[str, Any], name: str | None) -> None:
    """One-line errors for a variant that cannot be trained: an unknown config field, settings
    without a zoo name of their own, a name that is another family's or not a plain stem."""
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"{family} has no setting {', '.join(unknown)}: its config ({config_class.__name__}) "
                          f"has {', '.join(sorted(known))}")
    if name is None or name == family:
        if settings:
            raise ConfigError(f"--set changes {family}'s defaults: give the variant its own zoo name with --name "
                              f"(e.g. {family}-{'-'.join(f'{k}{v}' for k, v in settings.items())})")
        return
    if name in FAMILIES:
        raise ConfigError(f"--name {name} is the family {name!r}: a variant needs a name of its own")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", name):
        raise ConfigError(f"--name {name!r}: use lower-case letters, digits, '.' and '-' (it becomes a file name)")


LATER_FIELDS: dict[str, Any] = {"recon_scale": 1.0}  # config fields added later, with their defaults


def checkpoint_dir(family: str, dataset: str, seed: int, config: dict[str, Any],
                   dataset_options: dict[str, OptionValue] | None = None) -> Path:
    """The cache folder of one run's resume state (dataset options only enter the digest when set)."""
    # a config field added after zoo models were trained enters the digest only when it differs
    # from its default, so their checkpoints keep their folders
    config = {key: value for key, value in config.items() if not (key in LATER_FIELDS and value == LATER_FIELDS[key])}
    payload: dict[str, Any] = {"family": family, "dataset": dataset, "seed": seed, "config": config}
    options = {key: value for key, value in (dataset_options or {}).items() if value is not None}
    if options:
        payload["dataset_options"] = options
    digest = config_digest(payload)
    return default_cache_dir() / "checkpoints" / dataset / f"{family}-seed{seed}-{digest}"


@dataclass
class _Run:
    """One training run's mutable state: model, optimiser, data order, step and time spent."""

    family: str
    dataset: str
    seed: int
    config: VAEConfig
    model: LatentVAE
    optimizer: torch.optim.Optimizer
    stream: BatchStream
    checkpoint: Path
    dataset_options: dict[str, OptionValue]
    name: str = ""  # the zoo name (the family's unless a variant: ``train_vae(name=...)``)
    settings: dict[str, Any] = field(default_factory=dict)  # config values set by the caller, for the card's command
    step: int = 0
    elapsed: float = 0.0

    def resume(self, device: str, log: Callable[[str], None]) -> None:
        """Load the checkpoint, if there is one: weights, optimiser, data order, RNG, step."""
        if not self.checkpoint.exists():
            return
        fix = f"delete {self.checkpoint} to train from step 0 (or restore it)"
        try:
            state = torch.load(self.checkpoint, map_location=device, weights_only=True)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.stream.restore(state["stream"])
            torch.set_rng_state(state["torch_rng"])
            self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        except Exception as error:  # truncated file, not a checkpoint, wrong tensors: all mean the same
            raise ConfigError(f"training checkpoint {self.checkpoint} cannot be used "
                              f"({type(error).__name__}): {fix}") from None
        log(f"resuming {self.family} seed {self.seed} from step {self.step} ({self.checkpoint})")

    def save(self) -> None:
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "stream": self.stream.state(),
                "torch_rng": torch.get_rng_state(),
                "step": self.step,
                "elapsed": self.elapsed,
            },
            self.checkpoint,
        )

    def train(self, images: torch.Tensor, checkpoint_every: int, progress: bool, stop_after: int | None,
              labels: torch.Tensor | None = None, snapshot_every: int | None = None,
              snapshot: Callable[[int], None] | None = None) -> bool:
        """Step until the schedule ends (True) or ``stop_after`` steps of this call (False).

        ``labels`` (N,) int64: the images' classes, for a family that ``needs_labels`` (None
        for the others: the batch order and every random draw are the same either way).
        ``snapshot(step)`` is called at every multiple of ``snapshot_every`` before the end
        (the final weights are the run's own); it must leave the model, the optimiser and the
        RNG as it found them, so a run with snapshots ends exactly where one without does.
        """
        config, model = self.config, self.model
        model.train()
        bar = tqdm(
            total=config.steps, initial=self.step, desc=f"{self.family} seed {self.seed}", disable=not progress,
            mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True,
        )
        started = time.perf_counter()
        steps_this_call = 0
        while self.step < config.steps:
            index = self.stream.next().to(images.device)
            terms = model.batch_terms(images[index], None if labels is None else labels[index])
            loss = model.objective(model.weighted_terms(terms), self.step, config.steps)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            self.optimizer.step()
            self.step += 1
            steps_this_call += 1
            bar.update(1)
            if self.step % 100 == 0:
                bar.set_postfix({k: f"{v.item():.2f}" for k, v in terms.items()} | {"loss": f"{loss.item():.1f}"})
            if self.step % checkpoint_every == 0 or self.step == config.steps:
                self.elapsed += time.perf_counter() - started
                started = time.perf_counter()
                self.save()
            if snapshot is not None and snapshot_every and self.step % snapshot_every == 0 and self.step < config.steps:
                self.elapsed += time.perf_counter() - started
                snapshot(self.step)
                model.train()
                started = time.perf_counter()
            if stop_after is not None and steps_this_call >= stop_after and self.step < config.steps:
                self.elapsed += time.perf_counter() - started
                self.save()
                bar.close()
                return False
        bar.close()
        return True

    def card(self, metrics: dict[str, Any], device: str) -> dict[str, Any]:
        """The model card: what produced the weights, and their metrics."""
        config = self.config
        return {
            "name": self.name or self.family,
            "dataset": self.dataset,
            "family": self.family,
            "seed": self.seed,
            "config_class": type(config).__name__,
            "config": config.to_dict(),
            "dataset_options": {k: v for k, v in self.dataset_options.items() if v is not None},
            "steps": config.steps,
            "training": {
                "optimizer": "Adam",
                "lr": config.lr,
                "batch_size": config.batch_size,
                "weight_decay": config.weight_decay,
                "likelihood": self.model.likelihood + (f"; weighted ×{config.recon_scale:g} in the objective"
                                                        if config.recon_scale != 1.0 else ""),
                "device": str(device),
                "wall_seconds": round(self.elapsed, 1),
                "command": f"robust-vae train --model {self.family} --dataset {self.dataset} --seed {self.seed} "
                           f"--steps {config.steps}" + dataset_option_flags(self.dataset_options)
                           + (f" --recon-scale {config.recon_scale:g}" if config.recon_scale != 1.0 else "")
                           + "".join(f" --set {key}={value}" for key, value in self.settings.items())
                           + (f" --name {self.name}" if self.name and self.name != self.family else ""),
            },
            "metrics": metrics,
            "environment": environment_info(),
        }


def train_vae(
    family: str,
    dataset: str = "mnist",
    seed: int = 0,
    steps: int | None = None,
    out_dir: Path | None = None,
    device: str = "cpu",
    data_dir: str | None = None,
    checkpoint_every: int = 2000,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
    dataset_options: dict[str, OptionValue] | None = None,
    name: str | None = None,
    settings: dict[str, Any] | None = None,
    snapshot_every: int | None = None,
) -> TrainResult | None:
    """Train one family with the config's schedule; resume from the cache if a checkpoint exists.

    ``settings`` replace config values of the family (``beta``, ``gamma``, ...; unknown names
    are a one-line error) and then need ``name``, the variant's zoo name (``betavae-b8``), so
    that a variant never overwrites the family's own weights; the checkpoint cache, the card and
    its command record both. ``overrides`` are the same without that rule (``weight_decay``).
    ``snapshot_every`` also writes the weights every that many steps as zoo entries of their own,
    ``<name>-step<k>`` (card with the test metrics, ``snapshot_of`` and ``snapshot_step``), so a
    pilot can score a run along its way (``robust-vae disentanglement --model vae-step10000``).

    ``stop_after`` ends the run early after that many steps of this call (for tests of resume);
    it then returns None without writing final weights. ``dataset_options`` are the dataset's
    load options (``image_size`` for dsprites and imagefolder, ...); the network's image size and
    channels follow the loaded images.
    """
    family_class = get_family(family)
    settings = dict(settings or {})
    check_variant(family, family_class.config_class, settings, name)
    train = load_dataset(dataset, "train", data_dir, **(dataset_options or {}))
    channels, height, width = train.image_shape
    values = dict(overrides or {}) | settings
    for key, value in (("image_size", height), ("channels", channels)):
        if values.setdefault(key, value) != value:
            raise ConfigError(f"{key} = {values[key]} but {dataset} gives {channels}x{height}x{width} images: "
                              "the network's input follows the data (choose the size with the dataset's options)")
    if steps is not None:
        values["steps"] = steps
    config_fields = {field.name for field in fields(family_class.config_class)}
    if "dataset_size" in config_fields:
        values.setdefault("dataset_size", len(train))  # N of β-TCVAE's minibatch-weighted sampling
    if "num_classes" in config_fields:  # a conditional family's label one-hot
        if values.setdefault("num_classes", train.num_classes) != train.num_classes:
            raise ConfigError(f"num_classes = {values['num_classes']} but {dataset} has {train.num_classes} classes")
    config = family_class.config_class(**values)
    out_dir = Path(out_dir) if out_dir is not None else models_root() / dataset

    torch.manual_seed(seed)
    model = family_class(config).to(device)
    optimizer = model.optimizer()
    run = _Run(family, dataset, seed, config, model, optimizer, BatchStream(len(train), config.batch_size, seed),
               checkpoint_dir(family, dataset, seed, config.to_dict(), dataset_options) / "checkpoint.pt",
               dict(dataset_options or {}), name=name or family, settings=settings)
    run.resume(device, log)
    resumed_from = run.step
    labels = train.labels.to(device) if model.needs_labels else None
    evaluation: dict[str, Any] = {}

    def write(step: int, stem_name: str, extra: dict[str, Any]) -> Card:
        """Evaluate the model as it is now and write it with its card (RNG state kept)."""
        rng = torch.get_rng_state()  # building the classifier draws its initial weights: keep training's stream
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        if not evaluation:
            evaluation["classifier"] = load_classifier_with_card(dataset, device, image_shape=model.image_shape)
            evaluation["test"] = load_dataset(dataset, "test", data_dir, **(dataset_options or {}))
        classifier, classifier_card = evaluation["classifier"]
        model.eval()
        metrics = evaluate_vae(model, evaluation["test"], classifier, step=step)
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        weights_path = out_dir / f"{model_stem(stem_name, seed)}.safetensors"
        card = run.card(metrics, device) | {"recon_classifier_sha256": classifier_card.data["sha256"]} | extra
        saved = save_weights(model, weights_path, card)
        log(f"wrote {weights_path} (recon_accuracy {metrics['recon_accuracy']:.4f})")
        return saved

    def snapshot(step: int) -> None:
        write(step, f"{name or family}-step{step}",
              {"name": f"{name or family}-step{step}", "steps": step, "snapshot_of": name or family, "snapshot_step": step})

    if not run.train(train.images.to(device), checkpoint_every, progress, stop_after, labels,
                     snapshot_every=snapshot_every, snapshot=snapshot):
        return None
    if resumed_from == config.steps:
        log(f"{family} seed {seed}: training already complete at step {run.step}; writing card")
    return TrainResult(write(config.steps, name or family, {}), resumed_from)
