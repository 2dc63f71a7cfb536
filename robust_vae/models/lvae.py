"""L-VAE (Ozcan et al.): the reconstruction and KL weights are learned with the network.

The loss is exactly the one in the project's literature notes (and issue 18):

    recon/σ0² + KL/σ1² + σ0² + σ1²

with the *squares* σ0², σ1² as penalties, not log σ² (the Gaussian-NLL form would have log σ²).
σ0² and σ1² are parametrised by their logs (``log_sigma0_sq``, ``log_sigma1_sq``, learnable
parameters trained by the same Adam as the network) so they stay positive. For fixed recon and
KL the loss is smallest at σ0² = √recon and σ1² = √KL, so σ0² grows while recon > σ0⁴ and
shrinks otherwise (likewise σ1² with the KL). β̂ = σ0²/σ1² plays the role of β; both σ² start
at 1 (β̂ = 1, the ELBO).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from robust_vae.core.errors import ConfigError
from robust_vae.models.base import LatentParams, LatentVAE, VAEConfig
from robust_vae.models.registry import register_family


@dataclass
class LVAEConfig(VAEConfig):
    """recon/σ0² + (KL_z + KL_c)/σ1² + σ0² + σ1², σ0², σ1² learned from ``sigma*_sq_init``."""

    categorical_dim: int = 0
    sigma0_sq_init: float = 1.0
    sigma1_sq_init: float = 1.0

    def validate(self) -> None:
        super().validate()
        for name in ("sigma0_sq_init", "sigma1_sq_init"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")


@register_family
class LVAE(LatentVAE):
    config: LVAEConfig
    config_class = LVAEConfig
    family = "lvae"

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__(config)
        self.log_sigma0_sq = nn.Parameter(torch.tensor(math.log(self.config.sigma0_sq_init)))
        self.log_sigma1_sq = nn.Parameter(torch.tensor(math.log(self.config.sigma1_sq_init)))

    def extra_terms(self, x: torch.Tensor, params: LatentParams, code: torch.Tensor,
                    logits: torch.Tensor) -> dict[str, torch.Tensor]:
        sigma0_sq, sigma1_sq = self.log_sigma0_sq.exp(), self.log_sigma1_sq.exp()
        return {"sigma0_sq": sigma0_sq, "sigma1_sq": sigma1_sq, "beta_hat": (sigma0_sq / sigma1_sq).detach()}

    def objective(self, terms: dict[str, torch.Tensor], step: int, total_steps: int) -> torch.Tensor:
        sigma0_sq, sigma1_sq = self.log_sigma0_sq.exp(), self.log_sigma1_sq.exp()
        kl = terms["kl_z"] + terms["kl_c"]
        return terms["recon"] / sigma0_sq + kl / sigma1_sq + sigma0_sq + sigma1_sq
