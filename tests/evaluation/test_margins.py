"""r-robustness probabilities, margins and Camuto et al.'s lower bound, against closed forms.

The reference model is linear-Gaussian: μ(x) = A·vec(x) + b, constant σ, decoder g(z) = W z
with orthonormal columns, so ‖f(x*) − f′(x)‖² / (2s²) is non-central χ²_D with
λ = ‖A(x* − x)‖² / (2s²) (isotropic σ = s): every probability and the true margin are known.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import optimize, stats
from torch import nn

from robust_vae.attacks.base import AttackResult
from robust_vae.core.errors import ConfigError
from robust_vae.evaluation.margins import (
    bootstrap_interval,
    camuto_margin_bound,
    encoder_sensitivity,
    r_robustness_margin,
    robustness_probability,
)
from robust_vae.models.base import LatentParams

SHAPE = (1, 4, 4)
PIXELS = 16
LATENT = 3
SAMPLES = 400  # posterior draws per side in the margin tests (160,000 pairs)
MAX_DAMAGE = Path(__file__).resolve().parents[2] / "robust_vae" / "attacks" / "max_damage.py"


class LinearGaussianVAE(nn.Module):
    """μ = A·vec(x) + b, logvar constant (``log_std`` per dimension), decoder W z (+ V·onehot).

    ``logits``: None (no categorical), a fixed (K,) vector (the category distribution does not
    depend on x) or a (K, PIXELS) matrix L (logits = L·vec(x)). float64 throughout.
    """

    def __init__(self, a: torch.Tensor, bias: torch.Tensor, log_std: torch.Tensor, w: torch.Tensor,
                 logits: torch.Tensor | None = None, v: torch.Tensor | None = None) -> None:
        super().__init__()
        self.a = nn.Parameter(a.double())
        self.bias = nn.Parameter(bias.double())
        self.log_std = nn.Parameter(log_std.double())
        self.w = nn.Parameter(w.double())
        self.logits = None if logits is None else nn.Parameter(logits.double())
        self.v = None if v is None else nn.Parameter(v.double())

    def encode(self, x: torch.Tensor) -> LatentParams:
        flat = x.flatten(1)
        mean = flat @ self.a.T + self.bias
        logvar = (2 * self.log_std).expand_as(mean)
        logits = None
        if self.logits is not None:
            logits = flat @ self.logits.T if self.logits.dim() == 2 else self.logits.expand(x.shape[0], -1)
        return LatentParams(mean, logvar, logits)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = z[:, :LATENT] @ self.w.T
        if self.v is not None:
            out = out + z[:, LATENT:] @ self.v.T
        return out.view(-1, *SHAPE)

    def deterministic_code(self, params: LatentParams) -> torch.Tensor:
        if params.logits is None:
            return params.mean
        k = params.logits.shape[-1]
        return torch.cat([params.mean, F.one_hot(params.logits.argmax(-1), k).to(params.mean)], dim=-1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.deterministic_code(self.encode(x)))


def orthonormal(rows: int, cols: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def linear_model(scale: float = 8.0, std: float = 0.5, categories: int = 0) -> LinearGaussianVAE:
    g = torch.Generator().manual_seed(3)
    a = scale * torch.randn(LATENT, PIXELS, generator=g, dtype=torch.float64) / math.sqrt(PIXELS)
    logits = v = None
    if categories:
        logits = torch.randn(categories, generator=g, dtype=torch.float64)
        v = torch.zeros(PIXELS, categories, dtype=torch.float64)  # the category changes nothing
    return LinearGaussianVAE(a, torch.zeros(LATENT), torch.full((LATENT,), math.log(std)),
                             orthonormal(PIXELS, LATENT, 4), logits, v)


def images(n: int, seed: int = 0, spread: float = 0.05) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.5 + spread * torch.randn(n, *SHAPE, generator=g, dtype=torch.float64)).clamp(0, 1)


def top_direction(a: torch.Tensor) -> torch.Tensor:
    """The top right-singular vector of A, as an image (C, H, W)."""
    return torch.linalg.svd(a.detach())[2][0].view(SHAPE)


class DirectionAttack:
    """Stand-in for ``MaxDamage.at_budgets``: x* = clip(x + budget·direction) (L2 norm ≤ budget)."""

    def __init__(self, direction: torch.Tensor) -> None:
        self.direction = direction / direction.norm()
        self.calls: list[torch.Tensor] = []

    def at_budgets(self, model: nn.Module, sources: torch.Tensor, budgets: torch.Tensor, *,
                   seeds: torch.Tensor | None = None) -> AttackResult:
        self.calls.append(budgets.detach().cpu().clone())
        adversarial = (sources + budgets.view(-1, 1, 1, 1) * self.direction.to(sources)).clamp(0, 1)
        zeros = torch.zeros(1, sources.shape[0])
        diff = (adversarial - sources).flatten(1)
        return AttackResult(adversarial=adversarial.unsqueeze(0), l2=diff.norm(dim=1)[None], linf=diff.abs().amax(1)[None],
                            latent_distance=zeros, objective=zeros, iterations=zeros.long(), sweep_name="epsilon",
                            sweep_values=[math.nan], attack="direction")

    def __repr__(self) -> str:
        return "DirectionAttack()"


def clean_probability(r: float, std: float) -> float:
    """P(‖f(x) − f′(x)‖ ≤ r) for the linear model: χ²_D of ‖Δ‖²/(2s²)."""
    return float(stats.chi2.cdf(r ** 2 / (2 * std ** 2), LATENT))


def true_margin(model: LinearGaussianVAE, r: float, std: float) -> float:
    """The exact margin of the isotropic linear model: P depends on ‖A d‖ only, worst along v₁."""
    threshold = r ** 2 / (2 * std ** 2)
    lam = optimize.brentq(lambda lam: stats.ncx2.cdf(threshold, LATENT, lam) - 0.5, 1e-9, 1e4)
    sigma_1 = float(torch.linalg.matrix_norm(model.a.detach(), ord=2))
    return std * math.sqrt(2 * lam) / sigma_1


def probability_slope(model: LinearGaussianVAE, r: float, std: float, budget: float) -> float:
    """|dP/dδ| along the worst direction at ``budget`` (central difference of the closed form)."""
    sigma_1 = float(torch.linalg.matrix_norm(model.a.detach(), ord=2))

    def p(delta: float) -> float:
        return float(stats.ncx2.cdf(r ** 2 / (2 * std ** 2), LATENT, (delta * sigma_1) ** 2 / (2 * std ** 2)))

    h = 1e-4 * budget
    return abs(p(budget + h) - p(budget - h)) / (2 * h)


# ----- (2) the probability against closed forms -----
@pytest.mark.parametrize("reference", ["sample", "mean"])
def test_probability_matches_noncentral_chi2(reference: str) -> None:
    std, r, samples = 0.5, 1.5, 600
    model = linear_model(std=std)
    x = images(4)
    shifts = torch.tensor([0.0, 0.05, 0.1, 0.2], dtype=torch.float64)
    x_star = x + shifts.view(-1, 1, 1, 1) * top_direction(model.a)
    estimate = robustness_probability(model, x, x_star, r, samples=samples, reference=reference)
    with torch.no_grad():
        moved = (model.encode(x_star).mean - model.encode(x).mean).pow(2).sum(1).numpy()
    variance = 2 * std ** 2 if reference == "sample" else std ** 2  # of each coordinate of z* − z (or of z* − μ)
    exact = stats.ncx2.cdf(r ** 2 / variance, LATENT, np.maximum(moved / variance, 1e-12))
    tolerance = 5 * np.sqrt(2 * exact * (1 - exact) / samples) + 1e-3
    assert estimate.dtype == torch.float64 and estimate.shape == (4,)
    assert np.all(np.abs(estimate.numpy() - exact) <= tolerance), (estimate.numpy(), exact)
    assert exact[0] - exact[-1] > 0.3  # the shifts matter: the comparison is not trivially flat


def test_categorical_probability_is_the_collision_probability() -> None:
    """Decoder = the one-hot only: ‖f(x*) − f′(x)‖ is 0 when the categories agree, √2 else, so
    P(≤ 1) = Σ_k π_k(x) π_k(x*)."""
    k, samples = 4, 500
    g = torch.Generator().manual_seed(9)
    logits = 3 * torch.randn(k, PIXELS, generator=g, dtype=torch.float64)
    model = LinearGaussianVAE(torch.zeros(LATENT, PIXELS), torch.zeros(LATENT), torch.zeros(LATENT),
                              torch.zeros(PIXELS, LATENT), logits, torch.eye(PIXELS, k, dtype=torch.float64))
    x, x_star = images(3, seed=1, spread=0.3), images(3, seed=2, spread=0.3)
    estimate = robustness_probability(model, x, x_star, 1.0, samples=samples).numpy()
    with torch.no_grad():
        exact = (F.softmax(model.encode(x).logits, -1) * F.softmax(model.encode(x_star).logits, -1)).sum(1).numpy()
    assert np.all(np.abs(estimate - exact) <= 5 * np.sqrt(2 * exact * (1 - exact) / samples) + 1e-3), (estimate, exact)


# ----- the bound's constants against dense Jacobians -----
def test_encoder_constants_match_dense_jacobians() -> None:
    k = 5
    g = torch.Generator().manual_seed(11)
    a = torch.randn(LATENT, PIXELS, generator=g, dtype=torch.float64)
    log_std = torch.tensor([-1.0, 0.0, 0.5], dtype=torch.float64)
    logits = torch.randn(k, PIXELS, generator=g, dtype=torch.float64)
    model = LinearGaussianVAE(a, torch.zeros(LATENT), log_std, orthonormal(PIXELS, LATENT, 0), logits,
                              torch.zeros(PIXELS, k))
    x = images(2, seed=5, spread=0.2)
    sigma = log_std.exp()
    expected_gauss = {
        "paper": torch.linalg.matrix_norm(a, "fro") / sigma.min(),
        "spectral": torch.linalg.matrix_norm(a, 2) / sigma.min(),
        "whitened": torch.linalg.matrix_norm(a / sigma[:, None], 2),
    }
    for variant, expected in expected_gauss.items():
        constants = encoder_sensitivity(model, x, variant=variant, power_iterations=200)  # type: ignore[arg-type]
        torch.testing.assert_close(constants["gaussian"], expected.expand(2), rtol=1e-6, atol=0)
        torch.testing.assert_close(constants["sigma_min"], sigma.min().expand(2))
    for i in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: F.softmax(v.flatten() @ logits.T, -1), x[i])
        expected_cat = 0.5 * math.sqrt(k) * torch.linalg.matrix_norm(jac.reshape(k, PIXELS), 2)
        torch.testing.assert_close(constants["categorical"][i], expected_cat, rtol=1e-6, atol=0)


def test_bound_is_the_closed_form_on_the_linear_model() -> None:
    """With p̄ given: σ·Φ⁻¹(p̄)/‖A‖_F (paper) and σ·Φ⁻¹(p̄)/‖A‖₂ (spectral, whitened: σ isotropic)."""
    std = 0.5
    model = linear_model(std=std)
    x = images(3)
    p = torch.tensor([0.9, 0.6, 0.4], dtype=torch.float64)
    quantile = torch.special.ndtri(p)
    a = model.a.detach()
    paper = camuto_margin_bound(model, x, 1.0, clean_probability=p, samples=1000)
    torch.testing.assert_close(paper[:2], std * quantile[:2] / torch.linalg.matrix_norm(a, "fro"))
    assert paper[2] == 0  # p̄ ≤ 1/2: not robust even unperturbed
    for variant in ("spectral", "whitened"):
        bound = camuto_margin_bound(model, x, 1.0, clean_probability=p, samples=1000, variant=variant,  # type: ignore[arg-type]
                                    power_iterations=200)
        torch.testing.assert_close(bound[:2], std * quantile[:2] / torch.linalg.matrix_norm(a, 2), rtol=1e-6, atol=0)


def test_categorical_correction_lowers_the_bound() -> None:
    """Logits that move with x: the first-order bound solves Φ(t − aδ) − bδ = 1/2, below t/a."""
    k = 4
    g = torch.Generator().manual_seed(2)
    model = linear_model()
    model.logits = nn.Parameter(torch.randn(k, PIXELS, generator=g, dtype=torch.float64))
    model.v = nn.Parameter(torch.zeros(PIXELS, k, dtype=torch.float64))
    x = images(3)
    p = torch.full((3,), 0.9, dtype=torch.float64)
    fixed = camuto_margin_bound(model, x, 1.0, clean_probability=p, categorical="fixed")
    corrected = camuto_margin_bound(model, x, 1.0, clean_probability=p)
    constants = encoder_sensitivity(model, x)
    a, b = constants["gaussian"], constants["categorical"]
    t = torch.special.ndtri(p)
    torch.testing.assert_close(fixed, t / a)
    assert torch.all(corrected < fixed) and torch.all(corrected > 0)
    residual = torch.special.ndtr(t - a * corrected) - b * corrected
    torch.testing.assert_close(residual, torch.full_like(residual, 0.5), rtol=0, atol=1e-9)


# ----- (1) estimate ≥ bound where the bound's assumptions hold exactly -----
@pytest.mark.parametrize("categories", [0, 3])
def test_margin_is_above_the_bound_and_near_the_true_margin(categories: int) -> None:
    std = 0.5
    model = linear_model(scale=16.0, std=std, categories=categories)
    x = images(3)
    attack = DirectionAttack(top_direction(model.a))
    gaps = []
    for r in (1.2, 1.5, 2.0):
        truth = true_margin(model, r, std)
        max_budget = 3 * truth
        assert 0.5 + 0.2 + max_budget * float(attack.direction.abs().max()) < 1  # no clipping: the line is exact
        result = r_robustness_margin(model, x, r, attack=attack, samples=SAMPLES, max_budget=max_budget,
                                     bisection_steps=10)
        for variant in ("paper", "spectral", "whitened"):
            bound = camuto_margin_bound(model, x, r, samples=SAMPLES, variant=variant,  # type: ignore[arg-type]
                                        power_iterations=100)
            assert torch.all(bound > 0), (variant, bound)
            assert torch.all(result.margin >= bound), (variant, result.margin, bound)
        exact_bound = std * stats.norm.ppf(clean_probability(r, std)) / float(torch.linalg.matrix_norm(model.a.detach(), 2))
        assert torch.all(result.broken_at_max)
        assert torch.all(result.probability <= 0.5) and torch.all(result.clean_probability > 0.5)
        # the bisection lands on the analytic margin up to Monte-Carlo error: 4 standard errors of
        # the probability, turned into a budget error through the slope of P(δ) at the margin
        slack = 4 * math.sqrt(2 * 0.25 / SAMPLES) / probability_slope(model, r, std, truth)
        assert torch.all((result.margin - truth).abs() <= slack + result.resolution), (result.margin, truth, slack)
        assert exact_bound < truth
        gaps.append(truth / exact_bound)
    # the half-space worst case vs the real (ball) robust set: about 4.9×, 2.7×, 2.0× for r = 1.2, 1.5, 2
    assert all(1.0 < gap < 6.0 for gap in gaps) and gaps == sorted(gaps, reverse=True), gaps


def test_margin_zero_and_censored_cases() -> None:
    std = 0.5
    model = linear_model(std=std)
    x = images(2)
    attack = DirectionAttack(top_direction(model.a))
    tiny_r = r_robustness_margin(model, x, 0.3, attack=attack, samples=50, max_budget=0.1, bisection_steps=3)
    assert torch.all(tiny_r.margin == 0) and torch.all(tiny_r.broken_at_max)  # never r-robust: P ≈ 0
    assert not attack.calls  # no attack needed
    huge_r = r_robustness_margin(model, x, 1.8, attack=attack, samples=50, max_budget=1e-3, bisection_steps=3)
    assert torch.all(huge_r.margin == 1e-3) and not huge_r.broken_at_max.any()
    assert len(attack.calls) == 1  # only the max-budget call: nothing to bisect
    assert torch.all(huge_r.probability > 0.5)


# ----- (3) monotone in r -----
def test_margin_is_monotone_in_r() -> None:
    model = linear_model()
    x = images(4)
    attack = DirectionAttack(top_direction(model.a) + 0.3 * torch.randn(SHAPE, dtype=torch.float64))
    margins = torch.stack([r_robustness_margin(model, x, r, attack=attack, samples=40, max_budget=0.5,
                                               bisection_steps=6).margin for r in (1.2, 1.4, 1.7, 2.1)])
    assert torch.all(margins[1:] >= margins[:-1]), margins
    assert torch.all(margins[-1] > margins[0])


# ----- (4) batch independence -----
def test_results_do_not_depend_on_the_batch() -> None:
    model = linear_model(categories=3)
    x = images(5)
    seeds = torch.tensor([7, 3, 11, 5, 2])
    attack = DirectionAttack(top_direction(model.a))
    x_star = x + 0.03 * top_direction(model.a)
    whole = robustness_probability(model, x, x_star, 1.5, samples=30, seeds=seeds)
    singles = torch.cat([robustness_probability(model, x[i:i + 1], x_star[i:i + 1], 1.5, samples=30,
                                                seeds=seeds[i:i + 1]) for i in range(5)])
    chunked = robustness_probability(model, x, x_star, 1.5, samples=30, seeds=seeds, batch_size=2)
    order = torch.tensor([4, 0, 3, 1, 2])
    shuffled = robustness_probability(model, x[order], x_star[order], 1.5, samples=30, seeds=seeds[order])
    assert torch.equal(whole, singles) and torch.equal(whole, chunked) and torch.equal(shuffled, whole[order])
    assert not torch.equal(whole, robustness_probability(model, x, x_star, 1.5, samples=30, seeds=seeds + 1))

    margin = r_robustness_margin(model, x, 1.5, attack=attack, samples=30, max_budget=0.5, bisection_steps=5,
                                 seeds=seeds)
    alone = [r_robustness_margin(model, x[i:i + 1], 1.5, attack=attack, samples=30, max_budget=0.5,
                                 bisection_steps=5, seeds=seeds[i:i + 1]) for i in range(5)]
    assert torch.equal(margin.margin, torch.cat([m.margin for m in alone]))
    assert torch.equal(margin.probability, torch.cat([m.probability for m in alone]))
    chunked_margin = r_robustness_margin(model, x, 1.5, attack=attack, samples=30, max_budget=0.5,
                                         bisection_steps=5, seeds=seeds, batch_size=2)
    assert torch.equal(margin.margin, chunked_margin.margin)

    bound = camuto_margin_bound(model, x, 1.5, samples=30, seeds=seeds, variant="whitened")
    bound_alone = torch.cat([camuto_margin_bound(model, x[i:i + 1], 1.5, samples=30, seeds=seeds[i:i + 1],
                                                 variant="whitened") for i in range(5)])
    torch.testing.assert_close(bound, bound_alone, rtol=1e-12, atol=0)


# ----- (5) the real small VAE -----
def real_attack(x: torch.Tensor) -> object:
    """The real MaxDamage (few steps) once robust_vae/attacks/max_damage.py exists, else a stand-in."""
    if MAX_DAMAGE.is_file():
        from robust_vae.attacks.max_damage import MaxDamage

        return MaxDamage(epsilon=1.0, norm="l2", steps=3, restarts=1)
    return DirectionAttack(torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(0)))


def test_small_vae_end_to_end(small_vae: nn.Module, mnist_test) -> None:  # type: ignore[no-untyped-def]
    x = mnist_test.images[:4]
    seeds = torch.arange(4) + 100
    result = r_robustness_margin(small_vae, x, 5.0, attack=real_attack(x), samples=8, max_budget=4.0,  # type: ignore[arg-type]
                                 bisection_steps=3, seeds=seeds)
    assert result.margin.shape == (4,) and torch.all(torch.isfinite(result.margin)) and torch.all(result.margin >= 0)
    assert torch.all(result.margin <= 4.0) and result.settings()["pairs"] == 64
    for variant in ("paper", "whitened"):
        bound = camuto_margin_bound(small_vae, x, 5.0, samples=8, seeds=seeds, variant=variant,  # type: ignore[arg-type]
                                    power_iterations=5, clean_probability=result.clean_probability)
        assert bound.shape == (4,) and torch.all(torch.isfinite(bound)) and torch.all(bound >= 0)


# ----- bootstrap -----
def test_bootstrap_interval_matches_the_normal_interval() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(2.0, 3.0, size=400)
    low, high = bootstrap_interval(values, resamples=4000, seed=1)
    half = 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert abs(low - (values.mean() - half)) < 0.1 * half and abs(high - (values.mean() + half)) < 0.1 * half
    assert bootstrap_interval(values, resamples=4000, seed=1) == (low, high)
    narrow = bootstrap_interval(values, resamples=4000, seed=1, level=0.5)
    assert low < narrow[0] < narrow[1] < high
    med_low, med_high = bootstrap_interval(torch.tensor(values), statistic=np.median, resamples=500)
    assert med_low < np.median(values) < med_high
    assert bootstrap_interval([1.0, 1.0, 1.0]) == (1.0, 1.0)


@pytest.mark.parametrize("call", [
    lambda m, x, a: robustness_probability(m, x, x, 0.0, samples=4),
    lambda m, x, a: robustness_probability(m, x, x, 1.0, samples=0),
    lambda m, x, a: robustness_probability(m, x, x[:1], 1.0, samples=4),
    lambda m, x, a: robustness_probability(m, x, x, 1.0, samples=4, reference="median"),
    lambda m, x, a: robustness_probability(m, x, x, 1.0, samples=4, seeds=torch.zeros(3)),
    lambda m, x, a: robustness_probability(m, x * 2, x, 1.0, samples=4),
    lambda m, x, a: r_robustness_margin(m, x, 1.0, attack=object()),
    lambda m, x, a: r_robustness_margin(m, x, 1.0, attack=a, max_budget=-1.0),
    lambda m, x, a: r_robustness_margin(m, x, 1.0, attack=a, bisection_steps=-1),
    lambda m, x, a: camuto_margin_bound(m, x, 1.0, variant="dense"),
    lambda m, x, a: camuto_margin_bound(m, x, 1.0, categorical="ignore"),
    lambda m, x, a: camuto_margin_bound(m, x, 1.0, clean_probability=torch.ones(5)),
    lambda m, x, a: bootstrap_interval([]),
    lambda m, x, a: bootstrap_interval([1.0, math.nan]),
    lambda m, x, a: bootstrap_interval([1.0, 2.0], level=1.0),
], ids=lambda c: "")
def test_bad_input_raises_config_error(call) -> None:  # type: ignore[no-untyped-def]
    model = linear_model()
    x = images(2)
    with pytest.raises(ConfigError):
        call(model, x, DirectionAttack(top_direction(model.a)))
