"""Latent-space attacks: move the code of x* onto the code of the target (protocol §4–§5)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from robust_vae.attacks.base import (
    Attack,
    NormBudgetAttack,
    Problem,
    RunOutput,
    Sweep,
    as_attackable,
    per_example_normal,
)
from robust_vae.attacks.objectives import (
    DIVERGENCES,
    Divergence,
    code_distance,
    index_params,
    latent_divergence,
    squared_distortion,
)
from robust_vae.attacks.optim.adam import BatchedAdam
from robust_vae.attacks.optim.gradients import LossFn, loss_and_gradient
from robust_vae.attacks.optim.scipy_lbfgsb import lockstep_lbfgsb
from robust_vae.attacks.optim.torch_lbfgsb import Memory, torch_lbfgsb
from robust_vae.attacks.options import Choice
from robust_vae.attacks.registry import register_attack
from robust_vae.core import progress
from robust_vae.core.errors import ConfigError
from robust_vae.models.base import LatentParams
from robust_vae.models.protocol import AttackableModel, target_view
from robust_vae.models.row_wise import RowWise

__all__ = [
    "BatchedAdam", "DIVERGENCES", "LatentAdam", "LatentLBFGSB", "LatentPGD", "LossFn", "SOLVERS", "Solver",
    "lbfgsb_on_images",
]


class Solver(Choice):
    """The L-BFGS-B implementation of :func:`lbfgsb_on_images`."""

    SCIPY = "scipy"  # one SciPy run per problem, in lock-step worker threads
    TORCH = "torch"  # the vectorised torch L-BFGS-B


SOLVERS = Solver.values()


class WarmStart(Choice):
    """How a C sweep of :class:`LatentLBFGSB` is solved."""

    NONE = "none"  # every C from the source (cold start)
    DESCENDING = "descending"  # largest C first from the source, each next C from the previous solution
    ASCENDING = "ascending"  # smallest C first, each next C from the previous solution

    @classmethod
    def of(cls, value: str | bool) -> WarmStart:
        """``true`` is the cheaper direction measured by ``benchmarks/lbfgsb_warm_start.py``
        (descending), ``false`` is ``"none"``; strings name the member."""
        if isinstance(value, bool):
            return cls.DESCENDING if value else cls.NONE
        return cls.parse(value, "latent-lbfgsb: warm_start")


class Precision(Choice):
    """The float type the model, the objective and its gradient are evaluated in by L-BFGS-B."""

    FLOAT32 = "float32"
    FLOAT64 = "float64"  # a float64 copy of the model: resolves the objective's flat directions

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64 if self is Precision.FLOAT64 else torch.float32


@register_attack
@dataclass(repr=False)
class LatentAdam(Attack):
    """The thesis attack (protocol §4): Adam on λ‖x − x_s‖₂ + ‖φ(x) − φ_t‖₂, L∞-projected.

    ``accumulate_gradients`` reproduces the thesis code's missing ``zero_grad`` (each step
    uses the running sum of all past gradients). ``early_stop`` freezes an example once its
    loss improved by less than ``tolerance`` (relative) over ``check_every`` steps.
    """

    name = "latent-adam"
    budget_norm = "linf"

    epsilon: float = 0.1
    lam: float = 1.0
    lr: float = 1e-3
    steps: int = 1000
    noise_std: float = 0.2
    accumulate_gradients: bool = False
    early_stop: bool = False
    check_every: int = 50
    tolerance: float = 1e-3

    def validate(self) -> None:
        super().validate()
        if self.steps < 1 or self.lr <= 0 or self.noise_std < 0 or self.lam < 0:
            raise ConfigError(f"{self.name}: steps and lr must be positive, noise_std and lam >= 0")

    def loss(self, model: nn.Module, problem: Problem) -> LossFn:
        def fn(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            distortion: torch.Tensor = (x - problem.sources[rows]).flatten(1).norm(dim=1)
            return self.lam * distortion + code_distance(model, x, problem.target_code[rows])
        return fn

    def run(self, model: nn.Module, problem: Problem) -> RunOutput:
        sources = problem.sources
        m = sources.shape[0]
        noise = per_example_normal(sources.shape[1:], problem.seeds, self.noise_std).to(sources)
        x = (sources + noise).clamp(0.0, 1.0)
        loss_fn = self.loss(model, problem)
        adam = BatchedAdam(x, self.lr)
        accumulated = torch.zeros_like(x) if self.accumulate_gradients else None
        iterations = torch.zeros(m, dtype=torch.int64)
        active = torch.arange(m, device=x.device)
        last_check = torch.full((m,), math.inf, device=x.device)
        for step in range(1, self.steps + 1):
            if active.numel() == 0:
                break
            everyone = active.numel() == m
            rows = None if everyone else active
            xa = x if everyone else x[active]
            loss, grad = loss_and_gradient(loss_fn, xa, active)
            if accumulated is not None:
                if everyone:
                    accumulated += grad
                    grad = accumulated.clone()
                else:
                    accumulated[active] += grad
                    grad = accumulated[active]
            updated = self.budget.project(adam.step(xa, grad, rows), sources[active], problem.epsilon[active]
                                          if problem.epsilon is not None else None)
            if everyone:
                x = updated
            else:
                x[active] = updated
            iterations[active.cpu()] += 1
            if self.early_stop and step % self.check_every == 0:
                active, last_check = self._still_improving(active, loss, last_check)
            progress.step(step, self.steps)
        with torch.no_grad():
            objective = loss_fn(x, torch.arange(m, device=x.device))
        return RunOutput(x, objective, iterations)

    def _still_improving(self, active: torch.Tensor, loss: torch.Tensor, last_check: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Early stopping: the rows of ``active`` whose loss improved by more than ``tolerance``
        (relative) since the last check, and the losses recorded for the next check."""
        previous = last_check[active]
        improved = (previous - loss) > self.tolerance * loss.abs().clamp_min(1e-12)
        last_check[active] = loss
        return active[improved | torch.isinf(previous)], last_check


