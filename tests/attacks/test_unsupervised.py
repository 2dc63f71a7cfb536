"""The unsupervised attacks (Kuzina et al. 2021, 2022): the power iteration against an SVD, the
attacks against closed forms on a linear encoder and against random perturbations of the same
norm on the small real VAE, budgets, batch independence and bad input."""

from __future__ import annotations

import pytest
import torch

import robust_vae as rv
from robust_vae.attacks import make_attack
from robust_vae.attacks.unsupervised import top_right_singular_vector
from robust_vae.core.errors import ConfigError
from robust_vae.models.base import LatentParams, categorical_kl_between, gaussian_kl_between

from .toy import SEEDS, LinearEncoder, RowWise, assert_exactly_batch_independent, one_at_a_time

SHAPE = (1, 8, 8)
SINGULAR_VALUES = torch.tensor([4.0, 2.0, 1.0, 0.5, 0.25])


def linear_encoder(nonlinear: bool = False, bias: float = 0.0) -> tuple[LinearEncoder, torch.Tensor]:
    """μ = A·vec(x) + b with A (5, 64) of singular values :data:`SINGULAR_VALUES` (a gap of 2
    between the top two); returns the encoder and A."""
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(5, 5, generator=g))
    v, _ = torch.linalg.qr(torch.randn(64, 5, generator=g))
    a = u @ torch.diag(SINGULAR_VALUES) @ v.T
    return LinearEncoder(a, torch.full((5,), bias), SHAPE, nonlinear=nonlinear), a


def interior_images(n: int, seed: int = 1) -> torch.Tensor:
    """(n, 1, 8, 8) in [0.4, 0.6]: small perturbations never meet the box."""
    return 0.4 + 0.2 * torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


def top_direction(a: torch.Tensor) -> torch.Tensor:
    """The top right-singular vector of ``a`` by torch.linalg.svd, (C·H·W,)."""
    return torch.linalg.svd(a.double(), full_matrices=False).Vh[0].float()


