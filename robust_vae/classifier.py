"""The evaluation classifier (protocol §3): a LeNet-style CNN that labels reconstructions."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from robust_vae.data import Dataset, load_dataset
from robust_vae.errors import ConfigError
from robust_vae.zoo import Card, models_root, save_weights

ARCHITECTURE = (
    "Conv5x5(1->10) > MaxPool2 > ReLU > Conv5x5(10->20) > Dropout2d > MaxPool2 > ReLU > "
    "Dense(500->50) > ReLU > Dropout > Dense(50->10)"
)


class LeNet(nn.Module):
    """(N, 1, 32, 32) in [0, 1] -> (N, 10) class logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(20 * 5 * 5, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.dropout(x, training=self.training)
        return self.fc2(x)


@dataclass
class ClassifierConfig:
    """SGD with momentum and a cosine learning-rate schedule (the thesis: lr 0.01, 10 epochs)."""

    epochs: int = 20
    lr: float = 0.05
    momentum: float = 0.9
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("classifier epochs, batch_size and lr must be positive")


@torch.no_grad()
def accuracy(classifier: nn.Module, data: Dataset, batch_size: int = 2000) -> float:
    """Fraction of ``data`` the classifier labels correctly (in eval mode)."""
    classifier.eval()
    device = next(classifier.parameters()).device
    correct = 0
    for start in range(0, len(data), batch_size):
        x = data.images[start:start + batch_size].to(device)
        y = data.labels[start:start + batch_size].to(device)
        correct += (classifier(x).argmax(-1) == y).sum().item()
    return correct / len(data)


def train_classifier(
    dataset: str = "mnist",
    config: ClassifierConfig | None = None,
    out_dir: Path | None = None,
    device: str = "cpu",
    data_dir: str | None = None,
    progress: bool = True,
) -> Card:
    """Train the LeNet on the train split and ship it with its card; returns the card."""
    config = config or ClassifierConfig()
    torch.manual_seed(config.seed)
    train = load_dataset(dataset, "train", data_dir)
    test = load_dataset(dataset, "test", data_dir)
    model = LeNet().to(device)
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
            loss.backward()
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
        "architecture": ARCHITECTURE,
        "training": asdict(config) | {
            "optimizer": "SGD",
            "schedule": "cosine annealing per batch",
            "device": str(device),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "command": f"robust-vae train-classifier --dataset {dataset} --seed {config.seed} --epochs {config.epochs}",
        },
        "metrics": {"test_accuracy": test_accuracy},
    }
    out_dir = Path(out_dir) if out_dir is not None else models_root() / dataset
    return save_weights(model.eval(), out_dir / "classifier.safetensors", card)
