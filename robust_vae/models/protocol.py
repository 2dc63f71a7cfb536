"""The model interface that attacks and evaluation use, as a ``typing.Protocol``.

Any ``torch.nn.Module`` with these methods can be attacked and evaluated; the shipped
families implement it through :class:`robust_vae.models.base.LatentVAE`. Shapes: ``x`` is
(N, C, H, W) in [0, 1]; ``D`` the Gaussian latents, ``K`` the categories (0 without one).
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar, runtime_checkable

import torch

from robust_vae.core.errors import ConfigError
from robust_vae.models.base import LatentParams


@runtime_checkable
class AttackableModel(Protocol):
    """What an attack needs from a model (foolbox-style: no training interface)."""

    def encode(self, x: torch.Tensor) -> LatentParams:
        """(N, C, H, W) -> posterior parameters: mean, logvar (N, D); logits (N, K) or None."""
        ...

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, D + K) decoder input -> (N, C, H, W) images in [0, 1]."""
        ...

    def deterministic_code(self, params: LatentParams) -> torch.Tensor:
        """(N, D + K): Gaussian means ⊕ one-hot argmax of the categorical (evaluation code)."""
        ...

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W): decode(deterministic_code(encode(x))); what is judged."""
        ...

    def relaxed_reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W): softmax(logits / τ) instead of argmax, for gradients."""
        ...

    def attack_code(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, D + K): the thesis's φ(x), Gaussian means ⊕ categorical logits."""
        ...

    def parameters(self, recurse: bool = True) -> Any:
        """The module's parameters (their device is the model's device)."""
        ...

    def eval(self) -> Any:
        """Switch to evaluation mode (attacks never train)."""
        ...


INTERFACE_METHODS = ("encode", "decode", "deterministic_code", "reconstruct", "relaxed_reconstruct", "attack_code")


def attackable(model: object) -> AttackableModel:
    """``model`` as an :class:`AttackableModel`, or a one-line error naming the missing methods."""
    missing = [name for name in INTERFACE_METHODS if not callable(getattr(model, name, None))]
    if missing or not isinstance(model, AttackableModel):
        raise ConfigError(
            f"{type(model).__name__} is not an attackable model: it lacks {', '.join(missing) or 'parameters/eval'} "
            "(implement the interface of robust_vae.models.AttackableModel, e.g. subclass LatentVAE)"
        )
    return model


M = TypeVar("M")


def target_view(model: M) -> M:
    """The model as it sees *target* images: ``model.for_targets()`` where the model defines it
    (a conditional model under the ``true`` threat model encodes a target under the target's own
    label, :class:`robust_vae.models.conditional.TrueLabel`), else ``model`` itself."""
    for_targets = getattr(model, "for_targets", None)
    if callable(for_targets):
        view: M = for_targets()
        return view
    return model
