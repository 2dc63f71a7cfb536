"""Latent classifiers for the Kos et al. classifier attack: a small MLP on a model's attack codes.

Kos, Fischer & Song (2017) attack a VAE through a classifier trained on its latent codes. For a
model, :func:`latent_classifier_for` trains that classifier on the model's attack codes
φ(x) = Gaussian means ⊕ categorical logits of the train split and caches it in
``<cache>/latent-classifiers/<dataset>/`` (``ROBUST_VAE_CACHE``, see
:func:`robust_vae.data.default_cache_dir`) as safetensors with a JSON card (the weights'
sha256, the configuration, the fingerprint of the model it belongs to, train and test accuracy).
Loading checks the card and the sha256 and never unpickles. The cache key is the sha256 of
the model's weights plus the configuration, so a retrained model gets its own classifier.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from robust_vae.attacks.base import as_attackable
from robust_vae.core.devices import model_device
from robust_vae.core.errors import ConfigError, ZooError
from robust_vae.core.paths import default_cache_dir
from robust_vae.data import Dataset, load_dataset, load_dataset_at
from robust_vae.zoo.cards import Card, load_state, read_card, save_weights

FAMILY = "latent-classifier"


@dataclass(frozen=True)
class LatentClassifierConfig:
    """How a latent classifier is built and trained.

    hidden: width of each hidden layer; layers: number of hidden layers (ReLU); Adam with
    ``lr`` for ``epochs`` epochs of ``batch_size``; ``train_size``: the first that many train
    images (None: the whole train split); ``seed`` fixes initialisation and data order.
    """

    hidden: int = 256
    layers: int = 2
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    train_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.layers < 0 or self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("latent classifier: hidden, epochs, batch_size and lr must be positive, layers >= 0")
        if self.train_size is not None and self.train_size < 1:
            raise ConfigError(f"latent classifier: train_size must be >= 1 or None, got {self.train_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LatentClassifier(nn.Module):
    """(N, code_dim) attack codes -> (N, num_classes) logits.

    Codes are standardised with per-dimension ``shift`` / ``scale`` buffers (set from the
    training codes, saved with the weights), then an MLP of ``layers`` ReLU layers.
    """

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, code_dim: int, num_classes: int, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(code_dim))
        self.register_buffer("scale", torch.ones(code_dim))
        blocks: list[nn.Module] = []
        width = code_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        blocks.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*blocks)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net((codes - self.shift) / self.scale)
        return logits


class EncoderClassifier(nn.Module):
    """latent classifier ∘ φ: (N, C, H, W) images in [0, 1] -> (N, num_classes) logits."""

    def __init__(self, model: nn.Module, latent_classifier: LatentClassifier) -> None:
        super().__init__()
        self.model = model
        self.latent_classifier = latent_classifier
        self.training = False  # a pipeline for inference; the wrapped modules keep their own mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.latent_classifier(as_attackable(self.model).attack_code(x))
        return logits


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the model's state (names, dtypes, shapes and bytes, in name order)."""
    digest = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def attack_codes(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """φ of ``images`` (N, C, H, W) -> (N, D) on the CPU, computed on the model's device."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    vae = as_attackable(model)
    codes = [vae.attack_code(images[i:i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(codes)


@torch.no_grad()
def code_predictions(classifier: nn.Module, codes: torch.Tensor) -> torch.Tensor:
    """The labels (N,) int64 on the CPU that ``classifier`` gives ``codes`` (N, D), in chunks on
    its own device."""
    device = model_device(classifier)
    with torch.no_grad():
        return torch.cat([classifier(codes[i:i + 4096].to(device)).argmax(-1).cpu()
                          for i in range(0, len(codes), 4096)])


def code_accuracy(classifier: nn.Module, codes: torch.Tensor, labels: torch.Tensor) -> float:
    classifier.eval()
    return float((code_predictions(classifier, codes) == labels).float().mean())


def train_latent_classifier(
    model: nn.Module,
    train: Dataset,
    config: LatentClassifierConfig | None = None,
    *,
    progress: bool = True,
) -> LatentClassifier:
    """Train a :class:`LatentClassifier` on the attack codes of ``train`` (on the model's device)."""
    config = config or LatentClassifierConfig()
    n = len(train) if config.train_size is None else min(config.train_size, len(train))
    codes = attack_codes(model, train.images[:n])
    return fit_latent_classifier(codes, train.labels[:n], train.num_classes, config,
                                 device=model_device(model), progress=progress)


def fit_latent_classifier(
    codes: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    config: LatentClassifierConfig,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> LatentClassifier:
    """Fit a :class:`LatentClassifier` to ``codes`` (N, D) and ``labels`` (N,) with Adam, seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = LatentClassifier(codes.shape[1], num_classes, config.hidden, config.layers)
    net.shift.copy_(codes.mean(0))
    net.scale.copy_(codes.std(0).clamp_min(1e-6))
    net = net.to(device).train()
    codes, labels = codes.to(device), labels.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    batches = max(1, len(codes) // config.batch_size)
    bar = tqdm(total=config.epochs * batches, desc="latent classifier", disable=not progress,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)
    for epoch in range(config.epochs):
        order = torch.randperm(len(codes), generator=generator).to(device)
        for b in range(batches):
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            loss = F.cross_entropy(net(codes[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)  # what loss.backward() runs
            optimizer.step()
            bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    return net.eval()


def cache_folder(dataset: str, cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir() / "latent-classifiers" / dataset


def cache_stem(fingerprint: str, config: LatentClassifierConfig) -> str:
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()
    return f"{fingerprint[:16]}-{digest[:12]}"


def cache_entry(model: nn.Module, dataset: str, config: LatentClassifierConfig,
                cache_dir: str | Path | None = None) -> tuple[Path, str]:
    """The cache card path (``.json``; the weights are the ``.safetensors`` beside it) of ``model``'s
    latent classifier under ``config``, and the model's fingerprint."""
    fingerprint = model_fingerprint(model)
    return cache_folder(dataset, cache_dir) / f"{cache_stem(fingerprint, config)}.json", fingerprint


def cached_latent_classifier(model: nn.Module, dataset: str = "mnist", config: LatentClassifierConfig | None = None,
                             *, cache_dir: str | Path | None = None) -> tuple[LatentClassifier, Card] | None:
    """The latent classifier of ``model`` and its card if the cache holds a usable one, else None:
    nothing is trained (the check of :func:`latent_classifier_for`, on the CPU)."""
    config = config or LatentClassifierConfig()
    card_path, fingerprint = cache_entry(model, dataset, config, cache_dir)
    if not card_path.exists():
        return None
    return _load_cached(card_path, fingerprint, config)[0]


def latent_classifier_for(
    model: nn.Module,
    dataset: str = "mnist",
    config: LatentClassifierConfig | None = None,
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[LatentClassifier, Card]:
    """The cached latent classifier of ``model`` (trained and cached on first use) and its card.

    The classifier is on the model's device, in ``eval()`` mode. A cache entry whose weights
    no longer match their card is retrained and overwritten (the cache is regenerable).
    """
    config = config or LatentClassifierConfig()
    card_path, fingerprint = cache_entry(model, dataset, config, cache_dir)
    weights = card_path.with_suffix(".safetensors")
    device = model_device(model)
    if card_path.exists():
        cached, problem = _load_cached(card_path, fingerprint, config)
        if cached is not None:
            return cached[0].to(device), cached[1]
        print(f"latent classifier cache entry {card_path} is unusable ({problem}); retraining it",
              file=sys.stderr)
    started = time.perf_counter()
    shape = getattr(model, "image_shape", None)  # a LatentVAE's (C, H, W); other models take the default
    train, test = ((load_dataset_at(dataset, split, shape, data_dir) if shape is not None
                    else load_dataset(dataset, split, data_dir)) for split in ("train", "test"))
    n_train = len(train) if config.train_size is None else min(config.train_size, len(train))
    codes = attack_codes(model, train.images[:n_train])
    net = fit_latent_classifier(codes, train.labels[:n_train], train.num_classes, config,
                                device=device, progress=progress)
    train_accuracy = code_accuracy(net, codes, train.labels[:n_train])
    test_accuracy = code_accuracy(net, attack_codes(model, test.images), test.labels)
    card_data: dict[str, Any] = {
        "name": FAMILY,
        "dataset": dataset,
        "family": FAMILY,
        "seed": config.seed,
        "model_sha256": fingerprint,
        "model_class": type(model).__name__,
        "code": "attack code: Gaussian means ⊕ categorical logits (the thesis's φ)",
        "code_dim": int(net.shift.shape[0]),
        "num_classes": train.num_classes,
        "config": config.to_dict(),
        "train_images": n_train,
        "metrics": {"train_accuracy": train_accuracy, "test_accuracy": test_accuracy},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
    }
    card = save_weights(net, weights, card_data)
    return net.eval(), card


def _load_cached(card_path: Path, fingerprint: str, config: LatentClassifierConfig
                 ) -> tuple[tuple[LatentClassifier, Card] | None, str]:
    """The cached classifier and its card, or None and why the entry cannot be used."""
    try:
        card = read_card(card_path)
    except ZooError as error:
        return None, str(error)
    data = card.data
    if data.get("config") != config.to_dict() or data.get("model_sha256") != fingerprint:
        return None, "its card names another model or configuration"
    if not isinstance(data.get("code_dim"), int) or not isinstance(data.get("num_classes"), int):
        return None, "its card lacks code_dim or num_classes"
    net = LatentClassifier(data["code_dim"], data["num_classes"], config.hidden, config.layers)
    try:
        return (cast(LatentClassifier, load_state(card, net)), card), ""
    except ZooError as error:  # sha256 mismatch, unreadable file or wrong shapes
        return None, str(error)
