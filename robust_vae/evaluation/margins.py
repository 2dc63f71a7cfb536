"""r-robustness margins (Camuto et al. 2021), their lower bound, and bootstrap intervals.

**Definitions.** The stochastic reconstruction of x is f(x) = g(c), g = ``model.decode`` (the
decoder's mean image: no pixel noise is drawn), c = z ⊕ onehot(k), z = μ(x) + σ(x)·ε with
ε ~ N(0, I), and, for a model with a categorical latent (``LatentParams.logits`` not None),
k ~ Cat(softmax ℓ(x)): the discrete limit of the Concrete latent the models are trained with,
in the one-hot form :meth:`deterministic_code` feeds the decoder. With f and f′ independent,

    P_r(x, x*) = P(‖f(x*) − f′(x)‖₂ ≤ r),

the model is r-robust at x for the perturbation d when P_r(x, x + d) > 1/2 (Camuto et al.'s
P(≤ r) > P(> r)), and the r-robustness margin is the smallest ‖d‖ that breaks it.
``reference="mean"`` replaces f′(x) by the deterministic reconstruction g(μ(x) ⊕ onehot argmax),
the ball centre of the first author's description (see below).

**Estimates.** :func:`robustness_probability` draws S posterior samples on each side and
counts all S² pairs (an unbiased two-sample U-statistic; its variance is at most about
2p(1 − p)/S). Each example's draws come from its own generator (seed + :data:`SAMPLING_SALT`),
so nothing depends on the batch. :func:`r_robustness_margin` bisects the budget δ of a
max-damage attack (``attack.at_budgets``) with the same draws at every δ (common random
numbers): the margin returned is the smallest budget found at which the attack's adversarial
brings the probability to ≤ 1/2, so up to Monte-Carlo error and the resolution
max_budget / 2^steps it *over*-estimates the true margin (a weaker attack, a larger margin).

**The bound: what the paper says.** Camuto, Willetts, Roberts, Holmes, Rainforth, "Towards a
theoretical understanding of the robustness of variational autoencoders", AISTATS 2021
(PMLR 130:3565–3573; arXiv 2007.07365). Of the paper itself only the abstract could be read
here; the statement below is the one its first author gives in "The Adversarial Robustness of
VAEs" (alexander-camuto.github.io, 2020-12-04; repository alexander-camuto/alexander-camuto.github.io,
``_posts/2020-12-4-The-Adversarial-Robustness-of-VAEs.md``):

    R^r_X(x) ≥ σ_min(x) · Φ⁻¹(p(‖Δ(x)‖₂ ≤ r)) / ‖J_μ(x)‖_F + O(ε),

with Δ(x) a stochastic reconstruction's deviation from g(μ(x)), p the probability *before*
perturbation, σ_min(x) = minᵢ σ(x)ᵢ, J_μ the encoder mean's Jacobian, ‖·‖_F the Frobenius
norm, Φ⁻¹ the standard normal quantile. Assumptions stated there: the perturbation moves only
the encoder mean, not σ; the decoder is the worst case (a Neyman–Pearson argument: a boundary
normal to the induced latent shift, along the direction of least variance); the O(ε) terms
vanish for small perturbations (first order); Gaussian latents only.

**The bound: what is implemented (our derivation, not the paper's text).**
Lemma (Neyman–Pearson for a Gaussian shift): if N(m, Σ)(A) = p then
N(m + δ, Σ)(A) ≥ Φ(Φ⁻¹(p) − ‖Σ^{-1/2}δ‖₂) for every set A. Assume σ(x + d) = σ(x) and, for now,
that the category distribution does not move. Conditioning on the clean draw f′(x) (for
``reference="sample"``), applying the lemma per category and using that p ↦ Φ(Φ⁻¹(p) − κ) is
convex (Jensen) gives, for *any* decoder g (so no decoder constant is needed):

    P_r(x, x + d) ≥ Φ(Φ⁻¹(p̄) − κ),   κ = ‖diag(1/σ(x)) (μ(x + d) − μ(x))‖₂,   p̄ = P_r(x, x).

So the model is r-robust whenever κ < Φ⁻¹(p̄) (never when p̄ ≤ 1/2: the bound is 0), and
κ ≤ a·‖d‖₂ + O(‖d‖²) with, from tightest to loosest (``variant``):

- ``"whitened"``: a = ‖diag(1/σ) J_μ‖₂;
- ``"spectral"``: a = ‖J_μ‖₂ / σ_min;
- ``"paper"`` (the statement above): a = ‖J_μ‖_F / σ_min.

The margin bound is Φ⁻¹(p̄) / a. It is exact, with no O(‖d‖²) term, when μ is affine and σ
constant. With a K-way categorical (``categorical="first-order"``), the posterior also moves
by TV(π(x), π(x + d)) ≤ ½‖π(x + d) − π(x)‖₁ ≤ b·‖d‖₂ + O(‖d‖²), b = ½√K‖J_π‖₂ (π = softmax ℓ),
so P_r ≥ Φ(Φ⁻¹(p̄) − a‖d‖) − b‖d‖; the bound is the largest ‖d‖ keeping that ≥ 1/2 (found by
bisection). ``categorical="fixed"`` assumes, as the paper does for σ, that the logits do not move.

Numerics: p̄ is the Monte-Carlo estimate (a point estimate, not a confidence limit), capped at
1 − 1/(2S) so that Φ⁻¹ stays finite; ‖J‖_F is exact (one backward pass per latent coordinate);
spectral norms come from power iteration with JVPs/VJPs (no dense Jacobian), which converges
from below, so an unconverged ``"spectral"``/``"whitened"`` bound errs high.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robust_vae.attacks.base import AttackResult, check_images, frozen, per_example_generators
from robust_vae.attacks.unsupervised import top_right_singular_vector
from robust_vae.core.devices import model_device, model_dtype
from robust_vae.core.errors import ConfigError
from robust_vae.models.base import LatentParams

__all__ = [
    "BudgetAttack", "MarginResult", "bootstrap_interval", "camuto_margin_bound", "encoder_sensitivity",
    "r_robustness_margin", "robustness_probability",
]

Reference = Literal["sample", "mean"]
BoundVariant = Literal["paper", "spectral", "whitened"]
CategoricalBound = Literal["first-order", "fixed"]

#: Added to an example's seed for its posterior draws, so they are not the attack's streams.
SAMPLING_SALT = 0x5A3D_71
#: Added to an example's seed for the power iteration's start vector.
POWER_SALT = 0x2B_C0DE
DEFAULT_SAMPLES = 64
DEFAULT_BATCH = 16
BOUND_BISECTION_STEPS = 64


class BudgetAttack(Protocol):
    """A max-damage attack at one budget per example (``MaxDamage.at_budgets``).

    sources (N, C, H, W) in [0, 1], budgets (N,) -> AttackResult with adversarial (1, N, C, H, W).
    """

    def at_budgets(self, model: nn.Module, sources: torch.Tensor, budgets: torch.Tensor, *,
                   seeds: torch.Tensor | None = None) -> AttackResult: ...


@dataclass
class MarginResult:
    """Per-example r-robustness margins (float64 / bool, CPU) and the settings that made them.

    margin (N,): the smallest budget found to break r-robustness; 0 where the clean input is not
    r-robust (clean_probability ≤ 1/2); ``max_budget`` where even that did not break it
    (``broken_at_max`` False: the margin is only known to exceed max_budget).
    broken_at_max (N,): r-robustness broken at some budget ≤ max_budget (True for margin 0).
    probability (N,): P_r at the margin's adversarial (at max_budget where not broken).
    clean_probability (N,): P_r(x, x). ``resolution``: the bisection's final interval width.
    """

    margin: torch.Tensor
    broken_at_max: torch.Tensor
    probability: torch.Tensor
    clean_probability: torch.Tensor
    r: float
    samples: int
    max_budget: float
    bisection_steps: int
    reference: str
    attack: str

    @property
    def resolution(self) -> float:
        return self.max_budget * 0.5 ** self.bisection_steps

    def settings(self) -> dict[str, Any]:
        """The settings as a JSON-ready mapping (run metadata)."""
        return {"r": self.r, "samples": self.samples, "pairs": self.samples ** 2 if self.reference == "sample"
                else self.samples, "max_budget": self.max_budget, "bisection_steps": self.bisection_steps,
                "resolution": self.resolution, "reference": self.reference, "attack": self.attack}


# ----- checks -----
def _check_choice(value: object, options: Any, what: str) -> None:
    allowed = get_args(options)
    if value not in allowed:
        raise ConfigError(f"{what} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _check_positive_int(value: object, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what} must be a whole number >= {minimum}, got {value!r}")
    return value


def _check_positive(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a finite number > 0, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ConfigError(f"{what} must be a finite number > 0, got {value!r}")
    return number


def _check_seeds(seeds: torch.Tensor | None, n: int) -> torch.Tensor:
    """(N,) int64 CPU seeds; default arange(N)."""
    if seeds is None:
        return torch.arange(n, dtype=torch.int64)
    if not isinstance(seeds, torch.Tensor) or tuple(seeds.shape) != (n,) or torch.is_floating_point(seeds):
        raise ConfigError(f"seeds must be an integer tensor of shape ({n},), got "
                          f"{tuple(seeds.shape) if isinstance(seeds, torch.Tensor) else type(seeds).__name__}")
    return seeds.to(torch.int64).cpu()


# ----- posterior sampling -----
@dataclass
class _Noise:
    """One side's posterior draws: gaussian (N, S, D); gumbel (N, S, K) or None."""

    gaussian: torch.Tensor
    gumbel: torch.Tensor | None

    def rows(self, index: torch.Tensor) -> _Noise:
        return _Noise(self.gaussian[index], None if self.gumbel is None else self.gumbel[index])


