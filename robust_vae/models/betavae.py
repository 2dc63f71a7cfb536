"""β-VAE (Higgins 2017) and capacity-controlled β-VAE (Burgess 2018), thesis latents."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robust_vae.core.errors import ConfigError
from robust_vae.models.base import LatentVAE, VAEConfig, linear_capacity
from robust_vae.models.registry import register_family


@dataclass
class BetaVAEConfig(VAEConfig):
    """recon + β·(KL_z + KL_c)."""

    beta: float = 4.0

    def validate(self) -> None:
        super().validate()
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta}")


@register_family
class BetaVAE(LatentVAE):
    config: BetaVAEConfig
    config_class = BetaVAEConfig
    family = "betavae"

    def objective(self, terms: dict[str, torch.Tensor], step: int, total_steps: int) -> torch.Tensor:
        return terms["recon"] + self.config.beta * (terms["kl_z"] + terms["kl_c"])


@dataclass
class CapacityBetaVAEConfig(VAEConfig):
    """recon + γ·|KL − C| with one capacity C on the total KL, raised 0 → 25 nats (Burgess)."""

    gamma: float = 1000.0
    capacity_max: float = 25.0
    capacity_steps: int | None = None

    def validate(self) -> None:
        super().validate()
        if self.gamma <= 0:
            raise ConfigError(f"gamma must be > 0, got {self.gamma}")


@register_family
class CapacityBetaVAE(LatentVAE):
    config: CapacityBetaVAEConfig
    config_class = CapacityBetaVAEConfig
    family = "betavae-capacity"

    def objective(self, terms: dict[str, torch.Tensor], step: int, total_steps: int) -> torch.Tensor:
        c = self.config
        capacity = linear_capacity(step, c.capacity_steps or total_steps, c.capacity_max)
        return terms["recon"] + c.gamma * (terms["kl_z"] + terms["kl_c"] - capacity).abs()
