"""Evaluation classifiers (protocol §3): they label reconstructions, so their shape follows the data.

Two architectures: ``lenet`` (the thesis's LeNet, used for MNIST) and ``cnn`` (a small
three-block CNN with batch norm, for data where LeNet stays below the accuracy we want, e.g.
Fashion-MNIST). Both take (N, C, S, S) images in [0, 1] and give (N, K) logits; the
:class:`ClassifierSpec` that builds one is stored in its card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robust_vae.core.devices import model_device
from robust_vae.core.errors import ConfigError
from robust_vae.data import Dataset


@dataclass(frozen=True)
class ClassifierSpec:
    """What builds a classifier: architecture name, input channels and size, number of classes K."""

    architecture: str = "lenet"
    channels: int = 1
    image_size: int = 32
    num_classes: int = 10

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"unknown classifier architecture {self.architecture!r}: "
                              f"use one of {', '.join(ARCHITECTURES)}")
        if self.channels < 1 or self.num_classes < 2:
            raise ConfigError(f"a classifier needs channels >= 1 and num_classes >= 2, got "
                              f"{self.channels} and {self.num_classes}")
        if self.image_size < 16 or self.image_size % 8:
            raise ConfigError(f"classifier image_size must be a multiple of 8 and >= 16, got {self.image_size}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.channels, self.image_size, self.image_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Any) -> ClassifierSpec:
        if not isinstance(values, dict):
            raise ConfigError(f"a classifier spec is a mapping, got {type(values).__name__}")
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"classifier spec has unknown key(s) {sorted(unknown)}")
        return cls(**values)

    def describe(self) -> str:
        """One line naming the layers (for cards and the README)."""
        return str(ARCHITECTURES[self.architecture].describe(self))

    def build(self) -> nn.Module:
        module: nn.Module = ARCHITECTURES[self.architecture](self)
        return module


class LeNet(nn.Module):
    """The thesis LeNet: (N, C, S, S) in [0, 1] -> (N, K) logits (C=1, S=32, K=10 for MNIST)."""

    def __init__(self, spec: ClassifierSpec | None = None) -> None:
        super().__init__()
        spec = spec or ClassifierSpec()
        side = ((spec.image_size - 4) // 2 - 4) // 2
        self.conv1 = nn.Conv2d(spec.channels, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(20 * side * side, 50)
        self.fc2 = nn.Linear(50, spec.num_classes)

    @staticmethod
    def describe(spec: ClassifierSpec) -> str:
        side = ((spec.image_size - 4) // 2 - 4) // 2
        return (f"Conv5x5({spec.channels}->10) > MaxPool2 > ReLU > Conv5x5(10->20) > Dropout2d > MaxPool2 > "
                f"ReLU > Dense({20 * side * side}->50) > ReLU > Dropout > Dense(50->{spec.num_classes})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.dropout(x, training=self.training)
        logits: torch.Tensor = self.fc2(x)
        return logits


class SmallCNN(nn.Module):
    """Three conv blocks (3×3 conv, batch norm, ReLU, 2×2 max pool; 32, 64, 64 channels), then
    Dense 128 with dropout 0.3: (N, C, S, S) -> (N, K) logits."""

    WIDTHS = (32, 64, 64)

    def __init__(self, spec: ClassifierSpec) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = spec.channels
        for out in self.WIDTHS:
            layers += [nn.Conv2d(width, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            width = out
        self.features = nn.Sequential(*layers)
        side = spec.image_size // 8
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(width * side * side, 128), nn.ReLU(),
                                  nn.Dropout(0.3), nn.Linear(128, spec.num_classes))

    @staticmethod
    def describe(spec: ClassifierSpec) -> str:
        blocks = " > ".join(f"[Conv3x3({a}->{b}) > BatchNorm > ReLU > MaxPool2]"
                            for a, b in zip((spec.channels, *SmallCNN.WIDTHS[:-1]), SmallCNN.WIDTHS, strict=True))
        side = spec.image_size // 8
        return f"{blocks} > Dense({SmallCNN.WIDTHS[-1] * side * side}->128) > ReLU > Dropout(0.3) > Dense(128->{spec.num_classes})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(x))
        return logits


ARCHITECTURES: dict[str, Any] = {"lenet": LeNet, "cnn": SmallCNN}


@torch.no_grad()
def accuracy(classifier: nn.Module, data: Dataset, batch_size: int = 2000) -> float:
    """Fraction of ``data`` the classifier labels correctly (in eval mode)."""
    classifier.eval()
    device = model_device(classifier)
    correct = 0
    for start in range(0, len(data), batch_size):
        x = data.images[start:start + batch_size].to(device)
        y = data.labels[start:start + batch_size].to(device)
        correct += (classifier(x).argmax(-1) == y).sum().item()
    return correct / len(data)
