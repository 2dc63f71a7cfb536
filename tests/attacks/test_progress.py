"""Every registered attack reports its optimisation steps to ``robust_vae.core.progress``
while it runs: several calls per attack call, ``done`` never decreasing and moving forward,
``total`` the attack's own step count (L-BFGS-B: ``max_iter`` per problem, here N problems,
so that the bar keeps moving while problems wait for a slot; Carlini-Wagner: binary-search
steps × steps)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from robust_vae.attacks import ATTACKS
from robust_vae.core import progress

N = 4
# the latent classifier settings of test_foolbox_attacks.KOS_FAST: trained once per session
KOS_FAST = {"classifier_train_size": 5000, "classifier_epochs": 10}
# per registered attack: (case id, small hyperparameters, the total each step reports)
CASES: dict[str, list[tuple[str, dict[str, Any], int]]] = {
    "latent-adam": [("adam", {"steps": 6}, 6),
                    ("adam-early-stop", {"steps": 6, "early_stop": True, "check_every": 2}, 6)],
    "latent-pgd": [("pgd-linf", {"steps": 5}, 5), ("pgd-l2", {"steps": 5, "norm": "l2", "epsilon": 1.0}, 5)],
    "latent-lbfgsb": [("scipy", {"c": [0.01], "max_iter": 6}, N * 6),
                      ("torch", {"c": [0.01], "max_iter": 6, "solver": "torch"}, N * 6)],
    "output": [("adam", {"steps": 5}, 5), ("lbfgsb", {"optimizer": "lbfgsb", "max_iter": 4}, N * 4)],
    "e2e": [("linf-pgd", {"steps": 5}, 5),
            ("cw", {"method": "cw", "epsilon": 2.0, "steps": 3, "binary_search_steps": 2,
                    "initial_const": 10.0, "cw_stepsize": 0.2}, 6)],
    "kos-classifier": [("linf-pgd", {"steps": 5, **KOS_FAST}, 5)],
    # each member's steps rescaled to its slice of 1000 (robust_vae.attacks.ensemble.PROGRESS_SCALE)
    "ensemble": [("members", {"members": ["thesis-fast", "pgd-linf"]}, 2000)],
    "max-damage": [("pgd", {"steps": 3, "restarts": 2}, 6),
                   ("lbfgsb", {"optimizer": "lbfgsb", "max_iter": 4, "restarts": 1}, N * 4)],
    "unsupervised": [("l2", {"power_iterations": 4}, 4),
                     ("linf-sweep", {"power_iterations": 3, "norm": "linf", "epsilon": [0.05, 0.1]}, 3)],
    "unsupervised-kl": [("l2", {"steps": 5}, 5), ("linf", {"steps": 4, "norm": "linf", "epsilon": 0.1}, 4)],
}


def test_every_registered_attack_has_a_progress_case() -> None:
    assert sorted(CASES) == sorted(name for name, _ in ATTACKS.items()), "add the new attack to CASES"


PARAMS = [pytest.param(name, params, total, id=f"{name}-{case}")
          for name, _ in ATTACKS.items() for case, params, total in CASES.get(name, [])]


@pytest.mark.parametrize(("name", "params", "total"), PARAMS)
def test_attack_reports_its_steps(name: str, params: dict[str, Any], total: int, small_vae: torch.nn.Module,
                                  pairs16: tuple[torch.Tensor, torch.Tensor]) -> None:
    attack = ATTACKS[name](**params)
    xs, xt = pairs16[0][:N], pairs16[1][:N]
    calls: list[tuple[int, int]] = []
    with progress.listen(lambda done, of: calls.append((done, of))):
        attack(small_vae, xs, xt)
    assert len(calls) >= 3, calls
    dones = [done for done, _ in calls]
    assert all(of == total for _, of in calls), calls
    assert dones == sorted(dones) and dones[-1] > dones[0], dones
    assert 0 <= dones[0] and dones[-1] <= total, dones

