"""End-to-end attack: foolbox on evaluation classifier ∘ decoder ∘ encoder (the AS-target pipeline).

The most direct attack on the AS target metric: the pipeline foolbox attacks is exactly the one
that judges success, classifier(x̂(x*)), and the criterion is
``TargetedMisclassification(target class)``. The reconstruction's forward value is the
deterministic one (Gaussian means, argmax one-hot), so what foolbox counts a success is what the
success matrix counts; its gradient is that of the relaxed reconstruction softmax(logits/τ)
(a straight-through estimator, protocol §2), since the argmax has none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robust_vae.attacks.base import as_attackable
from robust_vae.attacks.foolbox_base import FoolboxAttack
from robust_vae.attacks.output import differentiable_reconstruction
from robust_vae.attacks.registry import register_attack
from robust_vae.core.devices import model_device


def straight_through_reconstruction(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The deterministic reconstruction of ``x`` (N, C, H, W), differentiable through the relaxed one.

    Forward: exactly ``model.reconstruct(x)``. Backward: the gradient of
    ``model.relaxed_reconstruct(x)`` (or of ``reconstruct`` for a model without one).
    """
    if not (torch.is_grad_enabled() and x.requires_grad):
        return as_attackable(model).reconstruct(x)
    with torch.no_grad():
        hard = as_attackable(model).reconstruct(x)
    soft = differentiable_reconstruction(model, x)
    return hard + (soft - soft.detach())  # adds exactly zero to the value


class ReconstructionClassifier(nn.Module):
    """classifier ∘ x̂: (N, C, H, W) images in [0, 1] -> (N, classes) logits of their reconstructions."""

    def __init__(self, model: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.classifier = classifier
        self.training = False  # a pipeline for inference; the wrapped modules keep their own mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(straight_through_reconstruction(self.model, x))
        return logits


@register_attack
@dataclass(repr=False)
class EndToEndAttack(FoolboxAttack):
    """Targeted foolbox attack (L∞ PGD by default) on evaluation classifier ∘ x̂.

    The classifier is the one the success matrix judges with (bound by ``success_matrix``), else
    the shipped evaluation classifier of ``dataset``. See :mod:`robust_vae.attacks.foolbox_base`
    for the hyperparameters and how target classes are chosen.
    """

    name = "e2e"

    def network(self, model: nn.Module) -> nn.Module:
        return ReconstructionClassifier(model, self.evaluation_classifier(model_device(model)))
