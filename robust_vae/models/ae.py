"""Plain deterministic autoencoder (Tabacof et al. 2016's baseline): recon only, no KL.

Same convolutional encoder and decoder as the thesis network, but the encoder's head gives only
the code (``latent_dim`` values), the decoder always sees that code (no reparameterisation
noise in training or anywhere else) and the loss is the Bernoulli reconstruction term alone.

There is no posterior, so the KL divergence does not apply: latent attacks on the AE use the
squared L2 distance between codes (Tabacof et al.). For the model interface ``encode`` still
returns ``LatentParams``: the code as the mean and ``logvar = 0`` as a placeholder. That
placeholder is never used to sample (``sample_code`` returns the mean) and keeps anything that
does read it finite; under it the Gaussian KL between two codes is ½‖μ_a − μ_b‖², half the
squared code distance, so even a KL-based objective reduces to the L2 one. The cards'
``kl_per_dim`` and the ``kl_z``/``kl_c`` terms are 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robust_vae.core.errors import ConfigError
from robust_vae.models.base import LatentParams, LatentVAE, VAEConfig
from robust_vae.models.registry import register_family


@dataclass
class AEConfig(VAEConfig):
    """Deterministic code of ``latent_dim`` = 10 units, no categorical; loss = BCE recon."""

    categorical_dim: int = 0

    def validate(self) -> None:
        super().validate()
        if self.categorical_dim != 0:
            raise ConfigError("the autoencoder has no categorical latent (categorical_dim must be 0)")


@register_family
class AE(LatentVAE):
    config: AEConfig
    config_class = AEConfig
    family = "ae"
    stochastic = False

    def encoder_outputs(self) -> int:
        return self.config.latent_dim

    def encode(self, x: torch.Tensor) -> LatentParams:
        """(N, C, H, W) -> the code as ``mean``, ``logvar`` = 0 (a placeholder, see the module), no logits."""
        self.check_input(x)
        code = self.encoder(x)
        return LatentParams(code, torch.zeros_like(code), None)

    def sample_code(self, params: LatentParams) -> torch.Tensor:
        """Deterministic: the code itself."""
        return params.mean

    def loss_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """BCE of the reconstruction of the code; ``kl_z`` and ``kl_c`` are 0 (no posterior)."""
        logits = self.decoder(self.encode(x).mean)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
        zero = torch.zeros((), device=x.device)
        return {"recon": recon, "kl_z": zero, "kl_c": zero.clone()}

    def latent_kl_per_dim(self, params: LatentParams) -> torch.Tensor:
        return torch.zeros_like(params.mean)

    def objective(self, terms: dict[str, torch.Tensor], step: int, total_steps: int) -> torch.Tensor:
        return terms["recon"]
