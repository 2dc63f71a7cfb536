"""Kos, Fischer & Song (2017) classifier attack: attack a classifier trained on the model's codes.

For the attacked model, a small MLP is trained on its attack codes φ(x) (Gaussian means ⊕
categorical logits) of the train split and cached with a card
(:func:`robust_vae.attacks.latent_classifier.latent_classifier_for`). Encoder → latent classifier is
wrapped as a foolbox model with bounds (0, 1) and attacked with
``TargetedMisclassification(target class)`` by the chosen foolbox attack (L∞ PGD by default,
L2 PGD or Carlini-Wagner) at budget ε. The attack never looks at the decoder or the evaluation
classifier: success is judged, as for every attack, on the deterministic reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, cast

import torch
from torch import nn

from robust_vae.attacks.foolbox_base import FoolboxAttack
from robust_vae.attacks.registry import register_attack
from robust_vae.core.devices import model_device

if TYPE_CHECKING:  # the latent classifier module (tqdm, data loading) is imported on first use
    from robust_vae.attacks.latent_classifier import EncoderClassifier, LatentClassifier, LatentClassifierConfig
    from robust_vae.zoo.cards import Card


@register_attack
@dataclass(repr=False)
class KosClassifierAttack(FoolboxAttack):
    """Targeted foolbox attack on latent classifier ∘ φ.

    ``classifier_hidden``, ``classifier_layers``, ``classifier_epochs``, ``classifier_lr``,
    ``classifier_train_size`` (None: the whole train split) and ``classifier_seed`` configure the
    latent classifier (trained once per model and configuration, then read from the cache).
    Without target classes the target class is the latent classifier's label of the target
    image (or target code). Other hyperparameters: :class:`FoolboxAttack`.
    """

    name = "kos-classifier"

    classifier_hidden: int = 256
    classifier_layers: int = 2
    classifier_epochs: int = 10
    classifier_lr: float = 1e-3
    classifier_train_size: int | None = None
    classifier_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.progress = True  # tqdm bar while a latent classifier trains (not a hyperparameter)
        self._networks: dict[str, LatentClassifier] = {}
        self.classifier_config()  # validates the classifier settings now, not at the first batch

    def classifier_config(self) -> LatentClassifierConfig:
        """The latent classifier's settings, from the ``classifier_*`` fields."""
        from robust_vae.attacks.latent_classifier import LatentClassifierConfig

        return LatentClassifierConfig(
            hidden=self.classifier_hidden, layers=self.classifier_layers, epochs=self.classifier_epochs,
            lr=self.classifier_lr, train_size=self.classifier_train_size, seed=self.classifier_seed)

    def latent_classifier(self, model: nn.Module) -> tuple[LatentClassifier, Card]:
        """The model's cached latent classifier and its card (trained on first use)."""
        from robust_vae.attacks.latent_classifier import latent_classifier_for

        return latent_classifier_for(model, self.dataset, self.classifier_config(),
                                     data_dir=self._data_dir, progress=self.progress)

    has_artefacts: ClassVar[bool] = True

    def artefacts(self, model: nn.Module) -> dict[str, str]:
        """The latent classifier's sha256 (trained and cached now if it is not yet)."""
        _, card = self.latent_classifier(model)
        return {"latent_classifier_sha256": str(card.data["sha256"])}

    def network(self, model: nn.Module) -> nn.Module:
        from robust_vae.attacks.latent_classifier import EncoderClassifier, model_fingerprint

        key = model_fingerprint(model)  # the cache is read once per model and attack object
        if key not in self._networks:
            net, _ = self.latent_classifier(model)
            self._networks = {key: net}
        return EncoderClassifier(model, self._networks[key].to(model_device(model)))

    def classes_from_codes(self, model: nn.Module, net: nn.Module, codes: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = cast("EncoderClassifier", net).latent_classifier(codes)
        return logits.argmax(-1)