def cosines(d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """|cos| between every row of ``d`` (N, ...) and ``v`` (C·H·W,), (N,)."""
    flat = d.flatten(1)
    return (flat @ v).abs() / (flat.norm(dim=1) * v.norm())


def symmetric_kl_by_hand(p: LatentParams, q: LatentParams) -> torch.Tensor:
    """KL(p‖q) + KL(q‖p) from the models' one-way KLs (independent of the attacks' own code)."""
    kl = gaussian_kl_between(p.mean, p.logvar, q.mean, q.logvar) + gaussian_kl_between(q.mean, q.logvar, p.mean, p.logvar)
    if p.logits is not None and q.logits is not None:
        kl = kl + categorical_kl_between(p.logits, q.logits) + categorical_kl_between(q.logits, p.logits)
    return kl


def random_perturbations(x: torch.Tensor, epsilon: float, count: int, norm: str = "l2") -> torch.Tensor:
    """(count, N, ...) clip(x + ε·u), u random with ‖u‖₂ = 1 (L2) or a random sign pattern (L∞)."""
    g = torch.Generator().manual_seed(123)
    noise = torch.randn(count, *x.shape, generator=g)
    if norm == "l2":
        step = noise / noise.flatten(2).norm(dim=2)[:, :, None, None, None]
    else:
        step = noise.sign()
    return (x + epsilon * step).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- power iteration
def test_power_iteration_is_the_svd_of_a_linear_encoder() -> None:
    model, a = linear_encoder()
    x = interior_images(3)
    start = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    calls: list[int] = []
    v, sigma = top_right_singular_vector(lambda z: model.encode(z).mean, x, start, 20, on_step=calls.append)
    assert calls == list(range(1, 21))
    assert v.shape == x.shape
    torch.testing.assert_close(v.flatten(1).norm(dim=1), torch.ones(3))
    assert bool((cosines(v, top_direction(a)) > 0.999).all()), cosines(v, top_direction(a))
    torch.testing.assert_close(sigma, SINGULAR_VALUES[0].expand(3), rtol=1e-4, atol=0)


def test_power_iteration_matches_the_dense_jacobian_of_the_small_vae(small_vae, pairs16) -> None:  # type: ignore[no-untyped-def]
    """On the real encoder: σ₁ and v against the SVD of the dense Jacobian (built here only)."""
    x = pairs16[0][:1]
    dense = torch.autograd.functional.jacobian(lambda z: small_vae.encode(z[None]).mean[0], x[0]).flatten(1)
    svd = torch.linalg.svd(dense.double(), full_matrices=False)
    v, sigma = top_right_singular_vector(lambda z: small_vae.encode(z).mean, x, torch.randn(x.shape), 50)
    assert float(svd.S[0] / svd.S[1]) > 1.05  # a gap, so 50 iterations converge
    assert float(sigma[0]) == pytest.approx(float(svd.S[0]), rel=1e-3)
    assert float(cosines(v, svd.Vh[0].float())[0]) > 0.99


# ----------------------------------------------------------------------------- the attacks on a linear encoder
def test_unsupervised_l2_steps_along_the_top_singular_vector() -> None:
    model, a = linear_encoder()
    x = interior_images(4)
    epsilon = 0.05
    result = make_attack("unsupervised", epsilon=epsilon, power_iterations=20)(model, x, x)
    d = result.adversarial[0] - x
    assert bool((cosines(d, top_direction(a)) > 0.999).all())
    torch.testing.assert_close(result.l2[0], torch.full((4,), epsilon), rtol=1e-5, atol=0)
    torch.testing.assert_close(result.extras["singular_value"][0], SINGULAR_VALUES[0].expand(4), rtol=1e-4, atol=0)
    # the objective is the latent shift ‖μ(x*) − μ(x)‖₂ = ‖A d‖₂ ≈ σ₁·ε here
    torch.testing.assert_close(result.objective[0], (d.flatten(1) @ a.T).norm(dim=1), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(result.objective[0], torch.full((4,), 4.0 * epsilon), rtol=1e-3, atol=0)
    assert result.iterations.tolist() == [[20] * 4]


def test_unsupervised_linf_steps_along_the_sign_of_the_top_singular_vector() -> None:
    model, a = linear_encoder()
    x = interior_images(3)
    result = make_attack("unsupervised", epsilon=0.02, norm="linf")(model, x, x)
    d = (result.adversarial[0] - x).flatten(1)
    expected = 0.02 * top_direction(a).sign()
    for row in d:  # ±ε·sign(v): the same pattern up to the global sign s
        assert torch.allclose(row, expected, atol=1e-6) or torch.allclose(row, -expected, atol=1e-6)


def test_unsupervised_takes_the_sign_that_moves_the_code_further() -> None:
    """tanh(A x + b) with b ≠ 0 is not odd: +v and −v move the code by different amounts, and
    the attack keeps the larger one (measured here by hand)."""
    model, _ = linear_encoder(nonlinear=True, bias=0.8)
    x = interior_images(8, seed=3)
    result = make_attack("unsupervised", epsilon=0.3)(model, x, x, seeds=SEEDS)
    chosen = result.adversarial[0]
    other = x - (chosen - x)  # the reflected step; interior, so no clipping
    assert float(other.min()) >= 0.0 and float(other.max()) <= 1.0
    with torch.no_grad():
        clean = model.encode(x).mean
        shift_chosen = (model.encode(chosen).mean - clean).norm(dim=1)
        shift_other = (model.encode(other).mean - clean).norm(dim=1)
    assert bool((shift_chosen >= shift_other).all())
    assert float((shift_chosen - shift_other).max()) > 1e-3  # the choice mattered
    torch.testing.assert_close(result.objective[0], shift_chosen)


def test_kl_attack_reaches_the_closed_form_maximum_on_a_linear_encoder() -> None:
    """With logvar = 0 the symmetric KL is ‖A d‖₂², so its maximum over ‖d‖₂ ≤ ε is σ₁²ε², at
    d = ±ε·v₁."""
    model, a = linear_encoder()
    x = interior_images(3)
    epsilon = 0.05
    result = make_attack("unsupervised-kl", epsilon=epsilon, steps=40, lr=0.05)(model, x, x)
    d = result.adversarial[0] - x
    closed_form = float(SINGULAR_VALUES[0] ** 2) * epsilon ** 2
    torch.testing.assert_close(result.objective[0], (d.flatten(1) @ a.T).pow(2).sum(dim=1), rtol=1e-4, atol=1e-7)
    assert bool((result.objective[0] >= 0.999 * closed_form).all()), result.objective
    assert bool((result.objective[0] <= closed_form * (1 + 1e-4)).all())
    assert bool((cosines(d, top_direction(a)) > 0.99).all())


# ----------------------------------------------------------------------------- the attacks on the small VAE
def test_unsupervised_moves_the_code_further_than_random_directions(small_vae, pairs16) -> None:  # type: ignore[no-untyped-def]
    xs = pairs16[0][:8]
    epsilon = 1.0
    result = make_attack("unsupervised", epsilon=epsilon, power_iterations=20)(small_vae, xs, pairs16[1][:8])
    with torch.no_grad():
        clean = small_vae.encode(xs).mean
        shift = (small_vae.encode(result.adversarial[0]).mean - clean).norm(dim=1)
        randoms = random_perturbations(xs, epsilon, 16)
        random_shift = (small_vae.encode(randoms.flatten(0, 1)).mean.view(16, 8, -1) - clean).norm(dim=2)
    torch.testing.assert_close(result.objective[0], shift, rtol=1e-5, atol=1e-6)
    assert bool((shift >= random_shift.amax(dim=0)).all()), (shift, random_shift.amax(dim=0))
    assert float(shift.mean()) > 2 * float(random_shift.mean()), (shift.mean(), random_shift.mean())


def test_kl_attack_grows_the_symmetric_kl_and_beats_random_perturbations(small_vae, pairs16) -> None:  # type: ignore[no-untyped-def]
    xs, xt = pairs16[0][:6], pairs16[1][:6]
    epsilon = 1.0
    one = make_attack("unsupervised-kl", epsilon=epsilon, steps=1)(small_vae, xs, xt)
    many = make_attack("unsupervised-kl", epsilon=epsilon, steps=30)(small_vae, xs, xt)
    with torch.no_grad():
        clean = small_vae.encode(xs)
        by_hand = symmetric_kl_by_hand(clean, small_vae.encode(many.adversarial[0]))
        randoms = random_perturbations(xs, epsilon, 16)
        random_kl = torch.stack([symmetric_kl_by_hand(clean, small_vae.encode(r)) for r in randoms])
    torch.testing.assert_close(many.objective[0], by_hand, rtol=1e-4, atol=1e-5)
    assert bool((many.objective[0] >= one.objective[0]).all())  # the same start, the best iterate kept
    assert float(many.objective.mean()) > 1.5 * float(one.objective.mean()), (one.objective, many.objective)
    assert bool((many.objective[0] > random_kl.amax(dim=0)).all()), (many.objective, random_kl.amax(dim=0))


class JointLinearEncoder(LinearEncoder):
    """:class:`LinearEncoder` plus a categorical latent: logits = L·(vec(x) − ½), L (3, 64)
    (near uniform on the interior images, so the categorical is not saturated)."""

    def __init__(self, weight: torch.Tensor, logit_weight: torch.Tensor) -> None:
        super().__init__(weight, torch.zeros(weight.shape[0]), SHAPE)
        self.logit_weight = torch.nn.Parameter(logit_weight.clone())

    def encode(self, x: torch.Tensor) -> LatentParams:
        params = super().encode(x)
        return LatentParams(params.mean, params.logvar, (x.flatten(1) - 0.5) @ self.logit_weight.T)

    def attack_code(self, x: torch.Tensor) -> torch.Tensor:
        params = self.encode(x)
        assert params.logits is not None
        return torch.cat([params.mean, params.logits], dim=1)


def test_categorical_part_counts_in_the_kl_and_not_in_the_direction() -> None:
    """A JointVAE-style toy whose logits move strongly (L has singular values 10, above
    σ₁(A) = 4): the KL attack's objective includes the categorical symmetric KL, and the
    singular direction is the one of J_μ = A alone."""
    _, a = linear_encoder()
    logit_weight = 10.0 * torch.linalg.qr(torch.randn(64, 3, generator=torch.Generator().manual_seed(5)))[0].T
    model = JointLinearEncoder(a, logit_weight)
    x = interior_images(3)
    result = make_attack("unsupervised-kl", epsilon=0.05, steps=20, lr=0.01)(model, x, x)
    with torch.no_grad():
        clean, attacked = model.encode(x), model.encode(result.adversarial[0])
    assert clean.logits is not None and attacked.logits is not None
    categorical = categorical_kl_between(clean.logits, attacked.logits) + categorical_kl_between(attacked.logits, clean.logits)
    assert float(categorical.min()) > 0.01, categorical
    torch.testing.assert_close(result.objective[0], symmetric_kl_by_hand(clean, attacked), rtol=1e-4, atol=1e-6)
    unsupervised = make_attack("unsupervised", epsilon=0.05)(model, x, x)
    torch.testing.assert_close(unsupervised.extras["singular_value"][0], SINGULAR_VALUES[0].expand(3), rtol=1e-4, atol=0)
    assert bool((cosines(unsupervised.adversarial[0] - x, top_direction(a)) > 0.999).all())


def test_jointvae_kl_objective_and_mean_jacobian(mnist_test) -> None:  # type: ignore[no-untyped-def]
    """The shipped JointVAE: the objective is the full symmetric KL (Gaussian + categorical) of
    the returned x*, and σ₁ the one of the Jacobian of the Gaussian mean (D columns)."""
    model = rv.load_model("jointvae", "mnist")
    xs = mnist_test.images[:3]
    result = make_attack("unsupervised-kl", epsilon=1.0, steps=5)(model, xs, xs)
    with torch.no_grad():
        clean, attacked = model.encode(xs), model.encode(result.adversarial[0])
    assert clean.logits is not None
    torch.testing.assert_close(result.objective[0], symmetric_kl_by_hand(clean, attacked), rtol=1e-4, atol=1e-5)
    unsupervised = make_attack("unsupervised", epsilon=1.0, power_iterations=60)(model, xs[:1], xs[:1])
    dense = torch.autograd.functional.jacobian(lambda z: model.encode(z[None]).mean[0], xs[0]).flatten(1)
    top = float(torch.linalg.svdvals(dense.double())[0])
    assert float(unsupervised.extras["singular_value"][0, 0]) == pytest.approx(top, rel=1e-3)


def test_targets_are_ignored(small_vae, pairs16) -> None:  # type: ignore[no-untyped-def]
    xs, xt = pairs16[0][:3], pairs16[1][:3]
    for attack in (make_attack("unsupervised", power_iterations=5), make_attack("unsupervised-kl", steps=3)):
        images = attack(small_vae, xs, xt)
        others = attack(small_vae, xs, pairs16[1][5:8])
        with torch.no_grad():
            codes = attack(small_vae, xs, small_vae.attack_code(xt))
        assert torch.equal(images.adversarial, others.adversarial), attack.name
        assert torch.equal(images.adversarial, codes.adversarial), attack.name


# ----------------------------------------------------------------------------- budgets and box
@pytest.mark.parametrize(("name", "norm", "epsilons", "params"), [
    ("unsupervised", "l2", [0.5, 1.5], {"power_iterations": 5}),
    ("unsupervised", "linf", [0.05, 0.1], {"power_iterations": 5}),
    ("unsupervised-kl", "l2", [0.5, 1.5], {"steps": 5}),
    ("unsupervised-kl", "linf", [0.05, 0.1], {"steps": 5}),
])
def test_budgets_and_box_hold_exactly_for_every_epsilon_of_the_sweep(name, norm, epsilons, params, small_vae,  # type: ignore[no-untyped-def]
                                                                     pairs16) -> None:
    xs, xt = pairs16[0][:4], pairs16[1][:4]
    attack = make_attack(name, epsilon=epsilons, norm=norm, **params)
    assert attack.budget_norm == norm
    result = attack(small_vae, xs, xt)
    adv = result.adversarial
    assert adv.shape == (2, 4, 1, 32, 32) and result.sweep_values == epsilons and result.sweep_name == "epsilon"
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    d = adv - xs
    eps = torch.tensor(epsilons, dtype=torch.float32)
    distance = d.flatten(2).norm(dim=2) if norm == "l2" else d.flatten(2).abs().amax(dim=2)
    assert bool((distance <= eps[:, None]).all()), distance
    assert bool((distance > 0.5 * eps[:, None]).all()), distance  # the budget is used
    assert torch.equal(result.l2, d.flatten(2).norm(dim=2)) and torch.equal(result.linf, d.flatten(2).abs().amax(dim=2))
    assert result.objective.shape == (2, 4) and bool((result.objective > 0).all())
    if name == "unsupervised":  # one direction per example, shared by the whole sweep
        assert torch.equal(result.extras["singular_value"][0], result.extras["singular_value"][1])


def test_zero_budget_leaves_the_sources_unchanged(small_vae, pairs16) -> None:  # type: ignore[no-untyped-def]
    xs = pairs16[0][:2]
    for attack in (make_attack("unsupervised", epsilon=0.0, power_iterations=3),
                   make_attack("unsupervised-kl", epsilon=0.0, steps=2)):
        result = attack(small_vae, xs, xs)
        assert torch.equal(result.adversarial[0], xs), attack.name


# ----------------------------------------------------------------------------- batch independence
@pytest.mark.parametrize("build", [
    pytest.param(lambda: make_attack("unsupervised", epsilon=[0.5, 1.0], power_iterations=5), id="unsupervised"),
    pytest.param(lambda: make_attack("unsupervised-kl", epsilon=[0.5, 1.0], steps=5), id="unsupervised-kl"),
])
def test_batch_independence(build, small_vae, pairs16) -> None:  # type: ignore[no-untyped-def]
    attack = build()
    xs, xt = pairs16[0][:4], pairs16[1][:4]
    assert_exactly_batch_independent(attack, RowWise(small_vae), xs, xt, SEEDS[:4])
    batch = attack(small_vae, xs, xt, seeds=SEEDS[:4])  # the batched conv: within rounding
    single, _ = one_at_a_time(attack, small_vae, xs, xt, SEEDS[:4])
    gap = float((single - batch.adversarial).abs().max())
    assert gap <= 1e-4, f"batched and single adversarials differ by {gap:.2e}"
    other = attack(small_vae, xs, xt, seeds=SEEDS[:4] + 1)  # the seeds matter
    assert not torch.equal(other.adversarial, batch.adversarial)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("name", "params", "message"), [
    ("unsupervised", {"norm": "l3"}, "norm must be one of 'linf', 'l2'"),
    ("unsupervised", {"epsilon": -1.0}, "epsilon must be >= 0"),
    ("unsupervised", {"epsilon": [0.5, -0.1]}, "epsilon must be >= 0"),
    ("unsupervised", {"power_iterations": 0}, "power_iterations must be >= 1"),
    ("unsupervised", {"power_iterations": 2.5}, "power_iterations must be a whole number"),
    ("unsupervised-kl", {"norm": "l3"}, "norm must be one of 'linf', 'l2'"),
    ("unsupervised-kl", {"epsilon": -0.5}, "epsilon must be >= 0"),
    ("unsupervised-kl", {"steps": 0}, "steps must be >= 1"),
    ("unsupervised-kl", {"lr": 0.0}, "lr must be > 0"),
    ("unsupervised-kl", {"lr": [0.1, 0.2]}, "lr takes one value"),
])
def test_bad_hyperparameters_are_one_line_config_errors(name: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        make_attack(name, **params)
    assert "\n" not in str(error.value)


def test_the_symmetric_kl_has_one_implementation() -> None:
    """evaluation.attack_metrics reports the KL the attack maximises, not a copy of it."""
    from robust_vae.attacks import objectives
    from robust_vae.evaluation import attack_metrics

    assert attack_metrics.posterior_symmetric_kl is objectives.posterior_symmetric_kl
    assert attack_metrics.gaussian_symmetric_kl is objectives.gaussian_symmetric_kl
    assert attack_metrics.categorical_symmetric_kl is objectives.categorical_symmetric_kl
