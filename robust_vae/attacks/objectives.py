"""Per-example objectives shared by the attacks; each maps a batch to an (M,) tensor."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def gaussian_symmetric_kl(mean_p: torch.Tensor, logvar_p: torch.Tensor, mean_q: torch.Tensor,
                          logvar_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) + KL(q ‖ p) of diagonal Gaussians, (N, D) each -> (N,):
    ½ Σ_j [σp²/σq² + σq²/σp² + (μp − μq)²(1/σp² + 1/σq²) − 2]."""
    var_p, var_q = logvar_p.exp(), logvar_q.exp()
    diff2 = (mean_p - mean_q) ** 2
    terms = var_p / var_q + var_q / var_p + diff2 * (1 / var_p + 1 / var_q) - 2
    return 0.5 * terms.sum(dim=1)


def categorical_symmetric_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) + KL(q ‖ p) of categoricals softmax(logits), (N, K) each -> (N,):
    Σ_k (p_k − q_k)(log p_k − log q_k)."""
    log_p, log_q = F.log_softmax(logits_p, dim=1), F.log_softmax(logits_q, dim=1)
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=1)


def posterior_symmetric_kl(p: LatentParams, q: LatentParams) -> torch.Tensor:
    """Symmetric KL of two batches of posteriors, (N,): the diagonal Gaussian part plus, when
    both have one, the categorical part (the two latents are independent, so the parts add).
    The one implementation: the unsupervised KL attack maximises it, and
    :mod:`robust_vae.evaluation.attack_metrics` reports it."""
    kl = gaussian_symmetric_kl(p.mean, p.logvar, q.mean, q.logvar)
    if p.logits is not None and q.logits is not None:
        kl = kl + categorical_symmetric_kl(p.logits, q.logits)
    return kl
