"""Latent-space attacks: move the code of x* onto the code of the target (protocol §4–§5)."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
from robust_vae.attacks.optim.torch_lbfgsb import torch_lbfgsb
from robust_vae.attacks.options import Choice
from robust_vae.attacks.registry import register_attack
from robust_vae.core import progress
from robust_vae.core.errors import ConfigError
from robust_vae.models.base import LatentParams

__all__ = [
    "BatchedAdam", "DIVERGENCES", "LatentAdam", "LatentLBFGSB", "LatentPGD", "LossFn", "SOLVERS", "Solver",
    "lbfgsb_on_images",
]


class Solver(Choice):
    """The L-BFGS-B implementation of :func:`lbfgsb_on_images`."""

    SCIPY = "scipy"  # one SciPy run per problem, in lock-step worker threads
    TORCH = "torch"  # the vectorised torch L-BFGS-B


SOLVERS = Solver.values()


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
) -> RunOutput:
    """Solve min loss_fn(x) over x in [0, 1] (∩ L∞ ball) for every problem, in lock-step.

    ``solver="scipy"``: one SciPy L-BFGS-B run per problem in worker threads, gradients
    batched (:func:`lockstep_lbfgsb`, at most ``workers`` at once). ``solver="torch"``: the
    vectorised L-BFGS-B of :mod:`robust_vae.attacks.optim.torch_lbfgsb` (``batch`` problems at once).
    """
    if Solver.parse(solver, "L-BFGS-B solver") is Solver.TORCH:
        return _torch_lbfgsb_on_images(loss_fn, problem, memory=memory, factr=factr, pgtol=pgtol,
                                       max_iter=max_iter, batch=batch)
    sources = problem.sources
    shape, device = sources.shape[1:], sources.device
    flat = sources.detach().flatten(1).cpu().double().numpy()
    lower, upper = np.zeros_like(flat), np.ones_like(flat)
    if problem.epsilon is not None:
        eps = problem.epsilon.detach().cpu().double().numpy()[:, None]
        lower, upper = np.maximum(lower, flat - eps), np.minimum(upper, flat + eps)

    def objective(index: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = torch.from_numpy(index).to(device)
        x = torch.from_numpy(points).to(device=device, dtype=torch.float32).view(-1, *shape)
        loss, grad = loss_and_gradient(loss_fn, x, rows)
        return loss.double().cpu().numpy(), grad.flatten(1).double().cpu().numpy()

    result = lockstep_lbfgsb(objective, flat, lower, upper, memory=memory, factr=factr,
                             pgtol=pgtol, max_iter=max_iter, workers=workers)
    x = torch.from_numpy(result.x).to(device=device, dtype=torch.float32).view(-1, *shape)
    return RunOutput(x, torch.from_numpy(result.fun).float(), torch.from_numpy(result.nit))


def _torch_lbfgsb_on_images(loss_fn: LossFn, problem: Problem, *, memory: int, factr: float,
                            pgtol: float, max_iter: int, batch: int) -> RunOutput:
    sources = problem.sources
    shape = sources.shape[1:]
    flat = sources.detach().flatten(1).double()
    lower, upper = torch.zeros_like(flat), torch.ones_like(flat)
    if problem.epsilon is not None:
        eps = problem.epsilon.detach().to(flat).unsqueeze(1)
        lower, upper = torch.clamp(flat - eps, min=0.0), torch.clamp(flat + eps, max=1.0)

    def objective(rows: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, grad = loss_and_gradient(loss_fn, points.to(torch.float32).view(-1, *shape), rows)
        return loss.double(), grad.flatten(1).double()

    result = torch_lbfgsb(objective, flat, lower, upper, memory=memory, factr=factr, pgtol=pgtol,
                          max_iter=max_iter, batch=batch)
    x = result.x.to(torch.float32).view(-1, *shape)
    return RunOutput(x, result.fun.float(), result.nit)


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
    """

    name = "latent-lbfgsb"
    sweep_field = "c"
    budget_norm = "linf"

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

    def validate(self) -> None:
        super().validate()
        Solver.parse(self.solver, "latent-lbfgsb: solver")
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
        target_params: LatentParams | None = None
        if divergence is Divergence.KL:
            assert problem.targets is not None
            with torch.no_grad():
                target_params = as_attackable(model).encode(problem.targets)
        c = problem.sweep
        assert c is not None

        def loss_fn(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            params = index_params(target_params, rows) if target_params is not None else None
            distance = latent_divergence(model, x, divergence, problem.target_code[rows], params)
            return distance + c[rows] * squared_distortion(x, problem.sources[rows])

        return lbfgsb_on_images(loss_fn, problem, memory=self.memory, factr=self.factr,
                                pgtol=self.pgtol, max_iter=self.max_iter, workers=self.workers,
                                solver=self.solver, batch=self.batch)
