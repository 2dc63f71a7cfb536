"""latent-lbfgsb against closed-form and independent solutions on a linear encoder.

With ``divergence="l2"`` and φ(x) = W·x + b, the attack minimises the strictly convex
quadratic  ‖W(x_s + d) + b − φ_t‖² + C‖d‖²  over the box 0 ≤ x_s + d ≤ 1, so its answer is
known: in closed form when the box is inactive, and from a bounded least-squares solve
(scipy.optimize.lsq_linear, certified by its KKT conditions) when it is active.

Precision. The attack evaluates its objective in float32, and SciPy's L-BFGS-B stops once f
stops decreasing at float32 resolution, which pins d only to ≈ sqrt(ε₃₂·f/λ), i.e. 1e-4–1e-3
relative. Measured over seeds 0–5 of each setup below with C ∈ {0.3, 1, 3}: worst relative
error of x* 1.7e-5 (box inactive) and 4.1e-5 (box active, seed 1), of d 6.4e-4 and 9.2e-4.
Tolerances: 1e-4 on x* and 3e-3 on d. A wrong C scaling, a wrong gradient or an ignored
bound gives errors of order 0.1–1.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse
import torch

from robust_vae.attacks import make_attack

from .toy import LinearEncoder

SHAPE = (1, 32, 32)
PIXELS = 32 * 32
LATENT = 6
N = 4
X_TOL = 1e-4   # relative error of x* = x_s + d
D_TOL = 3e-3   # relative error of d (float32-objective floor, see the module docstring)


def f32(t: torch.Tensor) -> torch.Tensor:
    """Round a float64 tensor to float32 and back: the values the attack really sees."""
    return t.float().double()


def linear_problem(seed: int, sources: str
                   ) -> tuple[LinearEncoder, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(model, W (D, n), b (D,), x_s (N, n), φ_t (N, D)), all exactly representable in float32.

    ``sources="interior"``: x_s uniform in [0.4, 0.6] (box inactive at the optimum);
    ``"mnist-like"``: 40 % of pixels exactly 0, 20 % exactly 1, the rest uniform (box active).
    """
    g = torch.Generator().manual_seed(seed)
    weight = f32(torch.randn(LATENT, PIXELS, generator=g, dtype=torch.float64) / math.sqrt(PIXELS))
    bias = f32(0.1 * torch.randn(LATENT, generator=g, dtype=torch.float64))
    u = torch.rand(N, PIXELS, generator=g, dtype=torch.float64)
    if sources == "interior":
        xs = 0.4 + 0.2 * u
    else:
        rest = torch.rand(N, PIXELS, generator=g, dtype=torch.float64)
        xs = torch.where(u < 0.4, 0.0, torch.where(u < 0.6, 1.0, rest))
    xs = f32(xs)
    scale = 0.5 if sources == "interior" else 1.0
    target = f32(xs @ weight.T + bias + scale * torch.randn(N, LATENT, generator=g, dtype=torch.float64))
    return LinearEncoder(weight.float(), bias.float(), SHAPE), weight, bias, xs, target


def attack(model: LinearEncoder, xs: torch.Tensor, target: torch.Tensor, c: list[float]):  # type: ignore[no-untyped-def]
    lbfgsb = make_attack("latent-lbfgsb", divergence="l2", c=c, max_iter=1000, pgtol=1e-10)
    return lbfgsb(model, xs.float().view(N, *SHAPE), target.float())


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("seed", [0, 1])
def test_box_inactive_matches_closed_form_for_every_c(seed: int) -> None:
    model, weight, bias, xs, target = linear_problem(seed, "interior")
    cs = [0.3, 1.0, 3.0]
    result = attack(model, xs, target, cs)
    assert result.adversarial.shape == (len(cs), N, *SHAPE)
    for name in ("l2", "linf", "latent_distance", "objective", "iterations"):
        assert getattr(result, name).shape == (len(cs), N), name
    assert result.sweep_name == "c" and result.sweep_values == cs
    residual = xs @ weight.T + bias - target                      # (N, D)
    for k, c in enumerate(cs):
        # d* = −(WᵀW + C·I)⁻¹ Wᵀ (W x_s + b − φ_t)
        hessian = weight.T @ weight + c * torch.eye(PIXELS, dtype=torch.float64)
        d_star = -torch.linalg.solve(hessian, weight.T @ residual.T).T
        x_star = xs + d_star
        assert 0.05 < float(x_star.min()) and float(x_star.max()) < 0.95, "box must be inactive"
        x = result.adversarial[k].flatten(1).double()
        assert ((x > 0) & (x < 1)).all(), "the attack's answer touches the box"
        for i in range(N):
            rel_x = relative(x[i].numpy(), x_star[i].numpy())
            rel_d = relative((x[i] - xs[i]).numpy(), d_star[i].numpy())
            assert rel_x <= X_TOL, f"C={c} example {i}: relative error of x* {rel_x:.2e}"
            assert rel_d <= D_TOL, f"C={c} example {i}: relative error of d {rel_d:.2e}"
        # the objective it reports is the objective at its answer
        d = x - xs
        value = ((x @ weight.T + bias - target) ** 2).sum(1) + c * (d ** 2).sum(1)
        torch.testing.assert_close(result.objective[k].double(), value, rtol=1e-5, atol=1e-6)
    # a larger C buys a smaller perturbation
    assert (result.l2[0] > result.l2[1]).all() and (result.l2[1] > result.l2[2]).all()


