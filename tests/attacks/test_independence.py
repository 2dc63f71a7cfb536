"""An example's adversarial depends on its own source, target and seed only.

Attacked one at a time (passing the same per-example seeds) or as one batch of 8, the real
small VAE gives the same adversarials within 1e-5. Measured max |difference| (two small VAEs,
trained with 1 and 2 torch threads): latent-adam (thesis, 40 steps) ≤ 1.8e-7, latent-pgd 0,
latent-lbfgsb (l2, 5 iterations) ≤ 7.2e-7. A batched conv rounds differently for different
batch sizes and L-BFGS-B amplifies that over many iterations (KL, 15 iterations: up to 0.06),
so the lock-step machinery itself is tested bit for bit on a model that evaluates one row at
a time (:class:`RowWise`), and the attack's own ``row_by_row`` option on the shipped ``vae`` at
full length (200 iterations), for both solvers and both precisions.
"""

from __future__ import annotations

import pytest
import torch

from robust_vae.attacks import load_attack, make_attack

from .toy import SEEDS, RowWise, assert_exactly_batch_independent, one_at_a_time


@pytest.mark.parametrize("build", [
    pytest.param(lambda: load_attack("thesis", steps=40), id="latent-adam"),
    pytest.param(lambda: load_attack("pgd-linf", steps=20), id="latent-pgd"),
    pytest.param(lambda: make_attack("latent-lbfgsb", divergence="l2", c=[1e-3, 1.0], max_iter=5), id="latent-lbfgsb"),
])
def test_batch_of_8_equals_8_single_calls(build, small_vae, pairs16) -> None:  # type: ignore[no-untyped-def]
    attack = build()
    xs, xt = pairs16[0][:8], pairs16[1][:8]
    batch = attack(small_vae, xs, xt, seeds=SEEDS)
    single, iterations = one_at_a_time(attack, small_vae, xs, xt, SEEDS)
    assert single.shape == batch.adversarial.shape
    gap = float((single - batch.adversarial).abs().max())
    assert gap <= 1e-5, f"batched and single adversarials differ by {gap:.2e}"
    assert torch.equal(iterations, batch.iterations)
    assert float(batch.linf.min()) > 0  # every example was attacked


def test_lockstep_lbfgsb_is_exactly_batch_independent(small_vae, pairs16) -> None:  # type: ignore[no-untyped-def]
    """Each problem follows exactly its own iterates: with a row-wise model, bit for bit."""
    attack = load_attack("tabacof", c=[1e-3, 1.0], max_iter=10)
    assert_exactly_batch_independent(attack, RowWise(small_vae), pairs16[0][:4], pairs16[1][:4], SEEDS[:4])


@pytest.fixture(scope="module")
def shipped_vae():  # type: ignore[no-untyped-def]
    from robust_vae import load_model

    return load_model("vae", "mnist", seed=0)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("solver", ["scipy", "torch"])
def test_row_by_row_lbfgsb_is_exactly_batch_independent_at_full_length(  # type: ignore[no-untyped-def]
        solver, precision, shipped_vae, pairs16) -> None:
    """``row_by_row=true`` on the shipped ``vae``: bit for bit whatever the batch, for runs of
    hundreds of iterations (the float32 batched conv alone diverges after a few dozen)."""
    attack = load_attack("tabacof", c=[1.0], max_iter=200, solver=solver, precision=precision, row_by_row=True,
                         batch=1)  # torch: one slot, refilled as each problem ends
    xs, xt = pairs16[0][:2], pairs16[1][:2]
    batch = attack(shipped_vae, xs, xt, seeds=SEEDS[:2])
    assert int(batch.iterations.max()) >= 100, batch.iterations  # long runs, not a handful of steps
    assert_exactly_batch_independent(attack, shipped_vae, xs, xt, SEEDS[:2])


# ----------------------------------------------------------------------------- seeds
def test_same_seed_same_adversarials_different_seed_different(small_vae, pairs16) -> None:  # type: ignore[no-untyped-def]
    xs, xt = pairs16[0][:4], pairs16[1][:4]
    first = load_attack("thesis", steps=5, seed=3)(small_vae, xs, xt)
    again = load_attack("thesis", steps=5, seed=3)(small_vae, xs, xt)
    other = load_attack("thesis", steps=5, seed=4)(small_vae, xs, xt)
    assert torch.equal(first.adversarial, again.adversarial)
    # seed s gives example i the seed s + i: seed 4 shifts every example's noise by one
    assert (other.adversarial - first.adversarial).flatten(2).abs().amax(2).min() > 0.01
    explicit = load_attack("thesis", steps=5)(small_vae, xs, xt, seeds=3 + torch.arange(4))
    assert torch.equal(explicit.adversarial, first.adversarial)
    swapped = load_attack("thesis", steps=5)(small_vae, xs, xt, seeds=torch.tensor([3, 4, 99, 6]))
    same = (swapped.adversarial == first.adversarial).flatten(2).all(2)[0]
    assert same.tolist() == [True, True, False, True]
