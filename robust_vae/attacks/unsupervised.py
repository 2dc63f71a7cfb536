"""Unsupervised attacks (no target, no classifier): push the code of x* away from the code of x.

- ``"unsupervised"`` (:class:`TopSingularDirection`, Kuzina et al. 2021): one step of size ε
  along the top right-singular vector v of the encoder-mean Jacobian J_μ(x) (D × C·H·W), found
  by power iteration on J_μᵀJ_μ with Jacobian-vector and vector-Jacobian products (the dense
  Jacobian is never built);
- ``"unsupervised-kl"`` (:class:`SymmetricKLAttack`, Kuzina et al. 2022): projected gradient
  ascent (SGD) on the symmetric KL between q(z|x) and q(z|x*).

Both take targets like every attack (``attack(model, sources, targets)``) and ignore them, so
they run inside success matrices, where AS ignore-target is what they measure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from robust_vae.attacks.base import (
    NormBudgetAttack,
    Problem,
    RunOutput,
    Sweep,
    as_attackable,
    per_example_generators,
)
from robust_vae.attacks.budgets import Norm, unit_l2
from robust_vae.attacks.objectives import posterior_symmetric_kl
from robust_vae.attacks.optim.gradients import loss_and_gradient
from robust_vae.attacks.registry import register_attack
from robust_vae.core import progress
from robust_vae.core.errors import ConfigError

__all__ = ["SymmetricKLAttack", "TopSingularDirection", "top_right_singular_vector"]

RowFunction = Callable[[torch.Tensor], torch.Tensor]  # (N, C, H, W) -> (N, D), row by row


def top_right_singular_vector(
    fn: RowFunction,
    x: torch.Tensor,
    start: torch.Tensor,
    iterations: int,
    on_step: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example, the top right-singular vector and value of the Jacobian J_i of ``fn`` at x_i.

    ``fn`` maps a batch (N, C, H, W) to (N, D) row by row (row i depends on x_i only), so one
    batched JVP gives every J_i v_i and one batched VJP every J_iᵀ u_i. Power iteration
    v ← J_iᵀJ_i v / ‖J_iᵀJ_i v‖₂ from ``start`` (N, C, H, W) for ``iterations`` steps; the
    dense Jacobians are never built. Returns v (N, C, H, W), unit L2 norm per row (a zero row
    where J_iᵀJ_i v vanishes), and σ₁ = ‖J_i v‖₂ (N,). The sign of v is arbitrary.
    ``on_step(i)`` is called after iteration i.
    """
    x = x.detach()
    direction = unit_l2(start.to(x))
    # u -> J_xᵀ u: the VJP at x is linear in u, built once and reused every iteration
    transpose: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] = torch.func.vjp(fn, x)[1]
    for i in range(iterations):
        (pulled,) = transpose(_jvp(fn, x, direction))
        direction = unit_l2(pulled.detach())
        if on_step is not None:
            on_step(i + 1)
    return direction, _jvp(fn, x, direction).detach().norm(dim=1)


