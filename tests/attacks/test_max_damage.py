"""The max-damage attack: closed-form bounds on a linear autoencoder x̂(x) = W·x + b (‖W‖₂·r for
L2, ‖W‖₂·r·√n for L∞; the top singular direction reached where the box does not bind), the
damage curve never decreasing in r, per-example budgets against the sweep, the damage measured
on the deterministic reconstruction, budgets, batch independence and bad input."""

from __future__ import annotations

import math

import pytest
import torch

import robust_vae as rv
from robust_vae.attacks import make_attack
from robust_vae.attacks.max_damage import MaxDamage, damage_curve
from robust_vae.core.errors import ConfigError

from .toy import SEEDS, LinearAutoencoder, RowWise, assert_exactly_batch_independent

SHAPE = (1, 8, 8)
PIXELS = 64
SINGULAR_VALUES = torch.tensor([3.0, 1.5, 1.0, 0.5, 0.25])
L2_RADII = [0.05, 0.1, 0.2, 0.4]
LINF_RADII = [0.005, 0.01, 0.02, 0.05]


def linear_autoencoder() -> LinearAutoencoder:
    """W = D·E (64 × 64, rank 5) with singular values :data:`SINGULAR_VALUES` (a gap of 2
    between the top two) and a random bias."""
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(PIXELS, 5, generator=g))
    v, _ = torch.linalg.qr(torch.randn(PIXELS, 5, generator=g))
    return LinearAutoencoder(v.T, u * SINGULAR_VALUES, 0.1 * torch.randn(PIXELS, generator=g), SHAPE)


def spectral_norm(model: LinearAutoencoder) -> float:
    return float(torch.linalg.matrix_norm(model.matrix.double(), ord=2))


def halves(n: int) -> torch.Tensor:
    """(n, 1, 8, 8) of 0.5: an L2 or L∞ radius ≤ 0.5 never meets the box."""
    return torch.full((n, *SHAPE), 0.5)