def _draw_noise(seeds: torch.Tensor, samples: int, latent_dim: int, categories: int,
                device: torch.device, dtype: torch.dtype) -> tuple[_Noise, _Noise]:
    """The clean and the perturbed side's draws; example i's depend only on seeds[i]."""
    sides: list[list[tuple[torch.Tensor, torch.Tensor | None]]] = [[], []]
    tiny = torch.finfo(torch.float32).tiny
    for g in per_example_generators(seeds + SAMPLING_SALT):
        for side in sides:
            gaussian = torch.randn(samples, latent_dim, generator=g)
            gumbel = None
            if categories:
                uniform = torch.rand(samples, categories, generator=g).clamp_(tiny, 1.0 - 1e-7)
                gumbel = -torch.log(-torch.log(uniform))
            side.append((gaussian, gumbel))

    def stack(side: list[tuple[torch.Tensor, torch.Tensor | None]]) -> _Noise:
        if not side:
            return _Noise(torch.zeros(0, samples, latent_dim, device=device, dtype=dtype),
                          torch.zeros(0, samples, categories, device=device, dtype=dtype) if categories else None)
        gaussian = torch.stack([s[0] for s in side]).to(device, dtype)
        gumbels = [s[1] for s in side if s[1] is not None]
        return _Noise(gaussian, torch.stack(gumbels).to(device, dtype) if categories else None)

    return stack(sides[0]), stack(sides[1])