def _jvp(fn: RowFunction, x: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
    """J_x·tangent (N, D) by forward-mode AD (one forward pass, no Jacobian)."""
    pushed: torch.Tensor = torch.func.jvp(fn, (x,), (tangent,))[1]
    return pushed


@register_attack
@dataclass(repr=False)
class TopSingularDirection(NormBudgetAttack):
    """Kuzina et al. 2021: x* = clip(x + ε·s·v) (``norm="l2"``, ‖v‖₂ = 1) or
    x* = clip(x + ε·s·sign(v)) (``"linf"``), v the top right-singular vector of J_μ(x).

    J_μ is the Jacobian of the Gaussian posterior mean μ(x) (N, D) only: for a model with a
    categorical latent (JointVAE) the logits are left out of the direction and of the shift.
    v comes from ``power_iterations`` steps of power iteration on J_μᵀJ_μ
    (:func:`top_right_singular_vector`) from a Gaussian start seeded per example, computed
    once per example and shared by every ε of the sweep. The sign s = ±1 is the one whose
    (clipped) x* moves μ further, measured. ``objective``: the latent shift
    ‖μ(x*) − μ(x)‖₂ (N,); ``extras["singular_value"]``: the estimated σ₁ of J_μ(x).
    Targets are ignored.
    """

    name = "unsupervised"
    untargeted = True
    sweep_field = "epsilon"

    epsilon: Sweep = 1.0
    norm: str = "l2"
    power_iterations: int = 20

    def validate(self) -> None:
        super().validate()
        if self.power_iterations < 1:
            raise ConfigError(f"{self.name}: power_iterations must be >= 1, got {self.power_iterations}")

    def run(self, model: nn.Module, problem: Problem) -> RunOutput:
        sources, eps = problem.sources, problem.epsilon
        assert eps is not None
        k = self.sweep_size()
        n = sources.shape[0] // k
        vae = as_attackable(model)

        def mean(x: torch.Tensor) -> torch.Tensor:
            return vae.encode(x).mean

        # the direction depends on x only, not on ε: once per example (sweep entry 0 carries
        # the caller's seeds), then repeated over the K sweep values
        start = torch.stack([torch.randn(sources.shape[1:], generator=g)
                             for g in per_example_generators(problem.seeds[:n])]) if n else sources[:0]
        direction, sigma = top_right_singular_vector(
            mean, sources[:n], start, self.power_iterations,
            on_step=lambda done: progress.step(done, self.power_iterations))
        direction, sigma = direction.repeat(k, 1, 1, 1), sigma.repeat(k)
        step = direction if Norm(self.norm) is Norm.L2 else direction.sign()
        ball = self.ball
        scaled = eps.to(sources).view(-1, 1, 1, 1) * step
        with torch.no_grad():
            clean = mean(sources)
            plus = ball.project(sources + scaled, sources, eps)
            minus = ball.project(sources - scaled, sources, eps)
            shift_plus = (mean(plus) - clean).norm(dim=1)
            shift_minus = (mean(minus) - clean).norm(dim=1)
        take_minus = shift_minus > shift_plus
        adversarial = torch.where(take_minus.view(-1, 1, 1, 1), minus, plus)
        shift = torch.where(take_minus, shift_minus, shift_plus)
        iterations = torch.full((sources.shape[0],), self.power_iterations, dtype=torch.int64)
        return RunOutput(adversarial, shift, iterations, extras={"singular_value": sigma})


@register_attack
@dataclass(repr=False)
class SymmetricKLAttack(NormBudgetAttack):
    """Kuzina et al. 2022: maximise KL(q(z|x) ‖ q(z|x*)) + KL(q(z|x*) ‖ q(z|x)) over the budget.

    The symmetric KL is :func:`~robust_vae.attacks.objectives.posterior_symmetric_kl`: the
    diagonal Gaussians plus, for a model with a categorical latent (JointVAE), the categorical
    part. Step rule: plain SGD ascent on the raw gradient with a constant learning rate, then
    the projection onto the box ∩ the ε-ball of ``norm``:
    x ← Π(x + lr·∇ₓ SKL(x)), for ``steps`` steps (the paper: SGD, 1000 steps, L2 ball; no
    momentum, no learning-rate schedule). The raw gradient scales with the model (SKL grows
    like ‖Δμ‖²/σ²): lr = 1e-3 suits the shipped MNIST models at ε = 1 (steps of about 0.3·ε). The
    gradient vanishes at x* = x (the minimum), so the run starts at x + ε·u with u uniform in
    the unit ball of ``norm``, seeded per example. Returns each example's best iterate;
    ``objective``: its symmetric KL (N,). Targets are ignored.
    """

    name = "unsupervised-kl"
    untargeted = True
    sweep_field = "epsilon"

    epsilon: Sweep = 1.0
    norm: str = "l2"
    steps: int = 1000
    lr: float = 1e-3

    def validate(self) -> None:
        super().validate()
        if self.steps < 1:
            raise ConfigError(f"{self.name}: steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise ConfigError(f"{self.name}: lr must be > 0, got {self.lr}")

    def run(self, model: nn.Module, problem: Problem) -> RunOutput:
        sources, eps = problem.sources, problem.epsilon
        assert eps is not None
        m = sources.shape[0]
        ball = self.ball
        vae = as_attackable(model)
        with torch.no_grad():
            clean = vae.encode(sources)

        def loss_fn(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return posterior_symmetric_kl(clean, vae.encode(x))

        size = math.prod(sources.shape[1:])
        start = torch.stack([ball.sample_unit_ball(size, g) for g in per_example_generators(problem.seeds)]) \
            if m else sources.new_zeros(0, size)
        x = ball.project(sources + eps.view(-1, 1, 1, 1) * start.to(sources).view_as(sources), sources, eps)
        rows = torch.arange(m, device=sources.device)
        best_x, best_kl = x.clone(), torch.full((m,), -math.inf, device=sources.device)
        for i in range(self.steps):
            kl, grad = loss_and_gradient(loss_fn, x, rows)
            better = kl > best_kl
            best_kl = torch.where(better, kl, best_kl)
            best_x[better] = x[better]
            x = ball.project(x + self.lr * grad, sources, eps)
            progress.step(i + 1, self.steps)
        with torch.no_grad():
            kl = loss_fn(x, rows)
        better = kl > best_kl
        best_kl = torch.where(better, kl, best_kl)
        best_x[better] = x[better]
        return RunOutput(best_x, best_kl, torch.full((m,), self.steps, dtype=torch.int64))
