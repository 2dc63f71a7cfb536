"""Output-space attack (Gondim-Ribeiro et al. 2018; Kos et al. L_VAE-style).

min C·‖d‖² + ‖x̂(x_s + d) − x_t‖², the reconstruction x̂ made differentiable by the relaxed
categorical (protocol §2); success is still judged on the deterministic reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robust_vae.attacks.base import Attack, Problem, RunOutput, Sweep, as_attackable
from robust_vae.attacks.latent import lbfgsb_on_images
from robust_vae.attacks.objectives import squared_distortion
from robust_vae.attacks.optim.adam import BatchedAdam
from robust_vae.attacks.optim.gradients import LossFn, loss_and_gradient
from robust_vae.attacks.options import Choice
from robust_vae.attacks.registry import register_attack
from robust_vae.core import progress
from robust_vae.core.errors import ConfigError


class Optimizer(Choice):
    """How :class:`OutputAttack` minimises its objective."""

    ADAM = "adam"      # Adam with per-example gradient-norm clipping, L∞-projected
    LBFGSB = "lbfgsb"  # lock-step SciPy L-BFGS-B under the box (∩ the L∞ ball)


def differentiable_reconstruction(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's relaxed reconstruction when it has one, else its plain one."""
    relaxed = getattr(model, "relaxed_reconstruct", None)
    recon: torch.Tensor = relaxed(x) if relaxed is not None else as_attackable(model).reconstruct(x)
    return recon


@register_attack
@dataclass(repr=False)
class OutputAttack(Attack):
    """C·‖d‖² + ‖x̂(x*) − x_t‖², by Adam (per-example gradient-norm clipping) or L-BFGS-B.

    ``c`` may be a list (a sweep). ``epsilon`` (optional) adds an L∞ budget.
    """

    name = "output"
    sweep_field = "c"
    budget_norm = "linf"
    needs_target_images = True

    c: Sweep = 1.0
    optimizer: str = "adam"
    epsilon: float | None = None
    lr: float = 1e-3
    steps: int = 1000
    clip_norm: float = 10.0
    memory: int = 25
    factr: float = 10.0
    pgtol: float = 1e-5
    max_iter: int = 500
    workers: int = 256

    def validate(self) -> None:
        super().validate()
        Optimizer.parse(self.optimizer, "output: optimizer")
        if any(value < 0 for value in self._as_list(self.c)):
            raise ConfigError("output: every C must be >= 0")

    def run(self, model: nn.Module, problem: Problem) -> RunOutput:
        assert problem.targets is not None and problem.sweep is not None
        targets, c = problem.targets, problem.sweep

        def loss_fn(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            recon = differentiable_reconstruction(model, x)
            mismatch = (recon - targets[rows]).flatten(1).pow(2).sum(dim=1)
            return c[rows] * squared_distortion(x, problem.sources[rows]) + mismatch

        if Optimizer(self.optimizer) is Optimizer.LBFGSB:
            return lbfgsb_on_images(loss_fn, problem, memory=self.memory, factr=self.factr,
                                    pgtol=self.pgtol, max_iter=self.max_iter, workers=self.workers)
        return self._adam(loss_fn, problem)

    def _adam(self, loss_fn: LossFn, problem: Problem) -> RunOutput:
        sources = problem.sources
        m = sources.shape[0]
        rows = torch.arange(m, device=sources.device)
        x = sources.clone()
        adam = BatchedAdam(x, self.lr)
        for i in range(self.steps):
            _, grad = loss_and_gradient(loss_fn, x, rows)
            norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
            grad = grad * torch.clamp(self.clip_norm / norms, max=1.0).view(-1, 1, 1, 1)
            x = self.budget.project(adam.step(x, grad), sources, problem.epsilon)
            progress.step(i + 1, self.steps)
        with torch.no_grad():
            objective = loss_fn(x, rows)
        return RunOutput(x, objective, torch.full((m,), self.steps, dtype=torch.int64))
