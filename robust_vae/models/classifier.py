"""The evaluation classifier (protocol §3): a LeNet-style CNN that labels reconstructions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robust_vae.core.devices import model_device
from robust_vae.data import Dataset

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
        logits: torch.Tensor = self.fc2(x)
        return logits


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


