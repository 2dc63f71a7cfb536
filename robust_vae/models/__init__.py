"""Model families. Adding one is one file plus one line in ``FAMILIES``."""

from __future__ import annotations

from robust_vae.errors import ZooError
from robust_vae.models.base import LatentParams, LatentVAE, VAEConfig
from robust_vae.models.betavae import BetaVAE, CapacityBetaVAE
from robust_vae.models.jointvae import JointVAE
from robust_vae.models.vae import VAE, WeightDecayVAE

FAMILIES: dict[str, type[LatentVAE]] = {
    "vae": VAE,
    "vae-wd": WeightDecayVAE,
    "jointvae": JointVAE,
    "betavae": BetaVAE,
    "betavae-capacity": CapacityBetaVAE,
}


def get_family(name: str) -> type[LatentVAE]:
    """Look up a family class by registry name."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ZooError(
            f"unknown model family {name!r}: choose one of {', '.join(FAMILIES)}"
        ) from None


__all__ = ["FAMILIES", "get_family", "LatentParams", "LatentVAE", "VAEConfig"]