def _sampled_codes(params: LatentParams, noise: _Noise) -> torch.Tensor:
    """Decoder inputs (N·S, D + K): μ + σ·ε ⊕ onehot(argmax(ℓ + Gumbel)) (a Cat(softmax ℓ) draw)."""
    std = torch.exp(0.5 * params.logvar)
    z = params.mean.unsqueeze(1) + std.unsqueeze(1) * noise.gaussian
    if params.logits is not None:
        assert noise.gumbel is not None
        k = params.logits.shape[-1]
        category = (params.logits.unsqueeze(1) + noise.gumbel).argmax(-1)
        z = torch.cat([z, F.one_hot(category, k).to(z.dtype)], dim=-1)
    return z.reshape(-1, z.shape[-1])


def _check_params(params: object, n: int) -> LatentParams:
    if not isinstance(params, tuple) or len(params) != 3:
        raise ConfigError(f"encode must return LatentParams(mean, logvar, logits), got {type(params).__name__}")
    mean, logvar, logits = params
    if not isinstance(mean, torch.Tensor) or mean.dim() != 2 or mean.shape[0] != n:
        raise ConfigError(f"encode's mean must be ({n}, D), got {getattr(mean, 'shape', type(mean).__name__)}")
    if not isinstance(logvar, torch.Tensor) or logvar.shape != mean.shape:
        raise ConfigError(f"encode's logvar must have the mean's shape {tuple(mean.shape)}")
    if logits is not None and (not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != n):
        raise ConfigError(f"encode's logits must be ({n}, K) or None")
    return LatentParams(mean, logvar, logits)


