"""β-TCVAE (Chen et al. 2018): the KL split into index-code MI, total correlation and dimension-wise KL.

E_x KL(q(z|x) ‖ p(z)) = I_q(x; z) + KL(q(z) ‖ Π_j q(z_j)) + Σ_j KL(q(z_j) ‖ p(z_j)), and the loss
is recon + α·MI + β·TC + γ·dimKL with α = γ = 1, β = 6. The aggregate posterior q(z) is estimated
on the minibatch by minibatch-weighted sampling (MWS): for a batch of M from a dataset of N, with
z_i drawn from q(z|x_i),

    log q(z_i)         ≈ logsumexp_j log q(z_i | x_j) − log(N·M)
    log Π_k q(z_ik)    ≈ Σ_k [logsumexp_j log q(z_ik | x_j) − log(N·M)].

MWS is the paper's estimator, and it is biased: it is a lower bound on log q(z), and when the
batch is the whole dataset (M = N) it gives exactly log q(z_i) − log N, so its TC is the true TC
plus (D − 1)·log N (the test checks this against quadrature). The three terms still add up to
the sampled KL, log q(z|x) − log p(z), whatever the estimate of q(z).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from robust_vae.core.errors import ConfigError
from robust_vae.models.base import LatentParams, LatentVAE, VAEConfig
from robust_vae.models.registry import register_family

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, exp(logvar)) per dimension (broadcasting)."""
    return -0.5 * (LOG_2PI + logvar + (z - mean).pow(2) * torch.exp(-logvar))


def mws_decomposition(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
                      dataset_size: int) -> dict[str, torch.Tensor]:
    """MWS estimates of the batch-mean index-code MI, TC and dimension-wise KL.

    z, mean, logvar: (M, D), z[i] a sample of N(mean[i], exp(logvar[i])); dataset_size: N.
    Returns 0-dim tensors ``mi`` = E[log q(z|x) − log q(z)], ``tc`` = E[log q(z) − Σ_k log q(z_k)],
    ``dim_kl`` = E[Σ_k log q(z_k) − log p(z)], p = N(0, I).
    """
    batch = z.shape[0]
    log_norm = math.log(dataset_size * batch)
    # (M, M, D): log q(z_i,k | x_j)
    pairwise = gaussian_log_density(z.unsqueeze(1), mean.unsqueeze(0), logvar.unsqueeze(0))
    log_qz = torch.logsumexp(pairwise.sum(2), dim=1) - log_norm
    log_prod_qz = (torch.logsumexp(pairwise, dim=1) - log_norm).sum(1)
    log_qz_x = gaussian_log_density(z, mean, logvar).sum(1)
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    return {
        "mi": (log_qz_x - log_qz).mean(),
        "tc": (log_qz - log_prod_qz).mean(),
        "dim_kl": (log_prod_qz - log_pz).mean(),
    }


@dataclass
class BetaTCVAEConfig(VAEConfig):
    """recon + α·MI + β·TC + γ·dimKL (+ KL_c, unweighted, if a categorical is configured).

    ``dataset_size`` is the N of minibatch-weighted sampling: 60,000 (the MNIST training set)
    by default; :func:`robust_vae.training.train_vae` sets it to the size of the training set
    it loads.
    """

    categorical_dim: int = 0
    alpha: float = 1.0
    beta: float = 6.0
    gamma: float = 1.0
    dataset_size: int = 60_000

    def validate(self) -> None:
        super().validate()
        for name in ("alpha", "beta", "gamma"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.dataset_size < 1:
            raise ConfigError(f"dataset_size must be >= 1, got {self.dataset_size}")


@register_family
class BetaTCVAE(LatentVAE):
    config: BetaTCVAEConfig
    config_class = BetaTCVAEConfig
    family = "betatcvae"

    def extra_terms(self, x: torch.Tensor, params: LatentParams, code: torch.Tensor,
                    logits: torch.Tensor) -> dict[str, torch.Tensor]:
        z = code[:, :self.config.latent_dim]  # the Gaussian sample that was decoded
        return mws_decomposition(z, params.mean, params.logvar, self.config.dataset_size)

    def objective(self, terms: dict[str, torch.Tensor], step: int, total_steps: int) -> torch.Tensor:
        c = self.config
        return (terms["recon"] + c.alpha * terms["mi"] + c.beta * terms["tc"] + c.gamma * terms["dim_kl"]
                + terms["kl_c"])