@register_attack
@dataclass(repr=False)
class LatentPGD(NormBudgetAttack):
    """Projected gradient descent on ‖φ(x) − φ_t‖₂² under an L∞ or L2 budget ε.

    Step size ``step_size``·ε per step (sign step for L∞, normalised gradient for L2); keeps
    each example's best iterate. ``random_start`` begins uniformly inside the ball.
    """

    name = "latent-pgd"

    epsilon: float = 0.1
    norm: str = "linf"
    steps: int = 100
    step_size: float = 0.025
    random_start: bool = True

    def run(self, model: nn.Module, problem: Problem) -> RunOutput:
        sources, eps = problem.sources, problem.epsilon
        assert eps is not None
        m = sources.shape[0]
        ball = self.ball
        x = sources.clone()
        if self.random_start:
            generators = [torch.Generator().manual_seed(int(s)) for s in problem.seeds.tolist()]
            start = torch.stack([torch.rand(sources.shape[1:], generator=g) * 2 - 1 for g in generators])
            start = ball.start_from_cube(start.to(sources))
            x = ball.project(sources + start * eps.view(-1, 1, 1, 1), sources, eps)
        rows = torch.arange(m, device=sources.device)
        vae = as_attackable(model)

        def loss_fn(z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            return (vae.attack_code(z) - problem.target_code[r]).pow(2).sum(dim=1)

        best_x, best_loss = x.clone(), torch.full((m,), math.inf, device=sources.device)
        alpha = (self.step_size * eps).view(-1, 1, 1, 1)
        for i in range(self.steps):
            loss, grad = loss_and_gradient(loss_fn, x, rows)
            better = loss < best_loss
            best_loss = torch.where(better, loss, best_loss)
            best_x[better] = x[better]
            x = ball.project(x - alpha * ball.steepest_direction(grad), sources, eps)
            progress.step(i + 1, self.steps)
        with torch.no_grad():
            loss = loss_fn(x, rows)
        better = loss < best_loss
        best_loss = torch.where(better, loss, best_loss)
        best_x[better] = x[better]
        return RunOutput(best_x, best_loss, torch.full((m,), self.steps, dtype=torch.int64))


def lbfgsb_on_images(
    loss_fn: LossFn,
    problem: Problem,
    *,
    memory: int,
    factr: float,
    pgtol: float,
    max_iter: int,
    workers: int = 256,
    solver: str = "scipy",
    batch: int = 512,
    dtype: torch.dtype = torch.float32,
    row_by_row: bool = False,
    start: torch.Tensor | None = None,
    initial_memory: Memory | None = None,
    keep_memory: bool = False,
) -> RunOutput:
    """Solve min loss_fn(x) over x in [0, 1] (∩ L∞ ball) for every problem, in lock-step.

    ``solver="scipy"``: one SciPy L-BFGS-B run per problem in worker threads, gradients
    batched (:func:`lockstep_lbfgsb`, at most ``workers`` at once). ``solver="torch"``: the
    vectorised L-BFGS-B of :mod:`robust_vae.attacks.optim.torch_lbfgsb` (``batch`` problems at once).
    ``loss_fn`` is called on points of ``dtype``; ``row_by_row`` calls it one problem at a time,
    so how problems are batched cannot change a result (a batched conv rounds differently at
    different batch sizes, and L-BFGS-B amplifies the last bit), at the cost of batching.
    The solutions and objectives come back in ``dtype``. ``start`` (M, C, H, W), inside the
    bounds: the points the runs start from (default: the sources). The torch solver can also
    start every problem with a limited memory and return the final ones (``initial_memory``,
    ``keep_memory``: :class:`~robust_vae.attacks.optim.torch_lbfgsb.Memory`).
    """
    def evaluate(x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not row_by_row:
            return loss_and_gradient(loss_fn, x, rows)
        parts = [loss_and_gradient(loss_fn, x[i:i + 1], rows[i:i + 1]) for i in range(len(rows))]
        return torch.cat([v for v, _ in parts]), torch.cat([g for _, g in parts])

    if Solver.parse(solver, "L-BFGS-B solver") is Solver.TORCH:
        return _torch_lbfgsb_on_images(evaluate, problem, memory=memory, factr=factr, pgtol=pgtol,
                                       max_iter=max_iter, batch=batch, dtype=dtype, start=start,
                                       initial_memory=initial_memory, keep_memory=keep_memory)
    sources = problem.sources
    shape, device = sources.shape[1:], sources.device
    flat = sources.detach().flatten(1).cpu().double().numpy()
    lower, upper = np.zeros_like(flat), np.ones_like(flat)
    if problem.epsilon is not None:
        eps = problem.epsilon.detach().cpu().double().numpy()[:, None]
        lower, upper = np.maximum(lower, flat - eps), np.minimum(upper, flat + eps)
    x0 = flat if start is None else np.clip(start.detach().flatten(1).cpu().double().numpy(), lower, upper)

    def objective(index: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = torch.from_numpy(index).to(device)
        x = torch.from_numpy(points).to(device=device, dtype=dtype).view(-1, *shape)
        loss, grad = evaluate(x, rows)
        return loss.double().cpu().numpy(), grad.flatten(1).double().cpu().numpy()

    result = lockstep_lbfgsb(objective, x0, lower, upper, memory=memory, factr=factr,
                             pgtol=pgtol, max_iter=max_iter, workers=workers)
    x = torch.from_numpy(result.x).to(device=device, dtype=dtype).view(-1, *shape)
    return RunOutput(x, torch.from_numpy(result.fun).to(dtype), torch.from_numpy(result.nit),
                     evaluations=torch.from_numpy(np.asarray(result.nfev, dtype=np.int64)))


def _torch_lbfgsb_on_images(evaluate: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                            problem: Problem, *, memory: int, factr: float, pgtol: float, max_iter: int,
                            batch: int, dtype: torch.dtype, start: torch.Tensor | None = None,
                            initial_memory: Memory | None = None, keep_memory: bool = False) -> RunOutput:
    sources = problem.sources
    shape = sources.shape[1:]
    flat = sources.detach().flatten(1).double()
    lower, upper = torch.zeros_like(flat), torch.ones_like(flat)
    if problem.epsilon is not None:
        eps = problem.epsilon.detach().to(flat).unsqueeze(1)
        lower, upper = torch.clamp(flat - eps, min=0.0), torch.clamp(flat + eps, max=1.0)

    def objective(rows: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, grad = evaluate(points.to(dtype).view(-1, *shape), rows)
        return loss.double(), grad.flatten(1).double()

    x0 = flat if start is None else torch.minimum(torch.maximum(start.detach().flatten(1).to(flat), lower), upper)
    result = torch_lbfgsb(objective, x0, lower, upper, memory=memory, factr=factr, pgtol=pgtol,
                          max_iter=max_iter, batch=batch, initial_memory=initial_memory, keep_memory=keep_memory)
    x = result.x.to(dtype).view(-1, *shape)
    return RunOutput(x, result.fun.to(dtype), result.nit, evaluations=result.nfev, memory=result.memory)


def _continuation(problem: Problem, loss_fn: LossFn,
                  solve: Callable[[Problem, LossFn, torch.Tensor | None, Memory | None], RunOutput], k: int,
                  descending: bool) -> RunOutput:
    """A C sweep (K blocks of N problems, block j at C_j) solved as a continuation: the first C
    of the order from the sources, every next one from the previous C's solutions and, where
    the solver returns them (torch), its limited memories. The objective is Δ + C‖x − x_s‖²,
    so a pair (s, y) of the previous C is a pair of this C with y + 2(C − C_prev)·s: exact, not
    an approximation (pairs that lose positive curvature are dropped)."""
    assert problem.sweep is not None
    n = problem.sources.shape[0] // k
    values = problem.sweep.view(k, n)[:, 0]
    order = torch.argsort(values.double(), descending=descending, stable=True).tolist()
    parts: dict[int, RunOutput] = {}
    start: torch.Tensor | None = None
    memory: Memory | None = None
    previous = 0.0
    for j in order:
        block = slice(j * n, (j + 1) * n)
        part = problem.rows(block)

        def shifted(x: torch.Tensor, rows: torch.Tensor, offset: int = j * n) -> torch.Tensor:
            return loss_fn(x, rows + offset)

        c = float(values[j])
        if memory is not None:
            memory = Memory(memory.y + 2.0 * (c - previous) * memory.s, memory.s, memory.count)
        parts[j] = solve(part, shifted, start, memory)
        start, memory, previous = parts[j].adversarial, parts[j].memory, c
    blocks = [parts[j] for j in range(k)]
    evaluations = [b.evaluations for b in blocks]
    return RunOutput(torch.cat([b.adversarial for b in blocks]), torch.cat([b.objective for b in blocks]),
                     torch.cat([b.iterations for b in blocks]),
                     evaluations=None if any(e is None for e in evaluations)
                     else torch.cat([e for e in evaluations if e is not None]))


@register_attack
@dataclass(repr=False)
class LatentLBFGSB(Attack):
    """Tabacof et al. (protocol §5): min Δ(x_s + d, x_t) + C·‖d‖² s.t. 0 ≤ x_s + d ≤ 1.

    Δ is the squared distance between attack codes (``divergence="l2"``) or
    KL(q(z|x*) ‖ q(z|x_t)) (``"kl"``, Gaussian plus categorical). ``c`` may be a list: a
    sweep, giving K = len(c) results per example. An optional L∞ ``epsilon`` is added to the
    box. ``solver="scipy"``: every example is its own SciPy L-BFGS-B run, gradients batched
    (lock-step threads); ``solver="torch"``: the vectorised L-BFGS-B of
    :mod:`robust_vae.attacks.optim.torch_lbfgsb`, ``batch`` problems at once.
    ``precision="float64"`` evaluates a float64 copy of the model (the float32 objective cannot
    resolve the flat directions near an optimum); ``row_by_row=true`` evaluates one example at a
    time, so an example's result cannot depend on the others in its batch. ``warm_start``
    ("descending" or "ascending" in C; ``true`` = "descending") solves a sweep as a continuation,
    each C started from its neighbour's solution instead of from the source ("none").
    """

    name = "latent-lbfgsb"
    sweep_field = "c"
    budget_norm = "linf"
    later_options = ("precision", "row_by_row", "warm_start")

    c: Sweep = 1.0
    divergence: str = "kl"
    epsilon: float | None = None
    memory: int = 25
    factr: float = 10.0
    pgtol: float = 1e-5
    max_iter: int = 500
    workers: int = 256
    solver: str = "scipy"
    batch: int = 512
    precision: str = "float32"
    row_by_row: bool = False
    warm_start: str | bool = "none"

    def validate(self) -> None:
        super().validate()
        Solver.parse(self.solver, "latent-lbfgsb: solver")
        Precision.parse(self.precision, "latent-lbfgsb: precision")
        WarmStart.of(self.warm_start)
        if self.batch < 1:
            raise ConfigError(f"latent-lbfgsb: batch must be >= 1, got {self.batch}")
        Divergence.parse(self.divergence, "latent-lbfgsb: divergence")
        if any(value < 0 for value in self._as_list(self.c)):
            raise ConfigError("latent-lbfgsb: every C must be >= 0")

    @property
    def needs_target_images(self) -> bool:
        return Divergence(self.divergence) is Divergence.KL

    def run(self, model: nn.Module, problem: Problem) -> RunOutput:
        divergence = Divergence(self.divergence)
        dtype = Precision(self.precision).dtype
        if dtype != torch.float32:  # the model, the sources and the sweep in that precision
            model = copy.deepcopy(model).to(dtype)
            problem = replace(problem, sources=problem.sources.to(dtype),
                              targets=None if problem.targets is None else problem.targets.to(dtype),
                              target_code=problem.target_code.to(dtype),
                              sweep=None if problem.sweep is None else problem.sweep.to(dtype))
        target_params: LatentParams | None = None
        targets = problem.targets
        if targets is not None and (dtype != torch.float32 or self.row_by_row):
            # the targets' codes again, in this precision and (row_by_row) one at a time
            target_model = target_view(model)  # targets under their own label (a conditional model's true-label view)
            encoder: AttackableModel = RowWise(target_model) if self.row_by_row else as_attackable(target_model)
            with torch.no_grad():
                problem = replace(problem, target_code=encoder.attack_code(targets))
            if divergence is Divergence.KL:
                with torch.no_grad():
                    target_params = encoder.encode(targets)
        if divergence is Divergence.KL and target_params is None:
            assert problem.targets is not None
            with torch.no_grad():
                target_params = as_attackable(target_view(model)).encode(problem.targets)
        c = problem.sweep
        assert c is not None

        def loss_fn(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            params = index_params(target_params, rows) if target_params is not None else None
            distance = latent_divergence(model, x, divergence, problem.target_code[rows], params)
            return distance + c[rows] * squared_distortion(x, problem.sources[rows])

        warm = WarmStart.of(self.warm_start)
        continued = warm is not WarmStart.NONE and self.sweep_size() > 1

        def solve(part: Problem, loss: LossFn, start: torch.Tensor | None, memory: Memory | None) -> RunOutput:
            return lbfgsb_on_images(loss, part, memory=self.memory, factr=self.factr, pgtol=self.pgtol,
                                    max_iter=self.max_iter, workers=self.workers, solver=self.solver,
                                    batch=self.batch, dtype=dtype, row_by_row=self.row_by_row, start=start,
                                    initial_memory=memory, keep_memory=continued)

        if not continued:
            return solve(problem, loss_fn, None, None)
        return _continuation(problem, loss_fn, solve, self.sweep_size(), descending=warm is WarmStart.DESCENDING)