class _Sampler:
    """Reconstruction samples and pair counts for one chunk of examples (no autograd)."""

    def __init__(self, model: nn.Module, x: torch.Tensor, seeds: torch.Tensor, samples: int,
                 reference: str) -> None:
        self.model, self.samples, self.reference = model, samples, reference
        params = _check_params(model.encode(x), x.shape[0])  # type: ignore[operator]
        categories = 0 if params.logits is None else params.logits.shape[-1]
        self.clean_noise, self.perturbed_noise = _draw_noise(
            seeds, samples, params.mean.shape[-1], categories, x.device, params.mean.dtype)
        if reference == "mean":
            code = model.deterministic_code(params)  # type: ignore[operator]
            self.clean = self._decode(code).unsqueeze(1)  # (N, 1, P)
        else:
            self.clean = self._decode(_sampled_codes(params, self.clean_noise)).view(x.shape[0], samples, -1)

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model.decode(codes)  # type: ignore[operator]
        return out.flatten(1)

    def probability(self, x_star: torch.Tensor, rows: torch.Tensor, r: float) -> torch.Tensor:
        """P_r for the examples ``rows`` (M,) of the chunk, perturbed inputs (M, C, H, W) -> (M,) float64."""
        if rows.numel() == 0:
            return torch.zeros(0, dtype=torch.float64)
        params = _check_params(self.model.encode(x_star), x_star.shape[0])  # type: ignore[operator]
        recon = self._decode(_sampled_codes(params, self.perturbed_noise.rows(rows)))
        recon = recon.view(rows.numel(), self.samples, -1)
        distances = torch.cdist(recon.double(), self.clean[rows].double(),
                                compute_mode="donot_use_mm_for_euclid_dist")
        return (distances <= r).double().mean(dim=(1, 2)).cpu()


def _prepare(model: nn.Module, x: torch.Tensor, what: str = "images") -> torch.Tensor:
    for name in ("encode", "decode", "deterministic_code"):
        if not callable(getattr(model, name, None)):
            raise ConfigError(f"r-robustness needs a model with encode, decode and deterministic_code; "
                              f"{type(model).__name__} has no {name}")
    check_images(x, what, model)
    return x.to(model_device(model), model_dtype(model))


def robustness_probability(model: nn.Module, x: torch.Tensor, x_star: torch.Tensor, r: float, *,
                           samples: int = DEFAULT_SAMPLES, seeds: torch.Tensor | None = None,
                           reference: Reference = "sample", batch_size: int = DEFAULT_BATCH) -> torch.Tensor:
    """Monte-Carlo P(‖f(x*) − f′(x)‖₂ ≤ r) per example: x, x_star (N, C, H, W) in [0, 1] -> (N,) float64.

    ``samples`` posterior draws per side (all samples² pairs counted; with ``reference="mean"``,
    f′(x) is the deterministic reconstruction and there are ``samples`` draws); ``seeds`` (N,)
    int64 seed each example's draws (default arange(N)); ``batch_size`` examples per pass (the
    result does not depend on it).
    """
    r = _check_positive(r, "r")
    samples = _check_positive_int(samples, "samples")
    batch_size = _check_positive_int(batch_size, "batch_size")
    _check_choice(reference, Reference, "reference")
    x = _prepare(model, x)
    x_star = _prepare(model, x_star, "perturbed images")
    if x_star.shape != x.shape:
        raise ConfigError(f"x_star has shape {tuple(x_star.shape)} but x has {tuple(x.shape)}")
    seeds = _check_seeds(seeds, x.shape[0])
    parts = [torch.zeros(0, dtype=torch.float64)]
    with frozen(model), torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            chunk = slice(start, start + batch_size)
            sampler = _Sampler(model, x[chunk], seeds[chunk], samples, reference)
            rows = torch.arange(x[chunk].shape[0], device=x.device)
            parts.append(sampler.probability(x_star[chunk], rows, r))
    return torch.cat(parts)


