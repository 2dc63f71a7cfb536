"""Recipes: an attack's registry name plus hyperparameter values, as TOML package data.

The shipped recipes are ``robust_vae/attacks/recipes/*.toml`` (read with ``importlib.resources``,
so they load from an installed wheel too); ``--attack PATH.toml`` or ``load_attack(path)``
reads a user's own file. An attack with an inline form also takes ``<attack>:<argument>``
(``ensemble:thesis-fast,tabacof-linf,e2e-linf``; :meth:`Attack.inline_params`).
"""

from __future__ import annotations

import tomllib
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from robust_vae.attacks.base import Attack
from robust_vae.attacks.registry import ATTACKS, make_attack
from robust_vae.core.errors import ConfigError


def recipes_folder() -> Traversable:
    """The folder of shipped recipes inside the installed package."""
    return resources.files("robust_vae.attacks").joinpath("recipes")


def recipe_names() -> list[str]:
    """Names of the shipped recipes, sorted."""
    return sorted(entry.name[:-5] for entry in recipes_folder().iterdir() if entry.name.endswith(".toml"))


def _inline(name_or_path: str | Path) -> tuple[str, str] | None:
    """(attack, argument) of an inline recipe ``<attack>:<argument>``, else None."""
    if isinstance(name_or_path, Path) or Path(name_or_path).is_file():
        return None
    attack, sep, argument = name_or_path.partition(":")
    return (attack, argument) if sep and attack in ATTACKS else None


def is_recipe(name_or_path: str | Path) -> bool:
    """Whether ``name_or_path`` names a shipped recipe, an existing ``.toml`` file or a valid
    inline recipe (``ensemble:thesis-fast,e2e-linf``)."""
    path = Path(name_or_path)
    if _inline(name_or_path) is not None:
        try:
            read_recipe(name_or_path)
        except ConfigError:
            return False
        return True
    if path.suffix == ".toml":
        return path.is_file()
    return str(name_or_path) in recipe_names()


def read_recipe(name_or_path: str | Path) -> dict[str, Any]:
    """The recipe as a dict: ``{"attack": registry name, "params": {...}, "description": ...,
    "name": file stem}``; grids ``{base, start, stop, step}`` are expanded to lists. An inline
    recipe ``<attack>:<argument>`` is read by its attack class (:meth:`Attack.inline_params`)."""
    inline = _inline(name_or_path)
    if inline is not None:
        attack, argument = inline
        cls = ATTACKS[attack]
        params = cls.inline_params(argument)
        return {"attack": attack, "params": params, "name": cls.inline_name(argument),
                "description": f"{attack} {argument} (inline recipe)"}
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"recipe file {path} not found: pass an existing .toml recipe or one of "
                              f"{', '.join(recipe_names())}")
        text, name, where = path.read_text(), path.stem, str(path)
    else:
        entry = recipes_folder().joinpath(f"{name_or_path}.toml")
        if not entry.is_file():
            raise ConfigError(
                f"unknown attack recipe {str(name_or_path)!r}: choose one of {', '.join(recipe_names())} "
                "or pass a path to a .toml recipe"
            )
        text, name, where = entry.read_text(), str(name_or_path), f"recipe {name_or_path}"
    try:
        recipe = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{where} is not valid TOML: {error}") from None
    if recipe.get("attack") not in ATTACKS:
        raise ConfigError(f"{where}: 'attack' must be one of {', '.join(ATTACKS.names())}")
    recipe["params"] = {k: _expand_grid(where, k, v) for k, v in recipe.get("params", {}).items()}
    recipe["name"] = name
    return recipe


def _expand_grid(where: str, key: str, value: Any) -> Any:
    """A table ``{base, start, stop, step}`` stands for the log grid base^k, k = start..stop."""
    if not isinstance(value, dict):
        return value
    try:
        base, start, stop = float(value["base"]), int(value["start"]), int(value["stop"])
        step = int(value.get("step", 1))
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}: {key} must be a value or {{base, start, stop, step}}") from None
    if step < 1 or stop < start:
        raise ConfigError(f"{where}: {key} grid needs step >= 1 and stop >= start")
    return [base ** k for k in range(start, stop + 1, step)]


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["steps=200", "solver=torch"]`` -> ``{"steps": 200, "solver": "torch"}`` (TOML values;
    a bare word is kept as a string)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r} (e.g. --set steps=200)")
        try:
            overrides[key.strip()] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key.strip()] = text  # a bare word: keep it as a string
    return overrides


def load_attack(recipe: str | Path = "thesis", **overrides: Any) -> Attack:
    """Build the attack a recipe describes; keyword ``overrides`` replace single values."""
    spec = read_recipe(recipe)
    return make_attack(spec["attack"], **(spec["params"] | overrides))
