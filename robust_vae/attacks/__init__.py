"""Attacks on VAEs: a registry of attack classes and recipes (``attacks/*.toml``).

Adding an attack is one file plus one line in ``ATTACKS``. A recipe is data: the attack's
registry name plus hyperparameter values, loadable by name with single-value overrides::

    attack = robust_vae.load_attack("thesis", steps=200)
    result = attack(model, sources, targets)   # AttackResult, fields shaped (K, N)
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from robust_vae.attacks.base import Attack, AttackResult, Problem, RunOutput
from robust_vae.attacks.e2e import EndToEndAttack
from robust_vae.attacks.kos import KosClassifierAttack
from robust_vae.attacks.latent import LatentAdam, LatentLBFGSB, LatentPGD
from robust_vae.attacks.output import OutputAttack
from robust_vae.errors import ConfigError
from robust_vae.zoo import REPO_ROOT

ATTACKS: dict[str, type[Attack]] = {
    "latent-adam": LatentAdam,
    "latent-lbfgsb": LatentLBFGSB,
    "latent-pgd": LatentPGD,
    "output": OutputAttack,
    "e2e": EndToEndAttack,
    "kos-classifier": KosClassifierAttack,
}

RECIPES_DIR = REPO_ROOT / "attacks"


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Class decorator for attacks defined outside this package."""
    ATTACKS[cls.name] = cls
    return cls


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def read_recipe(name_or_path: str | Path) -> dict[str, Any]:
    """The recipe as a dict: ``{"attack": registry name, "params": {...}, "description": ...}``."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = RECIPES_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ConfigError(
            f"unknown attack recipe {str(name_or_path)!r}: choose one of {', '.join(recipe_names())} "
            f"(files in {RECIPES_DIR}) or pass a path to a .toml recipe"
        )
    try:
        recipe = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"recipe {path} is not valid TOML: {error}") from None
    if recipe.get("attack") not in ATTACKS:
        raise ConfigError(f"recipe {path}: 'attack' must be one of {', '.join(ATTACKS)}")
    recipe["params"] = {k: _expand_grid(path, k, v) for k, v in recipe.get("params", {}).items()}
    recipe["name"] = path.stem
    return recipe


def _expand_grid(path: Path, key: str, value: Any) -> Any:
    """A table ``{base, start, stop, step}`` stands for the log grid base^k, k = start..stop."""
    if not isinstance(value, dict):
        return value
    try:
        base, start, stop = float(value["base"]), int(value["start"]), int(value["stop"])
        step = int(value.get("step", 1))
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"recipe {path}: {key} must be a value or {{base, start, stop, step}}") from None
    if step < 1 or stop < start:
        raise ConfigError(f"recipe {path}: {key} grid needs step >= 1 and stop >= start")
    return [base ** k for k in range(start, stop + 1, step)]


def make_attack(name: str, **params: Any) -> Attack:
    """Instantiate a registered attack by name with keyword hyperparameters."""
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}: choose one of {', '.join(ATTACKS)}")
    cls = ATTACKS[name]
    try:
        return cls(**params)
    except TypeError as error:
        raise ConfigError(f"{name}: {error}") from None


def load_attack(recipe: str | Path = "thesis", **overrides: Any) -> Attack:
    """Build the attack a recipe describes; keyword ``overrides`` replace single values."""
    spec = read_recipe(recipe)
    return make_attack(spec["attack"], **(spec["params"] | overrides))


__all__ = [
    "ATTACKS", "Attack", "AttackResult", "Problem", "RunOutput", "LatentAdam", "LatentLBFGSB",
    "LatentPGD", "OutputAttack", "EndToEndAttack", "KosClassifierAttack", "load_attack",
    "make_attack", "read_recipe", "recipe_names", "register_attack",
]
