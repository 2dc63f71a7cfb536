"""Loading shipped models by name, RobustBench style: ``load_model(name, dataset, seed)``."""

from __future__ import annotations

import torch
from torch import nn

from robust_vae.core.errors import ConfigError, ZooError
from robust_vae.models import LatentVAE, get_family
from robust_vae.models.classifier import ClassifierSpec
from robust_vae.zoo.cards import Card, find_card, load_state

# Cards written before the spec was recorded all hold the thesis LeNet on 1×32×32 images, 10 classes.
LEGACY_CLASSIFIER = ClassifierSpec()


def _check_dataset(card: Card, dataset: str) -> None:
    trained_on = card.data.get("dataset")
    if trained_on is not None and trained_on != dataset:
        raise ZooError(f"card {card.path} is a model trained on {trained_on}, not {dataset}: "
                       f"use --dataset {trained_on} or a model trained on {dataset}")


def classifier_spec(card: Card) -> ClassifierSpec:
    """The architecture, input shape and class count a classifier card records."""
    try:
        return ClassifierSpec.from_dict(card.data["classifier"]) if "classifier" in card.data else LEGACY_CLASSIFIER
    except ConfigError as error:
        raise ZooError(f"card {card.path}: {error}: retrain the classifier") from None


class AreaDownsample(nn.Module):
    """(N, C, k·S, k·S) -> (N, C, S, S) by k×k block averages, in front of a classifier trained at S.

    A dSprites image at 32×32 *is* the 2×2 block average of its 64×64 rendering, so a classifier
    trained at 32 labels 64×64 reconstructions exactly as it labels the 32×32 data.
    """

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, self.factor)


def load_classifier(dataset: str = "mnist", device: str | torch.device = "cpu",
                    image_shape: tuple[int, int, int] | None = None) -> nn.Module:
    """The shipped evaluation classifier of ``dataset`` (protocol §3), verified and in ``eval()`` mode.

    Its input shape and class count are the card's (``classifier_spec``). ``image_shape``
    (C, H, W): the images it will label; a whole multiple of its own size is block-averaged
    down first (:class:`AreaDownsample`), any other shape is refused.
    """
    return load_classifier_with_card(dataset, device, image_shape)[0]


def load_classifier_with_card(dataset: str = "mnist", device: str | torch.device = "cpu",
                              image_shape: tuple[int, int, int] | None = None) -> tuple[nn.Module, Card]:
    """:func:`load_classifier` and the card it was loaded from (read once: what a model card records
    about the classifier that scored it, e.g. its sha256, comes from the same file)."""
    card = find_card("classifier", dataset, None)
    _check_dataset(card, dataset)
    spec = classifier_spec(card)
    classifier = load_state(card, spec.build())
    if image_shape is not None and tuple(image_shape) != spec.image_shape:
        channels, height, width = image_shape
        if channels != spec.channels or height != width or height % spec.image_size:
            raise ZooError(f"the {dataset} classifier takes {'x'.join(map(str, spec.image_shape))} images, the "
                           f"model gives {'x'.join(map(str, image_shape))}: train a classifier at that size with "
                           f"`robust-vae train-classifier --dataset {dataset} --image-size {height}`")
        classifier = nn.Sequential(AreaDownsample(height // spec.image_size), classifier).eval()
    return classifier.to(device), card


def load_model(
    name: str, dataset: str = "mnist", seed: int = 0, device: str | torch.device = "cpu"
) -> LatentVAE:
    """A shipped VAE (``vae``, ``vae-wd``, ``jointvae``, ...), verified and in ``eval()`` mode.

    The card's config fixes the architecture, including the image size and channels; a named
    variant (``betavae-b8``: trained with ``robust-vae train --name``) is built as its card's family."""
    try:
        card = find_card(name, dataset, seed)
    except ZooError:
        get_family(name)  # neither a card nor a family: the error lists the families
        raise
    family_class = get_family(str(card.data.get("family", name)))
    _check_dataset(card, dataset)
    config_class = family_class.config_class
    if card.data.get("config_class") != config_class.__name__:
        raise ZooError(
            f"card {card.path} was written for {card.data.get('config_class')}, "
            f"the family {card.data.get('family', name)!r} uses {config_class.__name__}: retrain it"
        )
    config = config_class.from_dict(card.data["config"])
    model = family_class(config)
    load_state(card, model)
    return model.to(device)
