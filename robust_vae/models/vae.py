"""Entangled VAE (``vae``) and the weight-decay variant (``vae-wd``), protocol §2."""

from __future__ import annotations

from dataclasses import dataclass

from robust_vae.models.base import LatentVAE, VAEConfig
from robust_vae.models.registry import register_family


@register_family
class VAE(LatentVAE):
    """Standard ELBO (β = 1), no other regulariser."""

    config_class = VAEConfig
    family = "vae"


@dataclass
class WeightDecayVAEConfig(VAEConfig):
    """The entangled VAE trained with Adam ``weight_decay = 0.5`` (the thesis text's value)."""

    weight_decay: float = 0.5


@register_family
class WeightDecayVAE(LatentVAE):
    """Standard ELBO; the regularisation is Adam's weight decay (see the config)."""

    config_class = WeightDecayVAEConfig
    family = "vae-wd"
