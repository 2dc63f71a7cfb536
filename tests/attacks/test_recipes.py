"""Recipes (attacks/*.toml): they load, overrides apply, bad input is a ConfigError, and the
Tabacof sweep really gives K = 41 results per example."""

from __future__ import annotations

import math
import time

import pytest
import torch

from robust_vae.attacks import ATTACKS, load_attack, read_recipe, recipe_names
from robust_vae.attacks.base import AttackResult
from robust_vae.attacks.latent import LatentAdam, LatentLBFGSB
from robust_vae.core.errors import ConfigError

from .conftest import source_target_pairs

RECIPES = ["e2e-l2", "e2e-linf", "kos-classifier-cw", "kos-classifier-l2", "kos-classifier-linf", "max-damage-l2",
           "max-damage-linf", "output",
           "pgd-linf", "tabacof", "tabacof-linf", "thesis", "thesis-accumulate", "thesis-fast",
           "unsupervised-kl-l2", "unsupervised-l2", "worst-case-linf"]
TABACOF_GRID = [2.0 ** k for k in range(-20, 21)]


def test_recipe_list() -> None:
    assert recipe_names() == RECIPES


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_loads(name: str) -> None:
    recipe = read_recipe(name)
    attack = load_attack(name)
    assert isinstance(attack, ATTACKS[recipe["attack"]])
    assert recipe["description"]
    for key, value in recipe["params"].items():
        assert getattr(attack, key) == value, key
    assert repr(attack).startswith(type(attack).__name__ + "(")


def test_thesis_recipe_is_the_protocol() -> None:
    attack = load_attack("thesis")
    assert isinstance(attack, LatentAdam)
    assert (attack.epsilon, attack.lam, attack.lr, attack.steps, attack.noise_std) == (0.1, 1.0, 1e-3, 1000, 0.2)
    assert not attack.accumulate_gradients and not attack.early_stop
    assert load_attack("thesis-accumulate").accumulate_gradients


def test_overrides() -> None:
    assert load_attack("thesis", steps=200).steps == 200
    assert load_attack("thesis").steps == 1000  # an override does not leak into the recipe
    assert load_attack("tabacof", c=0.5).sweep_values() == [0.5]


def test_unknown_recipe_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown attack recipe"):
        load_attack("no-such-recipe")


@pytest.mark.parametrize("name", ["thesis", "pgd-linf", "tabacof-linf", "output"])
def test_negative_epsilon_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="epsilon"):
        load_attack(name, epsilon=-0.1)


def test_unknown_hyperparameter_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        load_attack("thesis", step=10)


def test_tabacof_grids() -> None:
    tabacof = load_attack("tabacof")
    assert isinstance(tabacof, LatentLBFGSB)
    assert tabacof.c == TABACOF_GRID and len(tabacof.c) == 41
    assert (tabacof.divergence, tabacof.epsilon, tabacof.memory, tabacof.factr) == ("kl", None, 25, 10.0)
    linf = load_attack("tabacof-linf")
    assert linf.c == [2.0 ** k for k in range(-20, 21, 4)] and linf.epsilon == 0.1


def test_tabacof_sweep_shapes_on_32_real_pairs(small_vae, mnist_test) -> None:  # type: ignore[no-untyped-def]
    """41 C values × 32 pairs = 1312 L-BFGS-B problems; max_iter = 1 keeps it to a few seconds."""
    xs, xt = source_target_pairs(mnist_test, 32)
    start = time.perf_counter()
    result = load_attack("tabacof", max_iter=1)(small_vae, xs, xt)
    elapsed = time.perf_counter() - start
    assert result.adversarial.shape == (41, 32, 1, 32, 32)
    for name in ("l2", "linf", "latent_distance", "objective", "iterations"):
        assert getattr(result, name).shape == (41, 32), name
    assert result.sweep_name == "c" and result.sweep_values == TABACOF_GRID
    assert (result.iterations == 1).all()
    assert float(result.adversarial.min()) >= 0 and float(result.adversarial.max()) <= 1
    # C orders the distortions: the largest C barely moves, the smallest moves far
    assert float(result.l2[-1].max()) < 0.1 < float(result.l2[0].min())
    best, index = result.best_latent()
    assert best.adversarial.shape == (1, 32, 1, 32, 32) and index.shape == (32,)
    assert math.isfinite(elapsed)
    print(f"tabacof K=41 x 32 pairs, max_iter=1: {elapsed:.1f} s")


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_reduces_a_sweep_by_its_own_rule(name: str) -> None:
    """K = 3 × N = 4, built so that the closest code and the largest objective sit at different
    entries: targeted attacks keep the closest code, untargeted ones the largest damage."""
    attack = load_attack(name)
    latent = torch.tensor([[0.1, 0.9, 0.5, 0.5], [0.5, 0.1, 0.9, 0.5], [0.9, 0.5, 0.1, 0.1]])
    objective = torch.tensor([[0.0, 2.0, 1.0, 1.0], [2.0, 0.0, 0.0, 2.0], [1.0, 1.0, 2.0, 0.0]])
    result = AttackResult(adversarial=torch.arange(12.0).view(3, 4, 1, 1, 1), l2=latent.clone(), linf=latent.clone(),
                          latent_distance=latent, objective=objective, iterations=torch.zeros(3, 4),
                          sweep_name="s", sweep_values=[1.0, 2.0, 3.0], attack=name)
    best, index = attack.reduce_sweep(result)
    expected = [1, 0, 2, 1] if attack.untargeted else [0, 1, 2, 2]
    assert index.tolist() == expected
    assert best.adversarial.flatten().tolist() == [4.0 * k + i for i, k in enumerate(expected)]