# ----- the margin -----
def r_robustness_margin(model: nn.Module, x: torch.Tensor, r: float, *, attack: BudgetAttack,
                        samples: int = DEFAULT_SAMPLES, max_budget: float = 8.0, bisection_steps: int = 8,
                        seeds: torch.Tensor | None = None, reference: Reference = "sample",
                        batch_size: int = DEFAULT_BATCH) -> MarginResult:
    """The r-robustness margin of each example of ``x`` (N, C, H, W) in [0, 1] by bisection.

    Per example: P_r at x itself (≤ 1/2: margin 0); then at the attack's adversarial for budget
    max_budget (> 1/2: not broken, margin reported as max_budget); else ``bisection_steps``
    halvings of [0, max_budget], keeping the upper end (a budget that broke it). The budget is
    ‖d‖ in the attack's norm. The same posterior draws and the same attack seeds (``seeds``,
    default arange(N)) are used at every budget, so the margin is monotone in r. Cost: one
    attack call and 2·samples decodes per example and step.
    """
    r = _check_positive(r, "r")
    samples = _check_positive_int(samples, "samples")
    max_budget = _check_positive(max_budget, "max_budget")
    bisection_steps = _check_positive_int(bisection_steps, "bisection_steps", minimum=0)
    batch_size = _check_positive_int(batch_size, "batch_size")
    _check_choice(reference, Reference, "reference")
    if not callable(getattr(attack, "at_budgets", None)):
        raise ConfigError(f"the margin needs an attack with at_budgets(model, sources, budgets, seeds=...) "
                          f"(MaxDamage), got {type(attack).__name__}")
    x = _prepare(model, x)
    seeds = _check_seeds(seeds, x.shape[0])
    empty = torch.zeros(0, dtype=torch.float64)
    parts = [(empty, empty.bool(), empty, empty)]
    parts += [_margin_chunk(model, x[i:i + batch_size], seeds[i:i + batch_size], r, attack, samples,
                            max_budget, bisection_steps, reference)
              for i in range(0, x.shape[0], batch_size)]
    margin, broken, probability, clean = (torch.cat([part[j] for part in parts]) for j in range(4))
    return MarginResult(margin=margin, broken_at_max=broken, probability=probability, clean_probability=clean,
                        r=r, samples=samples, max_budget=max_budget, bisection_steps=bisection_steps,
                        reference=reference, attack=repr(attack))


