"""The attack registry: ``@register_attack`` on an :class:`Attack` subclass adds it by its name."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from robust_vae.attacks.base import Attack
from robust_vae.core.errors import ConfigError
from robust_vae.core.registry import Registry

ATTACKS: Registry[type[Attack]] = Registry("attack", "robust_vae.attacks", ConfigError)
A = TypeVar("A", bound=type[Attack])


def register_attack(cls: A) -> A:
    """Class decorator: register ``cls`` under ``cls.name`` (an attack's recipe ``attack`` key)."""
    ATTACKS.register(cls.name)(cls)
    return cls


def make_attack(name: str, **params: Any) -> Attack:
    """Instantiate a registered attack by name with keyword hyperparameters."""
    cls = ATTACKS.get(name)
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(f"{name}: unknown hyperparameter(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    try:
        return cls(**params)
    except TypeError as error:
        raise ConfigError(f"{name}: {error}") from None
