"""The worst case over attacks (``ensemble``): per example its success is the logical OR of its
members' successes on the same examples with the same seeds, the reported adversarial is the
winning member's, and a run writes the winners per cell (shipped MNIST ``vae``, tiny samples)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import robust_vae as rv
from robust_vae.attacks import is_recipe, load_attack, read_recipe
from robust_vae.attacks.ensemble import EnsembleAttack, reconstruction_labels, success_level
from robust_vae.core.errors import ConfigError
from robust_vae.data import Dataset
from robust_vae.evaluation.success_matrix import SuccessMatrix, success_matrix

N = 12


@pytest.fixture(scope="module")
def vae() -> torch.nn.Module:
    return rv.load_model("vae", "mnist")


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    return rv.load_classifier("mnist")


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """thesis-fast (15 Adam steps) and a 10-step e2e L∞ PGD: the same ε = 0.1 budget, cheap."""
    path = tmp_path_factory.mktemp("recipes") / "e2e-short.toml"
    path.write_text('description = "e2e, 10 steps"\nattack = "e2e"\n[params]\nepsilon = 0.1\nsteps = 10\n')
    return ["thesis-fast", str(path)]


@pytest.fixture(scope="module")
def batch(mnist_test: Dataset, vae: torch.nn.Module, classifier: torch.nn.Module
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """N sources (test images 0..N−1), targets of another class, per-example seeds, target classes."""
    labels = mnist_test.labels
    targets, j = [], 200
    for i in range(N):
        while labels[j] == labels[i]:
            j += 1
        targets.append(j)
        j += 1
    xs, xt = mnist_test.images[:N], mnist_test.images[targets]
    return xs, xt, 1000 + torch.arange(N), labels[targets].clone()


def _levels(model: torch.nn.Module, classifier: torch.nn.Module, xs: torch.Tensor, adv: torch.Tensor,
            target_classes: torch.Tensor) -> torch.Tensor:
    return success_level(reconstruction_labels(model, classifier, adv), reconstruction_labels(model, classifier, xs),
                         target_classes)


@pytest.mark.parametrize("choose", ["first", "smallest-l2"])
def test_ensemble_success_is_the_or_of_its_members(choose: str, vae, classifier, members, batch) -> None:  # type: ignore[no-untyped-def]
    xs, xt, seeds, tc = batch
    ensemble = load_attack("ensemble:" + ",".join(members), choose=choose).bind(classifier=classifier)
    result = ensemble(vae, xs, xt, seeds=seeds, target_classes=tc)
    assert result.adversarial.shape == (1, N, 1, 32, 32) and result.extras["winner"].shape == (1, N)
    winner = result.extras["winner"][0]
    level = _levels(vae, classifier, xs, result.adversarial[0], tc)

    alone = [load_attack(m).bind(classifier=classifier)(vae, xs, xt, seeds=seeds, target_classes=tc) for m in members]
    levels = torch.stack([_levels(vae, classifier, xs, r.adversarial[0], tc) for r in alone])  # (members, N)
    assert torch.equal(level == 2, (levels == 2).any(0))   # AS target: OR of the members
    assert torch.equal(level >= 1, (levels >= 1).any(0))   # AS ignore-target: OR of the members
    assert torch.equal(level, levels.amax(0))
    assert bool((levels == 2).any()) and bool((levels < 2).any())  # the sample tells the cases apart
    for i in range(N):
        w = int(winner[i])
        best = [k for k in range(len(members)) if levels[k, i] == levels[:, i].max()]
        if choose == "first":
            assert w == best[0]
        else:
            l2 = [float(alone[k].l2[0, i]) for k in best]
            assert float(alone[w].l2[0, i]) == pytest.approx(min(l2), abs=1e-5)
        # the reported adversarial is the winner's own (float rounding only: it ran on a sub-batch)
        torch.testing.assert_close(result.adversarial[0, i], alone[w].adversarial[0, i], atol=1e-4, rtol=0)
        assert float(result.l2[0, i]) == pytest.approx(float(alone[w].l2[0, i]), abs=1e-4)


def test_ensemble_run_writes_winners_and_re_renders(vae, classifier, members, mnist_test, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    keep = (mnist_test.labels < 3).nonzero().flatten()[:60]
    small = Dataset(name="mnist", split="test", images=mnist_test.images[keep], labels=mnist_test.labels[keep])
    attack = load_attack("ensemble:" + ",".join(members))
    out = tmp_path / "run"
    result = success_matrix(vae, classifier, small, attack, per_pair=2, seed=0, out_dir=out, progress=False,
                            metadata={"label": "vae"})
    result.save(out)
    examples = pd.read_csv(out / "examples.csv.gz")
    assert "winner" in examples.columns and set(examples["winner"]) <= {0, 1}
    winners = pd.read_csv(out / "winners.csv")
    cells = pd.read_csv(out / "cells.csv")
    names = ["thesis-fast", "e2e-short"]
    assert list(winners.columns[3:]) == [f"target_wins_{m}" for m in names] + [f"ignore_target_wins_{m}" for m in names]
    assert np.array_equal(winners[[f"target_wins_{m}" for m in names]].sum(axis=1), cells["hits_target"])
    assert np.array_equal(winners[[f"ignore_target_wins_{m}" for m in names]].sum(axis=1), cells["hits_ignore_target"])
    assert "## Worst case over attacks" in (out / "summary.md").read_text()
    # the saved run re-renders every file byte for byte
    again = tmp_path / "again"
    SuccessMatrix.load(out).save(again)
    for name in ("cells.csv", "examples.csv.gz", "winners.csv", "metrics.csv", "metrics_cells.csv", "summary.md"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_ensemble_recipes_and_refusals(members: list[str]) -> None:
    recipe = read_recipe("ensemble:thesis-fast,e2e-linf")
    assert recipe["attack"] == "ensemble" and recipe["params"] == {"members": ["thesis-fast", "e2e-linf"]}
    assert recipe["name"] == "ensemble-thesis-fast+e2e-linf"  # a folder name: no ':' or ','
    assert is_recipe("ensemble:thesis-fast,e2e-linf") and not is_recipe("ensemble:thesis-fast,no-such")
    shipped = load_attack("worst-case-linf")
    assert isinstance(shipped, EnsembleAttack) and shipped.members == ["thesis-fast", "tabacof-linf", "e2e-linf"]
    assert (shipped.budget_norm, shipped.epsilon) == ("linf", 0.1)
    hyper = load_attack("ensemble:" + ",".join(members)).hyperparameters()
    assert [m["attack"] for m in hyper["member_attacks"]] == ["latent-adam", "e2e"]
    assert hyper["member_attacks"][1]["hyperparameters"]["steps"] == 10  # the fingerprint sees member recipes
    for bad, match in [("ensemble:", "list member recipes"), ("ensemble:thesis-fast,e2e-l2", "one budget"),
                       ("ensemble:thesis-fast,thesis-fast", "twice"), ("ensemble:thesis-fast,worst-case-linf", "ensemble"),
                       ("ensemble:no-such", "unknown attack recipe")]:
        with pytest.raises(ConfigError, match=match):
            load_attack(bad)
    with pytest.raises(ConfigError, match="choose"):
        load_attack("worst-case-linf", choose="best")
    with pytest.raises(ConfigError, match="no inline form"):
        read_recipe("e2e:linf")
