"""The vectorised torch L-BFGS-B (``solver="torch"``) against SciPy's L-BFGS-B.

1. Random strictly convex quadratics ½‖Ax‖² + ½ xᵀdiag(δ)x + cᵀx over boxes (with active
   bounds, infinite bounds and a nonconvex Rosenbrock case): same optimum as SciPy. On the
   quadratics the torch solver follows SciPy's iterates (measured: equal iteration and
   evaluation counts on all 8, objectives equal to 4e-16 relative); the test asks for the
   median relative difference ≤ 1e-12 and a worst case ≤ 1e-9 plus the KKT conditions.
2. The real latent objective KL(q(z|x*) ‖ q(z|x_t)) + C‖d‖² of the shipped JointVAE, 8
   examples, 15 iterations: objectives within 1e-3 relative of SciPy's on the median
   example (measured median |relative difference| 2e-6; the float32 objective makes the
   two runs drift apart slowly, more so over hundreds of iterations).
3. The closed-form and box-active optima of test_lbfgsb_analytic, with ``solver="torch"``.
4. Batch independence, bit for bit on a model that evaluates one row at a time, and at full
   length (200 iterations, n = 1024, m = 25) on a row-wise hard nonconvex objective: each
   problem solved alone, all together, and through fewer slots than problems.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch

from robust_vae.attacks import make_attack
from robust_vae.attacks.optim.torch_lbfgsb import (
    CONVERGED_FACTR,
    CONVERGED_PGTOL,
    MAX_ITER,
    TorchLBFGSBResult,
    TorchObjective,
    torch_lbfgsb,
)

from . import test_lbfgsb_analytic as analytic
from .toy import SEEDS, RowWise, assert_exactly_batch_independent


def quadratic(seed: int, batch: int, n: int, rank: int = 30):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, rank, n, generator=g, dtype=torch.float64) / n ** 0.5
    diag = 0.01 + 0.1 * torch.rand(batch, n, generator=g, dtype=torch.float64)
    c = 0.5 * torch.randn(batch, n, generator=g, dtype=torch.float64)
    x0 = torch.rand(batch, n, generator=g, dtype=torch.float64)

    def objective(rows: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ax = torch.bmm(a[rows], x.unsqueeze(2)).squeeze(2)
        value = 0.5 * (ax * ax).sum(1) + 0.5 * (diag[rows] * x * x).sum(1) + (c[rows] * x).sum(1)
        grad = torch.bmm(a[rows].transpose(1, 2), ax.unsqueeze(2)).squeeze(2) + diag[rows] * x + c[rows]
        return value, grad

    return objective, x0


def scipy_solve(objective, x0: np.ndarray, bounds, i: int, **options):  # type: ignore[no-untyped-def]
    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = objective(torch.tensor([i]), torch.from_numpy(x).unsqueeze(0))
        return float(value[0]), grad[0].numpy()

    return scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=options)


def relative(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    return (ours - theirs) / np.maximum(np.abs(theirs), 1e-12)


def test_convex_quadratics_match_scipy() -> None:
    batch, n = 8, 200
    objective, x0 = quadratic(0, batch, n)
    lower, upper = torch.zeros(batch, n, dtype=torch.float64), torch.ones(batch, n, dtype=torch.float64)
    # batch=3 < 8 problems: finished problems hand their rows to waiting ones
    result = torch_lbfgsb(objective, x0, lower, upper, memory=10, factr=10.0, pgtol=1e-8, max_iter=1000, batch=3)
    options = dict(maxcor=10, ftol=10 * np.finfo(float).eps, gtol=1e-8, maxiter=1000)
    theirs = np.array([scipy_solve(objective, x0[i].numpy(), [(0, 1)] * n, i, **options).fun for i in range(batch)])
    rel = relative(result.fun.numpy(), theirs)
    assert np.median(rel) <= 1e-12 and np.abs(rel).max() <= 1e-9, rel
    assert set(result.status.tolist()) <= {CONVERGED_PGTOL, CONVERGED_FACTR}
    # KKT: the projected gradient vanishes at the answers
    _, grad = objective(torch.arange(batch), result.x)
    projected = torch.where(grad < 0, torch.maximum(result.x - upper, grad), torch.minimum(result.x - lower, grad))
    assert float(projected.abs().max()) < 1e-6
    active = ((result.x == 0) | (result.x == 1)).sum(1)
    assert int(active.min()) > 10, "the test should exercise active bounds"


def test_infinite_bounds_and_nonconvex_rosenbrock() -> None:
    """Extended Rosenbrock at three scales (1e-3, 1, 1e3: the line search must backtrack and
    extrapolate), some problems with no upper bound, some with a tighter lower bound."""
    batch, n = 6, 20
    scale = torch.tensor([1e-3, 1.0, 1e3] * 2, dtype=torch.float64)

    def objective(rows: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x[:, 0::2], x[:, 1::2]
        value = (100 * (b - a * a) ** 2 + (1 - a) ** 2).sum(1)
        ga, gb = -400 * a * (b - a * a) - 2 * (1 - a), 200 * (b - a * a)
        return value * scale[rows], torch.stack([ga, gb], 2).reshape(len(rows), n) * scale[rows].unsqueeze(1)

    g = torch.Generator().manual_seed(1)
    x0 = -1.2 + 0.1 * torch.randn(batch, n, generator=g, dtype=torch.float64)
    lower = torch.full((batch, n), -2.0, dtype=torch.float64)
    upper = torch.full((batch, n), 0.8, dtype=torch.float64)
    upper[::2] = float("inf")
    lower[1::3, :4] = -1.0
    result = torch_lbfgsb(objective, x0, lower, upper, memory=7, factr=1e7, pgtol=1e-6, max_iter=3000)
    for i in range(batch):
        bounds = list(zip(lower[i].tolist(), [None if np.isinf(v) else v for v in upper[i].tolist()]))
        theirs = scipy_solve(objective, x0[i].numpy(), bounds, i, maxcor=7, ftol=1e7 * np.finfo(float).eps,
                             gtol=1e-6, maxiter=3000)
        ours = float(result.fun[i])
        # unbounded problems reach the minimum 0 (both to ~1e-8 · scale); boxed ones the same corner
        assert ours <= theirs.fun + 1e-6 * float(scale[i])
        assert abs(ours - theirs.fun) <= 1e-6 * max(1.0, abs(theirs.fun))


@pytest.fixture(scope="module")
def jointvae():  # type: ignore[no-untyped-def]
    from robust_vae.zoo import load_model

    return load_model("jointvae", "mnist", seed=0)


def test_vae_latent_objective_matches_scipy(jointvae, pairs16) -> None:  # type: ignore[no-untyped-def]
    xs, xt = pairs16[0][:8], pairs16[1][:8]
    results = {}
    for solver in ("scipy", "torch"):
        attack = make_attack("latent-lbfgsb", divergence="kl", c=0.01, max_iter=15, solver=solver)
        results[solver] = attack(jointvae, xs, xt)
    ours, theirs = results["torch"].objective[0].double().numpy(), results["scipy"].objective[0].double().numpy()
    rel = relative(ours, theirs)
    assert np.median(rel) <= 1e-3, rel
    assert (results["torch"].objective < results["torch"].objective.new_tensor(1e9)).all()
    # and the attack did something: every objective fell below its value at x_s
    with torch.no_grad():
        from robust_vae.attacks.objectives import posterior_kl

        start = posterior_kl(jointvae, xs, jointvae.encode(xt))
    assert (torch.from_numpy(ours).float() < start).all()


@pytest.mark.parametrize("seed", [0])
def test_box_inactive_closed_form(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analytic, "attack", _torch_attack)
    analytic.test_box_inactive_matches_closed_form_for_every_c(seed)


@pytest.mark.parametrize("seed", [1])
def test_box_active_bounded_least_squares(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analytic, "attack", _torch_attack)
    analytic.test_box_active_matches_bounded_least_squares(seed)


def _torch_attack(model, xs, target, c):  # type: ignore[no-untyped-def]
    lbfgsb = make_attack("latent-lbfgsb", divergence="l2", c=c, max_iter=1000, pgtol=1e-10, solver="torch")
    return lbfgsb(model, xs.float().view(analytic.N, *analytic.SHAPE), target.float())


def test_torch_solver_is_exactly_batch_independent(jointvae, pairs16) -> None:  # type: ignore[no-untyped-def]
    """Each problem follows exactly its own iterates: with a row-wise model, bit for bit,
    also when the batch holds fewer rows than there are problems (``batch=3``)."""
    attack = make_attack("latent-lbfgsb", divergence="kl", c=[1e-3, 1.0], max_iter=6, solver="torch", batch=3)
    assert_exactly_batch_independent(attack, RowWise(jointvae), pairs16[0][:4], pairs16[1][:4], SEEDS[:4])


def rowwise_hard_problems(count: int, n: int, seed: int = 0) -> tuple[TorchObjective, torch.Tensor]:
    """``count`` problems over [0, 1]ⁿ: ½‖D(Ax − b)‖² with D = diag(logspace(0, −3)) (condition
    number ~1e6) plus wᵀtanh(Vx), a small random tanh layer that makes each problem nonconvex.
    The objective is evaluated one row at a time, with elementwise products and sums only, so a
    row's value and gradient cannot depend on the other rows of the batch."""
    g = torch.Generator().manual_seed(seed)
    rank, hidden = 96, 64
    scale = torch.logspace(0, -3, rank, dtype=torch.float64).view(1, rank, 1)
    a = 10 * scale * torch.randn(count, rank, n, generator=g, dtype=torch.float64) / n ** 0.5
    b = torch.randn(count, rank, generator=g, dtype=torch.float64)
    v = 3 * torch.randn(count, hidden, n, generator=g, dtype=torch.float64) / n ** 0.5
    w = torch.randn(count, hidden, generator=g, dtype=torch.float64)
    x0 = torch.rand(count, n, generator=g, dtype=torch.float64)

    def one(i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = (a[i] * x).sum(1) - b[i]
        t = torch.tanh((v[i] * x).sum(1))
        u = w[i] * (1 - t * t)
        value = 0.5 * (r * r).sum() + (w[i] * t).sum()
        return value, (a[i] * r.unsqueeze(1)).sum(0) + (v[i] * u.unsqueeze(1)).sum(0)

    def objective(rows: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = [one(int(i), x[k]) for k, i in enumerate(rows)]
        return torch.stack([value for value, _ in out]), torch.stack([grad for _, grad in out])

    return objective, x0


def test_full_length_runs_are_exactly_batch_independent() -> None:
    """200 iterations, n = 1024, m = 25 (the attacks' memory), five hard problems with active
    bounds: solved one at a time, all five together, and through two slots (finished problems
    hand their slot to waiting ones), every problem ends with the same x, f, nit, nfev and
    status, bit for bit."""
    count, n = 5, 1024
    objective, x0 = rowwise_hard_problems(count, n)
    lower, upper = torch.zeros(count, n, dtype=torch.float64), torch.ones(count, n, dtype=torch.float64)

    def solve(objective: TorchObjective, rows: slice, batch: int = 512) -> TorchLBFGSBResult:
        # no convergence test can stop a run early: each one runs its 200 iterations
        return torch_lbfgsb(objective, x0[rows], lower[rows], upper[rows], memory=25, factr=0.0, pgtol=0.0,
                            max_iter=200, batch=batch)

    def problem(i: int) -> TorchObjective:
        return lambda rows, x: objective(rows + i, x)

    runs = {"together": solve(objective, slice(None)), "two slots": solve(objective, slice(None), batch=2)}
    alone = [solve(problem(i), slice(i, i + 1)) for i in range(count)]
    together = runs["together"]
    # long, hard runs: every problem uses all 200 iterations, with many variables at a bound
    assert int((together.nit >= 100).sum()) >= count - 1 and (together.status == MAX_ITER).all()
    assert int(((together.x == 0) | (together.x == 1)).sum(1).min()) > 100
    for name, result in runs.items():
        for i, single in enumerate(alone):
            for field in ("x", "fun", "nit", "nfev", "status"):
                ours, theirs = getattr(result, field)[i], getattr(single, field)[0]
                assert torch.equal(ours, theirs), (
                    f"{name}, problem {i}: {field} differs from the problem solved alone "
                    f"(max |difference| {float((ours.double() - theirs.double()).abs().max()):.1e})")


def test_solver_option_is_validated() -> None:
    from robust_vae.core.errors import ConfigError

    with pytest.raises(ConfigError, match="solver"):
        make_attack("latent-lbfgsb", solver="fortran")


# ----------------------------------------------------------------------------- memories
def shifted_problem(seed: int, batch: int, n: int = 256):  # type: ignore[no-untyped-def]
    """f_C(x) = ‖Ax − b‖² + 0.1 Σ tanh(3x) + C‖x − x₀‖², row by row (elementwise sums)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, 40, n, generator=g, dtype=torch.float64) / 10
    b = torch.randn(batch, 40, generator=g, dtype=torch.float64)
    x0 = torch.rand(batch, n, generator=g, dtype=torch.float64)

    def at(c: float) -> TorchObjective:
        def objective(rows: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            r = (a[rows] * x.unsqueeze(1)).sum(2) - b[rows]
            value = (r * r).sum(1) + 0.1 * torch.tanh(3 * x).sum(1) + c * ((x - x0[rows]) ** 2).sum(1)
            grad = (2 * (a[rows].transpose(1, 2) * r.unsqueeze(1)).sum(2) + 0.3 * (1 - torch.tanh(3 * x) ** 2)
                    + 2 * c * (x - x0[rows]))
            return value, grad
        return objective

    return at, x0


def test_a_kept_memory_restarts_a_solved_problem_at_once_and_carries_to_a_shifted_one() -> None:
    from robust_vae.attacks.optim.torch_lbfgsb import Memory

    at, x0 = shifted_problem(0, 4)
    lower, upper = torch.zeros_like(x0), torch.ones_like(x0)
    options = {"memory": 25, "factr": 10.0, "pgtol": 1e-9, "max_iter": 1000}
    first = torch_lbfgsb(at(1.0), x0, lower, upper, keep_memory=True, **options)
    assert first.memory is not None and (first.memory.count > 20).all()
    # its own memory at its own solution: converged within two evaluations (empty memory: more)
    again = torch_lbfgsb(at(1.0), first.x, lower, upper, initial_memory=first.memory, **options)
    assert (again.nfev <= 2).all(), again.nfev
    # C = 0.9: y + 2(C − C_prev)s are exact pairs of the new objective; the same optimum as
    # cold start, with fewer evaluations than from the old solution alone
    shifted = Memory(first.memory.y + 2 * (0.9 - 1.0) * first.memory.s, first.memory.s, first.memory.count)
    warm = torch_lbfgsb(at(0.9), first.x, lower, upper, initial_memory=shifted, **options)
    plain = torch_lbfgsb(at(0.9), first.x, lower, upper, **options)
    cold = torch_lbfgsb(at(0.9), x0, lower, upper, **options)
    torch.testing.assert_close(warm.fun, cold.fun, rtol=1e-12, atol=1e-12)
    assert (warm.nfev < plain.nfev).all() and (plain.nfev < cold.nfev).all()
    # and a problem started with a memory is still its own: alone, together and through one slot
    for i in range(4):
        alone = torch_lbfgsb(lambda rows, x, i=i: at(0.9)(rows + i, x), first.x[i:i + 1], lower[i:i + 1],
                             upper[i:i + 1], initial_memory=Memory(shifted.y[i:i + 1], shifted.s[i:i + 1],
                                                                   shifted.count[i:i + 1]), **options)
        assert torch.equal(alone.x[0], warm.x[i]) and int(alone.nfev[0]) == int(warm.nfev[i])
    one_slot = torch_lbfgsb(at(0.9), first.x, lower, upper, initial_memory=shifted, batch=1, **options)
    assert torch.equal(one_slot.x, warm.x)
