"""Per-example objectives shared by the attacks; each maps a batch to an (M,) tensor."""

from __future__ import annotations

import torch
from torch import nn

from robust_vae.attacks.base import as_attackable
from robust_vae.attacks.options import Choice
from robust_vae.models.base import LatentParams, categorical_kl_between, gaussian_kl_between


class Divergence(Choice):
    """Δ(x, x_t) of the latent L-BFGS-B attack."""

    L2 = "l2"  # squared distance between attack codes
    KL = "kl"  # KL(q(z|x) ‖ q(z|x_t))


DIVERGENCES = Divergence.values()


def code_distance(model: nn.Module, x: torch.Tensor, target_code: torch.Tensor) -> torch.Tensor:
    """‖φ(x) − φ_t‖₂ per example, φ = means ⊕ logits (the thesis's latent distance)."""
    distance: torch.Tensor = (as_attackable(model).attack_code(x) - target_code).norm(dim=1)
    return distance


def posterior_kl(model: nn.Module, x: torch.Tensor, target: LatentParams) -> torch.Tensor:
    """KL(q(z|x) ‖ q(z|x_t)): diagonal Gaussian part plus the categorical part when present."""
    params = as_attackable(model).encode(x)
    kl = gaussian_kl_between(params.mean, params.logvar, target.mean, target.logvar)
    if params.logits is not None and target.logits is not None:
        kl = kl + categorical_kl_between(params.logits, target.logits)
    return kl


def latent_divergence(
    model: nn.Module,
    x: torch.Tensor,
    divergence: Divergence | str,
    target_code: torch.Tensor,
    target_params: LatentParams | None,
) -> torch.Tensor:
    """Δ(x, x_t) per example: squared code distance ("l2") or posterior KL ("kl")."""
    if Divergence(divergence) is Divergence.L2:
        return (as_attackable(model).attack_code(x) - target_code).pow(2).sum(dim=1)
    assert target_params is not None, "the KL divergence needs target images"
    return posterior_kl(model, x, target_params)


def squared_distortion(x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """‖x − x_s‖₂² per example."""
    return (x - source).flatten(1).pow(2).sum(dim=1)


def index_params(params: LatentParams, index: torch.Tensor | slice) -> LatentParams:
    """The rows ``index`` of every tensor of ``params``."""
    logits = params.logits[index] if params.logits is not None else None
    return LatentParams(params.mean[index], params.logvar[index], logits)
