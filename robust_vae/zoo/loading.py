"""Loading shipped models by name, RobustBench style: ``load_model(name, dataset, seed)``."""

from __future__ import annotations

import torch
from torch import nn

from robust_vae.core.errors import ZooError
from robust_vae.models import LatentVAE, get_family
from robust_vae.models.classifier import LeNet
from robust_vae.zoo.cards import find_card, load_state


def load_classifier(dataset: str = "mnist", device: str | torch.device = "cpu") -> nn.Module:
    """The shipped evaluation classifier (protocol §3), verified and in ``eval()`` mode."""
    card = find_card("classifier", dataset, None)
    return load_state(card, LeNet()).to(device)


def load_model(
    name: str, dataset: str = "mnist", seed: int = 0, device: str | torch.device = "cpu"
) -> LatentVAE:
    """A shipped VAE (``vae``, ``vae-wd``, ``jointvae``, ...), verified and in ``eval()`` mode."""
    family_class = get_family(name)
    card = find_card(name, dataset, seed)
    config_class = family_class.config_class
    if card.data.get("config_class") != config_class.__name__:
        raise ZooError(
            f"card {card.path} was written for {card.data.get('config_class')}, "
            f"the family {name!r} uses {config_class.__name__}: retrain it"
        )
    config = config_class.from_dict(card.data["config"])
    model = family_class(config)
    load_state(card, model)
    return model.to(device)
