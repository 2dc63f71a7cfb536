"""Model families (one module each, registered with ``@register_family``) and the model interface."""

from __future__ import annotations

from robust_vae.models.base import LatentParams, LatentVAE, VAEConfig
from robust_vae.models.protocol import AttackableModel, attackable
from robust_vae.models.registry import FAMILIES, get_family, register_family

__all__ = ["FAMILIES", "AttackableModel", "attackable", "get_family", "register_family", "LatentParams", "LatentVAE", "VAEConfig"]