def bounded_reference(weight: np.ndarray, bias: np.ndarray, xs: np.ndarray, target: np.ndarray, c: float) -> np.ndarray:
    """x* by bounded least squares: [W; √C·I] d ≈ [φ_t − W x_s − b; 0], −x_s ≤ d ≤ 1 − x_s.

    Polished on the active set it finds, then certified by the KKT conditions.
    """
    n = xs.size
    stacked = scipy.sparse.vstack([scipy.sparse.csr_matrix(weight), math.sqrt(c) * scipy.sparse.identity(n)]).tocsr()
    rhs = np.concatenate([target - weight @ xs - bias, np.zeros(n)])
    solution = scipy.optimize.lsq_linear(stacked, rhs, bounds=(-xs, 1 - xs), method="trf",
                                         tol=1e-8, max_iter=1000)
    d = solution.x
    lower, upper = d <= -xs + 1e-7, d >= 1 - xs - 1e-7
    for _ in range(20):  # primal active-set refinement starting from lsq_linear's active set
        free = ~(lower | upper)
        d = np.where(lower, -xs, np.where(upper, 1 - xs, 0.0))
        # exact solve on the free coordinates: d_F = (W_Fᵀ W_F + C I)⁻¹ W_Fᵀ r'
        # = W_Fᵀ (W_F W_Fᵀ + C I)⁻¹ r', r' = φ_t − b − W x_s − W_A d_A (a D×D solve)
        wf = weight[:, free]
        r = target - bias - weight @ xs - weight[:, ~free] @ d[~free]
        d[free] = wf.T @ np.linalg.solve(wf @ wf.T + c * np.eye(len(r)), r)
        x = xs + d
        gradient = 2 * weight.T @ (weight @ x + bias - target) + 2 * c * d
        leave = free & ((x < 0) | (x > 1))
        release = (lower & (gradient < -1e-12)) | (upper & (gradient > 1e-12))
        if not leave.any() and not release.any():
            break
        lower, upper = (lower | (free & (x < 0))) & ~release, (upper | (free & (x > 1))) & ~release
    assert ((x[free] >= 0) & (x[free] <= 1)).all(), "reference: a free coordinate left the box"
    assert np.abs(gradient[free]).max() < 1e-9
    assert (gradient[lower] >= -1e-9).all() and (gradient[upper] <= 1e-9).all(), "reference is not a KKT point"
    return x


