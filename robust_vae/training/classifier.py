"""Training the evaluation classifier (protocol §3) and shipping it with its card."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from robust_vae.core.errors import ConfigError
from robust_vae.data import load_dataset
from robust_vae.data.base import OptionValue
from robust_vae.models.classifier import ARCHITECTURES, ClassifierSpec, accuracy
from robust_vae.training.commands import dataset_option_flags
from robust_vae.zoo.cards import Card, models_root, save_weights


@dataclass
class ClassifierConfig:
    """SGD with momentum and a cosine learning-rate schedule (the thesis: lr 0.01, 10 epochs).

    ``architecture``: ``lenet`` (the thesis's) or ``cnn`` (see robust_vae.models.classifier).
    """

    architecture: str = "lenet"
    epochs: int = 20
    lr: float = 0.05
    momentum: float = 0.9
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("classifier epochs, batch_size and lr must be positive")
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"unknown classifier architecture {self.architecture!r}: "
                              f"use one of {', '.join(ARCHITECTURES)}")


def train_classifier(
    dataset: str = "mnist",
    config: ClassifierConfig | None = None,
    out_dir: Path | None = None,
    device: str = "cpu",
    data_dir: str | None = None,
    progress: bool = True,
    dataset_options: dict[str, OptionValue] | None = None,
) -> Card:
    """Train a classifier on the train split and ship it with its card; returns the card.

    Its input shape and class count K follow the data (``dataset_options``: e.g. ``image_size``).
    """
    config = config or ClassifierConfig()
    torch.manual_seed(config.seed)
    options = dict(dataset_options or {})
    train = load_dataset(dataset, "train", data_dir, **options)
    test = load_dataset(dataset, "test", data_dir, **options)
    channels, size, _ = train.image_shape
    spec = ClassifierSpec(config.architecture, channels, size, train.num_classes)
    model = spec.build().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    batches_per_epoch = len(train) // config.batch_size
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs * batches_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    images, labels = train.images.to(device), train.labels.to(device)
    started = time.perf_counter()
    bar = tqdm(total=config.epochs * batches_per_epoch, desc="classifier", disable=not progress,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator).to(device)
        for b in range(batches_per_epoch):
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            bar.update(1)
            if b % 100 == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    test_accuracy = accuracy(model, test)
    card: dict[str, Any] = {
        "name": "classifier",
        "dataset": dataset,
        "family": "classifier",
        "seed": config.seed,
        "architecture": spec.describe(),
        "classifier": spec.to_dict(),
        "training": asdict(config) | {
            "optimizer": "SGD",
            "schedule": "cosine annealing per batch",
            "device": str(device),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "command": f"robust-vae train-classifier --dataset {dataset} --architecture {config.architecture} "
                       f"--seed {config.seed} --epochs {config.epochs} --lr {config.lr}"
                       + dataset_option_flags(options),
        },
        "metrics": {"test_accuracy": test_accuracy},
    }
    out_dir = Path(out_dir) if out_dir is not None else models_root() / dataset
    return save_weights(model.eval(), out_dir / "classifier.safetensors", card)
