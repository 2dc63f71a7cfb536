"""σ-VAE with the optimal σ (Rybkin et al. 2021): a Gaussian decoder whose one shared variance
is set to its closed-form maximum-likelihood value on every batch.

The decoder mean is μ = sigmoid(decoder logits) (what :meth:`decode` returns). For a batch of B
images of D pixels, the Gaussian NLL with one σ for all pixels,
B·D/2·log(2πσ²) + Σ‖x − μ‖²/(2σ²), is minimised by σ*² = MSE = Σ‖x − μ‖²/(B·D), which gives the
per-image reconstruction term

    recon_gauss = D/2 · (log σ*² + log 2π + 1)

and the loss recon_gauss + KL_z + KL_c (constants kept, so it is a proper NLL in nats).
σ*² is not detached, as in the authors' code; since σ* minimises the loss over σ, the gradient
is the same either way (envelope theorem). log σ* is bounded below by ``log_sigma_min`` = −6
(the authors' code applies the same floor with a soft clip) so a perfect batch cannot give −∞.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from robust_vae.models.base import LatentParams, LatentVAE, VAEConfig
from robust_vae.models.registry import register_family

LOG_2PI = math.log(2.0 * math.pi)


def optimal_sigma_sq(x: torch.Tensor, mean: torch.Tensor, log_sigma_min: float = -6.0) -> torch.Tensor:
    """σ*² = mean over the batch and pixels of (x − μ)², floored at exp(2·log_sigma_min); 0-dim."""
    return (x - mean).pow(2).mean().clamp(min=math.exp(2.0 * log_sigma_min))


def gaussian_nll_shared_sigma(x: torch.Tensor, mean: torch.Tensor, sigma_sq: torch.Tensor) -> torch.Tensor:
    """Batch-mean Gaussian NLL summed over pixels, one variance ``sigma_sq`` for every pixel."""
    pixels = x[0].numel()
    squared = (x - mean).pow(2).flatten(1).sum(1)
    return (0.5 * pixels * (LOG_2PI + torch.log(sigma_sq)) + squared / (2.0 * sigma_sq)).mean()


@dataclass
class SigmaVAEConfig(VAEConfig):
    """Gaussian likelihood with the optimal shared σ, plus the KL (β = 1)."""

    categorical_dim: int = 0
    log_sigma_min: float = -6.0


@register_family
class SigmaVAE(LatentVAE):
    config: SigmaVAEConfig
    config_class = SigmaVAEConfig
    family = "sigmavae"
    likelihood = "Gaussian with one shared σ² set to the batch MSE (optimal σ), summed over pixels, mean over batch"

    def extra_terms(self, x: torch.Tensor, params: LatentParams, code: torch.Tensor,
                    logits: torch.Tensor) -> dict[str, torch.Tensor]:
        mean = torch.sigmoid(logits)
        sigma_sq = optimal_sigma_sq(x, mean, self.config.log_sigma_min)
        return {"recon_gauss": gaussian_nll_shared_sigma(x, mean, sigma_sq), "sigma_sq": sigma_sq}

    def objective(self, terms: dict[str, torch.Tensor], step: int, total_steps: int) -> torch.Tensor:
        return terms["recon_gauss"] + terms["kl_z"] + terms["kl_c"]