def random_images(n: int, seed: int = 1) -> torch.Tensor:
    """(n, 1, 8, 8) uniform in [0, 1]: large radii meet the box."""
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def damage_by_hand(model: torch.nn.Module, adversarial: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """‖x̂(x*) − x̂(x)‖₂ for adversarials (K, N, ...) of x (N, ...): (K, N)."""
    with torch.no_grad():
        k = adversarial.shape[0]
        recon = model.reconstruct(adversarial.flatten(0, 1)).view(k, *x.shape)
        return (recon - model.reconstruct(x)).flatten(2).norm(dim=2)


# ----------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("optimizer", ["pgd", "lbfgsb"])
@pytest.mark.parametrize(("norm", "radii"), [("l2", L2_RADII), ("linf", LINF_RADII)])
def test_linear_damage_stays_within_the_closed_form_bound(optimizer: str, norm: str, radii: list[float]) -> None:
    """‖W·d‖₂ ≤ ‖W‖₂·‖d‖₂ ≤ ‖W‖₂·r (L2) or ‖W‖₂·r·√n (L∞), in the interior and where the box
    binds (random images, radii up to 4× the grid); the damage is positive and is the
    damage of the returned adversarial."""
    model = linear_autoencoder()
    sigma = spectral_norm(model)
    grid = radii + [4 * radii[-1]]
    scale = 1.0 if norm == "l2" else math.sqrt(PIXELS)
    for x in (halves(3), random_images(3)):
        attack = make_attack("max-damage", epsilon=grid, norm=norm, optimizer=optimizer, steps=30, max_iter=30)
        result = attack(model, x, x)
        bound = torch.tensor(grid).view(-1, 1) * sigma * scale
        assert bool((result.objective <= bound * (1 + 1e-5)).all()), (result.objective / bound)
        assert float(result.objective.min()) > 0
        torch.testing.assert_close(result.objective, damage_by_hand(model, result.adversarial, x), rtol=1e-5, atol=1e-6)
        assert torch.equal(result.extras["damage"], result.objective)


@pytest.mark.parametrize("optimizer", ["pgd", "lbfgsb"])
def test_l2_damage_reaches_the_top_singular_direction_where_the_box_does_not_bind(optimizer: str) -> None:
    """At x = 0.5 and r ≤ 0.4 the maximum is ‖W‖₂·r, along the top right-singular vector v₁:
    both optimisers reach 0.95 of it, and the perturbation is aligned with ±v₁."""
    model = linear_autoencoder()
    sigma = spectral_norm(model)
    x = halves(4)
    result = make_attack("max-damage", epsilon=L2_RADII, norm="l2", optimizer=optimizer, steps=30, max_iter=50)(model, x, x)
    bound = torch.tensor(L2_RADII).view(-1, 1) * sigma
    ratio = result.objective / bound
    assert float(ratio.min()) >= 0.95, ratio
    v1 = torch.linalg.svd(model.matrix.double()).Vh[0].float()
    d = (result.adversarial - x).flatten(2)
    cosine = (d @ v1).abs() / d.norm(dim=2)
    assert float(cosine.min()) > 0.95, cosine
    torch.testing.assert_close(result.l2, torch.tensor(L2_RADII).view(-1, 1).expand(-1, 4), rtol=1e-4, atol=0)


def test_linf_damage_beats_the_sign_of_the_top_singular_vector() -> None:
    """L∞ at x = 0.5: the maximum of ‖W·d‖ over the cube is at a vertex; PGD's sign steps find
    one at least as good as r·sign(v₁) (within 1 %), and use the whole budget."""
    model = linear_autoencoder()
    x = halves(4)
    result = make_attack("max-damage", epsilon=LINF_RADII, norm="linf", steps=30)(model, x, x)
    v1 = torch.linalg.svd(model.matrix.double()).Vh[0].float()
    vertex = (model.matrix @ v1.sign()).norm() * torch.tensor(LINF_RADII).view(-1, 1)
    assert bool((result.objective >= 0.99 * vertex).all()), result.objective / vertex
    eps = torch.tensor(LINF_RADII).view(-1, 1).expand(-1, 4)
    assert bool((result.linf <= eps).all())
    torch.testing.assert_close(result.linf, eps, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- the curve
@pytest.mark.parametrize("monotone", [True, False])
@pytest.mark.parametrize("optimizer", ["pgd", "lbfgsb"])
def test_linear_damage_never_decreases_with_the_radius(monotone: bool, optimizer: str) -> None:
    model = linear_autoencoder()
    x = random_images(4)
    radii = [0.1, 0.25, 0.5, 1.0, 2.0]
    attack = make_attack("max-damage", epsilon=radii, optimizer=optimizer, steps=30, max_iter=30, monotone=monotone)
    damage = attack(model, x, x, seeds=SEEDS[:4]).objective
    assert bool((damage[1:] >= damage[:-1] - 1e-5).all()), damage


def test_small_vae_damage_curve_never_decreases(small_vae, pairs16) -> None:  # type: ignore[no-untyped-def]
    """The real VAE, L2 r ∈ {0.25, 0.5, 1, 2, 3}: the damage grows with r (with the monotone
    envelope exactly; each radius's own run within 2 % of the envelope); random perturbations
    of the largest radius do less damage."""
    xs = pairs16[0][:4]
    radii = [0.25, 0.5, 1.0, 2.0, 3.0]
    attack = MaxDamage(epsilon=radii, steps=15, rel_stepsize=0.2, restarts=1)
    curve_radii, damage = damage_curve(small_vae, xs, radii, attack=attack, seeds=SEEDS[:4])
    assert curve_radii.tolist() == radii and damage.shape == (5, 4)
    assert bool((damage[1:] >= damage[:-1]).all()), damage
    own = make_attack("max-damage", epsilon=radii, steps=15, rel_stepsize=0.2, monotone=False)(
        small_vae, xs, xs, seeds=SEEDS[:4]).objective
    assert bool((own <= damage).all()) and bool((own >= 0.98 * damage).all()), own / damage
    assert float(damage[0].min()) > 0
    g = torch.Generator().manual_seed(0)
    randoms = torch.randn(16, *xs.shape, generator=g)
    randoms = (xs + 3.0 * randoms / randoms.flatten(2).norm(dim=2)[..., None, None, None]).clamp(0, 1)
    random_damage = damage_by_hand(small_vae, randoms, xs)
    assert bool((damage[-1] > random_damage.amax(0)).all())


def test_monotone_envelope_takes_the_best_smaller_radius() -> None:
    """An unsorted grid, rows checked against the radius-by-radius runs (monotone=False)."""
    model = linear_autoencoder()
    x = random_images(3)
    radii = [1.0, 0.1, 0.5]
    own = make_attack("max-damage", epsilon=radii, steps=10, monotone=False)(model, x, x)
    envelope = make_attack("max-damage", epsilon=radii, steps=10)(model, x, x)
    expected = torch.stack([own.objective[[i for i, s in enumerate(radii) if s <= r]].amax(0) for r in radii])
    assert torch.equal(envelope.objective, expected)
    assert bool((envelope.extras["run_epsilon"] <= torch.tensor(radii).view(-1, 1)).all())
    assert bool((envelope.l2 <= torch.tensor(radii).view(-1, 1)).all())


def test_a_sweep_reduces_to_its_most_damaging_entry_not_the_closest_code() -> None:
    """Untargeted: a success matrix keeps, per example, the radius of largest damage (the
    largest radius on an unsorted grid), where "closest to the target code" would pick another."""
    model = linear_autoencoder()
    x = random_images(3)
    radii = [0.5, 2.0, 0.1]
    attack = make_attack("max-damage", epsilon=radii, steps=10)
    assert attack.untargeted
    result = attack(model, x, x.flip(0), seeds=SEEDS[:3])
    best, index = attack.reduce_sweep(result)
    assert index.tolist() == [1, 1, 1]
    assert torch.equal(best.objective[0], result.objective.amax(0))
    assert torch.equal(best.adversarial[0], result.adversarial[1])
    assert not torch.equal(index, result.best_latent()[1])
    single = make_attack("max-damage", epsilon=0.5, steps=10)
    alone = single(model, x, x, seeds=SEEDS[:3])
    assert single.reduce_sweep(alone)[0] is alone


# ----------------------------------------------------------------------------- per-example budgets
@pytest.mark.parametrize("optimizer", ["pgd", "lbfgsb"])
def test_at_budgets_equals_the_sweep_entry_of_that_radius(optimizer: str) -> None:
    """Equal budgets r: the sweep's own run at r (monotone=False), adversarial for adversarial
    (a row-wise model, so batching changes no bit); mixed budgets: each example's entry."""
    model = RowWise(linear_autoencoder())
    x, seeds = random_images(4), SEEDS[:4]
    radii = [0.1, 0.5, 1.0]
    attack = MaxDamage(epsilon=radii, optimizer=optimizer, steps=10, max_iter=8, restarts=2, monotone=False)
    sweep = attack(model, x, x, seeds=seeds)
    for j, r in enumerate(radii):
        single = attack.at_budgets(model, x, torch.full((4,), r), seeds=seeds)
        assert single.adversarial.shape == (1, 4, *SHAPE) and single.sweep_name == "epsilon per example"
        assert torch.equal(single.adversarial[0], sweep.adversarial[j])
        assert torch.equal(single.objective[0], sweep.objective[j])
        assert torch.equal(single.iterations[0], sweep.iterations[j])
    mixed = [0.1, 1.0, 0.5, 0.1]
    result = attack.at_budgets(model, x, torch.tensor(mixed), seeds=seeds)
    index = torch.tensor([radii.index(r) for r in mixed])
    assert torch.equal(result.adversarial[0], sweep.adversarial[index, torch.arange(4)])
    assert torch.equal(result.objective[0], sweep.objective[index, torch.arange(4)])
    assert torch.equal(result.extras["run_epsilon"][0], torch.tensor(mixed))
    assert bool((result.l2[0] <= torch.tensor(mixed)).all())


def test_at_budgets_on_the_small_vae_holds_each_budget(small_vae, pairs16) -> None:  # type: ignore[no-untyped-def]
    xs = pairs16[0][:4]
    budgets = torch.tensor([0.0, 0.5, 1.0, 2.0])
    result = MaxDamage(steps=5).at_budgets(small_vae, xs, budgets)
    assert bool((result.l2[0] <= budgets).all()) and float(result.l2[0, 3]) > 1.0
    assert float(result.objective[0, 0]) == 0.0 and torch.equal(result.adversarial[0, 0], xs[0])
    assert bool((result.objective[0, 1:] > 0).all())
    torch.testing.assert_close(result.objective, damage_by_hand(small_vae, result.adversarial, xs))
    linf = MaxDamage(norm="linf", steps=5).at_budgets(small_vae, xs, torch.full((4,), 0.05))
    assert bool((linf.linf <= 0.05).all())


# ----------------------------------------------------------------------------- what is measured
class DetachedReconstruction(LinearAutoencoder):
    """Its deterministic reconstruction has no gradient (as JointVAE's argmax); only the
    relaxed one does, and it is off by a constant 0.3 so the two can be told apart."""

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return super().reconstruct(x)

    def relaxed_reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return super().reconstruct(x) + 0.3


@pytest.mark.parametrize("optimizer", ["pgd", "lbfgsb"])
def test_gradients_use_the_relaxed_and_damage_the_deterministic_reconstruction(optimizer: str) -> None:
    base = linear_autoencoder()
    model = DetachedReconstruction(base.encoder, base.decoder, base.bias, SHAPE)
    x = halves(2)
    result = make_attack("max-damage", epsilon=0.2, optimizer=optimizer, steps=20, max_iter=30)(model, x, x)
    deterministic = damage_by_hand(base, result.adversarial, x)
    torch.testing.assert_close(result.objective, deterministic, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        relaxed = (model.relaxed_reconstruct(result.adversarial[0]) - model.reconstruct(x)).flatten(1).norm(dim=1)
    assert bool((relaxed > deterministic[0] + 1.0).all())  # the relaxed damage would read otherwise
    assert 0 < float(result.objective.min()) and float(result.objective.max()) <= 0.2 * spectral_norm(base) * (1 + 1e-5)


def test_jointvae_damage_is_measured_on_the_deterministic_reconstruction(mnist_test) -> None:  # type: ignore[no-untyped-def]
    model = rv.load_model("jointvae", "mnist")
    xs = mnist_test.images[:2]
    result = make_attack("max-damage", epsilon=[0.5, 1.0], steps=5)(model, xs, xs)
    torch.testing.assert_close(result.objective, damage_by_hand(model, result.adversarial, xs), rtol=1e-5, atol=1e-5)
    assert float(result.objective.min()) > 0


def test_targets_are_ignored(small_vae, pairs16) -> None:  # type: ignore[no-untyped-def]
    xs, xt = pairs16[0][:3], pairs16[1][:3]
    attack = make_attack("max-damage", epsilon=[0.5, 1.0], steps=3)
    images = attack(small_vae, xs, xt)
    others = attack(small_vae, xs, pairs16[1][5:8])
    with torch.no_grad():
        codes = attack(small_vae, xs, small_vae.attack_code(xt))
    assert torch.equal(images.adversarial, others.adversarial) and torch.equal(images.adversarial, codes.adversarial)
    assert images.sweep_name == "epsilon" and images.sweep_values == [0.5, 1.0]


# ----------------------------------------------------------------------------- batches and seeds
@pytest.mark.parametrize(("optimizer", "norm"), [("pgd", "l2"), ("pgd", "linf"), ("lbfgsb", "l2"), ("lbfgsb", "linf")])
def test_exactly_batch_independent_on_a_row_wise_model(optimizer: str, norm: str) -> None:
    radii = [0.1, 0.5] if norm == "l2" else [0.01, 0.05]
    attack = MaxDamage(epsilon=radii, norm=norm, optimizer=optimizer, steps=8, max_iter=6, restarts=2)
    assert_exactly_batch_independent(attack, RowWise(linear_autoencoder()), random_images(4), random_images(4, 2),
                                     SEEDS[:4])


def test_batch_of_8_equals_8_single_calls_on_the_small_vae(small_vae, pairs16) -> None:  # type: ignore[no-untyped-def]
    """Bit for bit on the row-wise VAE; on the batched VAE (whose convolutions round differently
    per batch size; PGD carries the rounding along its path) the damage agrees within 2e-3
    relative (measured: at most 3e-4)."""
    attack = make_attack("max-damage", epsilon=[0.5, 2.0], steps=8, restarts=2)
    xs, xt = pairs16[0][:8], pairs16[1][:8]
    assert_exactly_batch_independent(attack, RowWise(small_vae), xs[:3], xt[:3], SEEDS[:3])
    batch = attack(small_vae, xs, xt, seeds=SEEDS)
    singles = [attack(small_vae, xs[i:i + 1], xt[i:i + 1], seeds=SEEDS[i:i + 1]) for i in range(8)]
    single_damage = torch.cat([s.objective for s in singles], dim=1)
    torch.testing.assert_close(single_damage, batch.objective, rtol=2e-3, atol=1e-5)
    assert bool((batch.iterations == 16).all())


def test_restarts_only_add_damage() -> None:
    """Restart 0 of a run with restarts = 3 is the run with restarts = 1 (the same first draw):
    more restarts never measure less damage."""
    model, x = linear_autoencoder(), random_images(4)
    one = make_attack("max-damage", epsilon=[0.5, 2.0], steps=3, rel_stepsize=0.05, monotone=False)(model, x, x)
    three = make_attack("max-damage", epsilon=[0.5, 2.0], steps=3, rel_stepsize=0.05, monotone=False,
                        restarts=3)(model, x, x)
    assert bool((three.objective >= one.objective).all())
    assert bool((three.iterations == 9).all())


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("params", "match"), [
    ({"norm": "l3"}, "norm must be one of"),
    ({"epsilon": -0.1}, "epsilon must be >= 0"),
    ({"epsilon": [0.5, -1.0]}, "epsilon must be >= 0"),
    ({"restarts": 0}, "restarts must be >= 1"),
    ({"steps": 0}, "steps must be >= 1"),
    ({"optimizer": "adam"}, "optimizer must be one of"),
    ({"solver": "jax"}, "solver must be one of"),
    ({"rel_stepsize": 0.0}, "rel_stepsize must be > 0"),
    ({"c": -1.0}, "c must be >= 0"),
    ({"memory": 0}, "memory must be >= 1"),
    ({"restarts": 1.5}, "whole number"),
])
def test_bad_hyperparameters_are_one_line_config_errors(params: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as error:
        make_attack("max-damage", **params)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("budgets", [torch.tensor([0.1, -0.2]), torch.tensor([0.1]), torch.tensor([0.1, math.nan]),
                                     torch.tensor([1, 2])])
def test_bad_budgets_are_config_errors(budgets: torch.Tensor) -> None:
    with pytest.raises(ConfigError, match="budgets"):
        MaxDamage(steps=2).at_budgets(linear_autoencoder(), halves(2), budgets)


def test_damage_curve_needs_radii() -> None:
    with pytest.raises(ConfigError, match="radii"):
        damage_curve(linear_autoencoder(), halves(2), [])