@pytest.mark.parametrize("seed", [0, 1])
def test_box_active_matches_bounded_least_squares(seed: int) -> None:
    model, weight, bias, xs, target = linear_problem(seed, "mnist-like")
    cs = [0.3, 3.0]
    result = attack(model, xs, target, cs)
    w, b = weight.numpy(), bias.numpy()
    for k, c in enumerate(cs):
        hessian = weight.T @ weight + c * torch.eye(PIXELS, dtype=torch.float64)
        free_x = xs - torch.linalg.solve(hessian, weight.T @ (xs @ weight.T + bias - target).T).T
        for i in range(N):
            xi = xs[i].numpy()
            outside = ((free_x[i] < 0) | (free_x[i] > 1)).sum()
            assert outside > 100, "the unconstrained optimum must leave the box"
            x_ref = bounded_reference(w, b, xi, target[i].numpy(), c)
            x = result.adversarial[k, i].flatten().double().numpy()
            rel_x = relative(x, x_ref)
            rel_d = relative(x - xi, x_ref - xi)
            assert rel_x <= X_TOL, f"C={c} example {i}: relative error of x* {rel_x:.2e}"
            assert rel_d <= D_TOL, f"C={c} example {i}: relative error of d {rel_d:.2e}"
            at_bound = (x_ref == 0) | (x_ref == 1)
            assert at_bound.sum() > 100
            # the attack puts (almost) every one of those coordinates exactly on its bound
            assert ((x == x_ref) | ~at_bound).sum() >= PIXELS - 3
            assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def solutions64(model: LinearEncoder, xs: torch.Tensor, target: torch.Tensor, c: list[float],
                solver: str) -> torch.Tensor:
    """The float64 solver's own solutions (K, N, n), before the attack rounds them to float32
    images (that rounding, ≤ 3e-8 per pixel, is ~1e-6 of ‖d‖ by itself)."""
    from robust_vae.attacks.base import as_attackable

    lbfgsb = make_attack("latent-lbfgsb", divergence="l2", c=c, max_iter=1000, pgtol=1e-10,
                         precision="float64", solver=solver)
    problem = lbfgsb._flatten_batch(as_attackable(model), torch.device("cpu"), xs.float().view(N, *SHAPE),
                                    target.float(), None, None)
    out = lbfgsb.run(model, problem)
    assert out.adversarial.dtype == torch.float64
    return out.adversarial.view(len(c), N, PIXELS)


@pytest.mark.parametrize("solver", ["scipy", "torch"])
def test_float64_reaches_the_closed_form_within_1e_6(solver: str) -> None:
    model, weight, bias, xs, target = linear_problem(1, "interior")
    cs = [0.3, 3.0]
    x = solutions64(model, xs, target, cs, solver)
    for k, c in enumerate(cs):
        hessian = weight.T @ weight + c * torch.eye(PIXELS, dtype=torch.float64)
        d_star = -torch.linalg.solve(hessian, weight.T @ (xs @ weight.T + bias - target).T).T
        for i in range(N):
            rel_d = relative((x[k, i] - xs[i]).numpy(), d_star[i].numpy())
            assert rel_d <= 1e-6, f"C={c} example {i}: relative error of d {rel_d:.2e}"


@pytest.mark.parametrize("solver", ["scipy", "torch"])
def test_float64_reaches_the_bounded_least_squares_solution_within_1e_6(solver: str) -> None:
    model, weight, bias, xs, target = linear_problem(1, "mnist-like")
    cs = [0.3, 3.0]
    x = solutions64(model, xs, target, cs, solver)
    for k, c in enumerate(cs):
        for i in range(N):
            xi = xs[i].numpy()
            x_ref = bounded_reference(weight.numpy(), bias.numpy(), xi, target[i].numpy(), c)
            rel_d = relative(x[k, i].numpy() - xi, x_ref - xi)
            assert rel_d <= 1e-6, f"C={c} example {i}: relative error of d {rel_d:.2e}"
            assert float(x[k, i].min()) >= 0.0 and float(x[k, i].max()) <= 1.0


@pytest.mark.parametrize("solver", ["scipy", "torch"])
@pytest.mark.parametrize("warm_start", ["descending", "ascending", True])
def test_warm_and_cold_start_reach_the_same_optimum(warm_start: str | bool, solver: str) -> None:
    """A convex problem has one optimum per C: the continuation must find it too, and cheaper
    (the torch solver also carries its limited memory from one C to the next)."""
    from robust_vae.attacks.base import as_attackable

    model, weight, bias, xs, target = linear_problem(0, "mnist-like")
    cs = [2.0 ** k for k in range(-4, 5)]
    outputs = {}
    for mode in ("none", warm_start):
        lbfgsb = make_attack("latent-lbfgsb", divergence="l2", c=cs, max_iter=1000, pgtol=1e-10,
                             precision="float64", warm_start=mode, solver=solver)
        problem = lbfgsb._flatten_batch(as_attackable(model), torch.device("cpu"), xs.float().view(N, *SHAPE),
                                        target.float(), None, None)
        outputs[mode] = lbfgsb.run(model, problem)
    cold, warm = outputs["none"], outputs[warm_start]
    d_cold = (cold.adversarial.view(len(cs), N, PIXELS) - xs).numpy()
    d_warm = (warm.adversarial.view(len(cs), N, PIXELS) - xs).numpy()
    for k in range(len(cs)):
        for i in range(N):
            assert relative(d_warm[k, i], d_cold[k, i]) <= 2e-6, (cs[k], i)
    assert cold.evaluations is not None and warm.evaluations is not None
    assert int(warm.evaluations.sum()) < int(cold.evaluations.sum())
