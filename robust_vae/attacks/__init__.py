"""Attacks on VAEs: a registry of attack classes and recipes (``attacks/recipes/*.toml``).

Adding an attack is one module whose class carries ``@register_attack``, plus a recipe file.
A recipe is data: the attack's registry name plus hyperparameter values, loadable by name
with single-value overrides::

    attack = robust_vae.load_attack("thesis", steps=200)
    result = attack(model, sources, targets)   # AttackResult, fields shaped (K, N)
"""

from __future__ import annotations

from robust_vae.attacks.base import Attack, AttackResult, Problem, RunOutput
from robust_vae.attacks.recipe import (
    is_recipe,
    load_attack,
    parse_overrides,
    read_recipe,
    recipe_names,
    recipes_folder,
)
from robust_vae.attacks.registry import ATTACKS, make_attack, register_attack

__all__ = [
    "ATTACKS", "Attack", "AttackResult", "Problem", "RunOutput", "is_recipe", "load_attack",
    "make_attack", "parse_overrides", "read_recipe", "recipe_names", "recipes_folder", "register_attack",
]
