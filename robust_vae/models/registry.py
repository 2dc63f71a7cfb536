"""The model-family registry: ``@register_family`` on a :class:`LatentVAE` subclass adds it."""

from __future__ import annotations

from typing import TypeVar

from robust_vae.core.errors import ZooError
from robust_vae.core.registry import Registry
from robust_vae.models.base import LatentVAE

FAMILIES: Registry[type[LatentVAE]] = Registry("model family", "robust_vae.models", ZooError)
F = TypeVar("F", bound=type[LatentVAE])


def register_family(cls: F) -> F:
    """Class decorator: register ``cls`` under ``cls.family`` (the zoo and CLI name)."""
    FAMILIES.register(cls.family)(cls)
    return cls


def get_family(name: str) -> type[LatentVAE]:
    """Look up a family class by registry name."""
    return FAMILIES.get(name)