def _margin_chunk(model: nn.Module, x: torch.Tensor, seeds: torch.Tensor, r: float, attack: BudgetAttack,
                  samples: int, max_budget: float, steps: int,
                  reference: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(margin, broken_at_max, probability, clean_probability), each (n,), for one chunk."""
    n = x.shape[0]
    everyone = torch.arange(n)
    with frozen(model), torch.no_grad():
        sampler = _Sampler(model, x, seeds, samples, reference)
        clean = sampler.probability(x, everyone.to(x.device), r)

    def probability_at(rows: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
        """P_r at the attack's adversarial of the examples ``rows`` (CPU) at ``budgets`` (float64)."""
        device_rows = rows.to(x.device)
        result = attack.at_budgets(model, x[device_rows], budgets.to(x.device, x.dtype), seeds=seeds[rows])
        adversarial = result.adversarial[0].to(x.device, x.dtype)
        with frozen(model), torch.no_grad():
            return sampler.probability(adversarial, device_rows, r)

    robust = clean > 0.5
    low = torch.zeros(n, dtype=torch.float64)
    high = torch.full((n,), max_budget, dtype=torch.float64)
    probability = clean.clone()
    rows = everyone[robust]
    at_max = probability_at(rows, high[rows]) if rows.numel() else torch.zeros(0, dtype=torch.float64)
    probability[rows] = at_max
    broken = ~robust
    broken[rows] = at_max <= 0.5
    searching = everyone[robust & broken]
    for _ in range(steps):
        if searching.numel() == 0:
            break
        middle = (low[searching] + high[searching]) / 2
        p = probability_at(searching, middle)
        hit = p <= 0.5
        high[searching[hit]] = middle[hit]
        probability[searching[hit]] = p[hit]
        low[searching[~hit]] = middle[~hit]
    margin = torch.where(robust, high, torch.zeros_like(high))
    return margin, broken, probability, clean


# ----- the bound -----
def _frobenius_norm(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """‖J_i‖_F per example of the row-wise ``fn`` (N, ...) -> (N, D): D backward passes, (N,)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = fn(x)
        if not out.requires_grad:
            return x.new_zeros(x.shape[0])
        total = x.new_zeros(x.shape[0])
        for i in range(out.shape[1]):
            (grad,) = torch.autograd.grad(out[:, i].sum(), x, retain_graph=i < out.shape[1] - 1, allow_unused=True)
            if grad is not None:
                total = total + grad.flatten(1).pow(2).sum(1)
    return total.sqrt().detach()


def _spectral_norm(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, seeds: torch.Tensor,
                   iterations: int) -> torch.Tensor:
    """‖J_i‖₂ per example of the row-wise ``fn`` by power iteration (JVP/VJP, seeded start), (N,)."""
    start = torch.stack([torch.randn(x.shape[1:], generator=g)
                         for g in per_example_generators(seeds + POWER_SALT)]).to(x)
    with torch.enable_grad():
        _, value = top_right_singular_vector(fn, x.detach(), start, iterations)
    return value.detach()


def encoder_sensitivity(model: nn.Module, x: torch.Tensor, *, variant: BoundVariant = "paper",
                        seeds: torch.Tensor | None = None, power_iterations: int = 30) -> dict[str, torch.Tensor]:
    """The encoder constants of the bound per example of ``x`` (N, C, H, W), float64 CPU (N,):

    ``gaussian``: a with κ ≤ a‖d‖ to first order (see the module docstring's ``variant``);
    ``sigma_min``: minᵢ σ(x)ᵢ; ``categorical``: b = ½√K‖J_π‖₂ (0 without a categorical).
    """
    _check_choice(variant, BoundVariant, "variant")
    power_iterations = _check_positive_int(power_iterations, "power_iterations")
    x = _prepare(model, x)
    seeds = _check_seeds(seeds, x.shape[0])
    with frozen(model):
        with torch.no_grad():
            params = _check_params(model.encode(x), x.shape[0])  # type: ignore[operator]
        std = torch.exp(0.5 * params.logvar)
        sigma_min = std.min(dim=1).values

        def mean(v: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = model.encode(v).mean  # type: ignore[operator]
            return out

        def whitened_mean(v: torch.Tensor) -> torch.Tensor:
            return mean(v) / std

        if variant == "paper":
            gaussian = _frobenius_norm(mean, x) / sigma_min
        elif variant == "spectral":
            gaussian = _spectral_norm(mean, x, seeds, power_iterations) / sigma_min
        else:
            gaussian = _spectral_norm(whitened_mean, x, seeds, power_iterations)
        categorical = torch.zeros_like(sigma_min)
        if params.logits is not None:
            def probabilities(v: torch.Tensor) -> torch.Tensor:
                logits = model.encode(v).logits  # type: ignore[operator]
                return F.softmax(logits, dim=-1)

            k = params.logits.shape[-1]
            categorical = 0.5 * math.sqrt(k) * _spectral_norm(probabilities, x, seeds + POWER_SALT, power_iterations)
    return {"gaussian": gaussian.double().cpu(), "sigma_min": sigma_min.double().cpu(),
            "categorical": categorical.double().cpu()}


def _largest_safe_budget(quantile: torch.Tensor, p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Largest δ with Φ(quantile − aδ) − bδ ≥ 1/2, elementwise (float64): bisection on a decreasing function."""
    with torch.no_grad():
        upper = torch.minimum(quantile / a, (p - 0.5) / b)  # at either end the left side is ≤ 1/2
        low = torch.zeros_like(upper)
        high = torch.where(torch.isfinite(upper), upper, torch.zeros_like(upper))
        for _ in range(BOUND_BISECTION_STEPS):
            middle = (low + high) / 2
            safe = torch.special.ndtr(quantile - a * middle) - b * middle >= 0.5
            low = torch.where(safe, middle, low)
            high = torch.where(safe, high, middle)
        exact = torch.where(b == 0, quantile / a, low)  # no categorical term: the bound in closed form
        return torch.where(torch.isfinite(upper), exact, upper)


def camuto_margin_bound(model: nn.Module, x: torch.Tensor, r: float, *, samples: int = DEFAULT_SAMPLES,
                        seeds: torch.Tensor | None = None, variant: BoundVariant = "paper",
                        categorical: CategoricalBound = "first-order", reference: Reference = "sample",
                        power_iterations: int = 30, clean_probability: torch.Tensor | None = None,
                        batch_size: int = DEFAULT_BATCH) -> torch.Tensor:
    """Lower bound on the r-robustness margin per example of ``x`` (N, C, H, W): (N,) float64 CPU.

    Φ⁻¹(p̄)/a for the chosen ``variant`` (``"paper"``: σ_min·Φ⁻¹(p̄)/‖J_μ‖_F, Camuto et al.'s
    statement), corrected for a categorical latent unless ``categorical="fixed"``; 0 where
    p̄ ≤ 1/2; inf where the encoder does not depend on x at all. First order in ‖d‖ and assumes
    σ(x + d) = σ(x) (module docstring). p̄ = P_r(x, x) from :func:`robustness_probability` with
    ``samples``/``seeds``/``reference``, or ``clean_probability`` (N,) when given (e.g. the
    margin's, to share its draws).
    """
    r = _check_positive(r, "r")
    samples = _check_positive_int(samples, "samples")
    batch_size = _check_positive_int(batch_size, "batch_size")
    _check_choice(categorical, CategoricalBound, "categorical")
    x = _prepare(model, x)
    n = x.shape[0]
    seeds = _check_seeds(seeds, n)
    if clean_probability is None:
        p = robustness_probability(model, x, x, r, samples=samples, seeds=seeds, reference=reference,
                                   batch_size=batch_size)
    else:
        if not isinstance(clean_probability, torch.Tensor) or tuple(clean_probability.shape) != (n,):
            raise ConfigError(f"clean_probability must be a ({n},) tensor")
        p = clean_probability.detach().double().cpu()
    constants = [encoder_sensitivity(model, x[i:i + batch_size], variant=variant, power_iterations=power_iterations,
                                     seeds=seeds[i:i + batch_size])
                 for i in range(0, n, batch_size)]
    a = torch.cat([c["gaussian"] for c in constants]) if constants else torch.zeros(0, dtype=torch.float64)
    b = torch.cat([c["categorical"] for c in constants]) if constants else torch.zeros(0, dtype=torch.float64)
    if categorical == "fixed":
        b = torch.zeros_like(b)
    p = p.clamp(max=1.0 - 1.0 / (2 * samples))
    quantile = torch.special.ndtri(p)
    bound = _largest_safe_budget(quantile, p, a, b)
    return torch.where(p > 0.5, bound, torch.zeros_like(bound))


# ----- intervals -----
def bootstrap_interval(values: np.ndarray | torch.Tensor | list[float], *,
                       statistic: Callable[..., Any] = np.mean, resamples: int = 2000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``statistic`` over ``values`` (N,) finite numbers.

    ``statistic`` is a NumPy reduction taking ``axis=`` (np.mean, np.median, ...); ``resamples``
    resamples of size N with replacement from ``np.random.default_rng(seed)``; returns the
    ((1 − level)/2, (1 + level)/2) quantiles of the resampled statistic. Use per class by
    passing that class's values.
    """
    array = values.detach().double().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ConfigError(f"bootstrap_interval needs a non-empty 1-D array of values, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ConfigError("bootstrap_interval: values contain NaN or inf; drop them first")
    resamples = _check_positive_int(resamples, "resamples")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ConfigError(f"level must be a number in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples, dtype=np.float64)
    chunk = max(1, 4_000_000 // array.size)  # resamples per block: bounded memory
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        stats[start:start + count] = statistic(array[rng.integers(0, array.size, size=(count, array.size))], axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)
