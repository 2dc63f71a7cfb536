"""Max-damage attack (Willetts, Camuto et al. 2021; Barrett et al. 2022): the largest change of
the reconstruction a budget allows.

    damage(x, r) = max ‖x̂(x + d) − x̂(x)‖₂  subject to ‖d‖ ≤ r (L2 or L∞), x + d ∈ [0, 1]

with x̂ the model's deterministic reconstruction (``model.reconstruct``). Gradients go through
the relaxed reconstruction where the model has one (:func:`differentiable_reconstruction`:
JointVAE's argmax has no gradient); damage is always measured on the deterministic one. The
radii r are the sweep (``epsilon``: one value or a list), so a call gives the damage-vs-r curve
(K radii × N examples). The attack is untargeted: it takes targets like every attack and
ignores them (in a success matrix it measures AS ignore-target; ``latent_distance`` is then
the distance to the target's code as for every attack). :meth:`MaxDamage.at_budgets` attacks
each example at its own radius (for the bisection of r-robustness margins) and
:func:`damage_curve` returns (radii, damage) directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import cast

import numpy as np
import torch
from torch import nn

from robust_vae.attacks.base import (
    AttackResult,
    NormBudgetAttack,
    Problem,
    RunOutput,
    Sweep,
    as_attackable,
    per_example_generators,
)
from robust_vae.attacks.budgets import Norm, NormBall
from robust_vae.attacks.latent import Solver
from robust_vae.attacks.optim.gradients import LossFn, loss_and_gradient
from robust_vae.attacks.optim.scipy_lbfgsb import lockstep_lbfgsb
from robust_vae.attacks.optim.torch_lbfgsb import torch_lbfgsb
from robust_vae.attacks.options import Choice
from robust_vae.attacks.output import differentiable_reconstruction
from robust_vae.attacks.registry import register_attack
from robust_vae.core import progress
from robust_vae.core.devices import model_device
from robust_vae.core.errors import ConfigError
from robust_vae.models.protocol import AttackableModel

__all__ = ["DamageOptimizer", "MaxDamage", "damage_curve", "measured_damage"]

PER_EXAMPLE_SWEEP = "epsilon per example"  # sweep_name of an at_budgets result


class DamageOptimizer(Choice):
    """How :class:`MaxDamage` maximises the damage."""

    PGD = "pgd"        # projected gradient ascent with random restarts
    LBFGSB = "lbfgsb"  # L-BFGS-B on a penalised form, then projected onto the budget


@torch.no_grad()
def measured_damage(model: nn.Module | AttackableModel, adversarial: torch.Tensor,
                    clean_reconstruction: torch.Tensor) -> torch.Tensor:
    """‖x̂(x*) − x̂(x)‖₂ per example (N,), x̂ the deterministic reconstruction; ``adversarial``
    (N, C, H, W), ``clean_reconstruction`` x̂(x) (N, C, H, W)."""
    recon = cast(AttackableModel, model).reconstruct(adversarial)
    damage: torch.Tensor = (recon - clean_reconstruction).flatten(1).norm(dim=1)
    return damage


def random_starts(ball: NormBall, seeds: torch.Tensor, shape: torch.Size, restarts: int) -> torch.Tensor:
    """(restarts, M, *shape) points uniform in the unit ball of ``ball``; example i's come from
    its own generator seeded ``seeds[i]`` (restart j is its j-th draw), so they do not depend
    on the batch."""
    size = math.prod(shape)
    rows = [torch.stack([ball.sample_unit_ball(size, g) for _ in range(restarts)])
            for g in per_example_generators(seeds)]
    if not rows:
        return torch.zeros((restarts, 0, *shape))
    return torch.stack(rows, dim=1).view(restarts, len(rows), *shape)


@register_attack
@dataclass(repr=False)
class MaxDamage(NormBudgetAttack):
    """Maximise ‖x̂(x + d) − x̂(x)‖₂ over ‖d‖ ≤ r (``norm`` "l2" or "linf") ∩ the [0, 1] box.

    ``epsilon``: the radius r, or a list of radii (the sweep, K = len(epsilon)). Every radius
    starts from the same random directions (scaled by r), seeded per example.

    ``optimizer="pgd"``: projected gradient ascent on ‖x̂_relaxed(x*) − x̂(x)‖², ``restarts``
    runs of ``steps`` steps of size ``rel_stepsize``·r (L2: the normalised gradient; L∞: its
    sign), each from a point uniform in the ball; keeps, per example, the iterate (of any
    restart) with the largest measured damage.

    ``optimizer="lbfgsb"`` (Barrett et al.: m = ``memory`` = 100, ``factr`` = 10): L-BFGS-B on
    −‖x̂_relaxed(x*) − x̂(x)‖² + c·max(0, ‖d‖₂ − r)² under the box (L2), or on
    −‖x̂_relaxed(x*) − x̂(x)‖² under the box ∩ the L∞ ball as exact bounds (L∞; ``c`` unused).
    The penalty acts only outside the L2 ball, so the optimum sits near the sphere rather than
    trading damage against all distortion; the result is then projected onto the budget and
    measured. ``restarts`` random starts inside the ball run as one lock-step batch (the
    damage gradient vanishes at d = 0, so a start at x would never move). ``solver``,
    ``workers``, ``batch`` as in :class:`~robust_vae.attacks.latent.LatentLBFGSB`.

    ``monotone``: per example, the entry at radius r reports the best adversarial over the
    grid's radii ≤ r (a perturbation within a smaller ball lies within the larger one), so
    the damage curve never decreases; ``extras["run_epsilon"]`` is the radius whose run gave
    the reported adversarial.

    Results: ``objective`` = ``extras["damage"]`` = the damage of the returned (clipped)
    adversarial, measured on the deterministic reconstruction, (K, N); ``iterations``:
    restarts·steps (PGD) or the chosen restart's L-BFGS-B iterations.
    """

    name = "max-damage"
    untargeted = True
    sweep_field = "epsilon"

    epsilon: Sweep = 1.0
    norm: str = "l2"
    optimizer: str = "pgd"
    steps: int = 100
    restarts: int = 1
    rel_stepsize: float = 0.1
    monotone: bool = True
    c: float = 100.0
    memory: int = 100
    factr: float = 10.0
    pgtol: float = 1e-5
    max_iter: int = 200
    solver: str = "scipy"
    workers: int = 256
    batch: int = 512

    def validate(self) -> None:
        DamageOptimizer.parse(self.optimizer, f"{self.name}: optimizer")
        Solver.parse(self.solver, f"{self.name}: solver")
        super().validate()
        for field_name in ("steps", "restarts", "memory", "max_iter", "workers", "batch"):
            value = getattr(self, field_name)
            if value < 1:
                raise ConfigError(f"{self.name}: {field_name} must be >= 1, got {value}")
        if not self.rel_stepsize > 0:
            raise ConfigError(f"{self.name}: rel_stepsize must be > 0, got {self.rel_stepsize}")
        if not self.c >= 0:
            raise ConfigError(f"{self.name}: c must be >= 0, got {self.c}")
        if not self.factr > 0 or not self.pgtol >= 0:
            raise ConfigError(f"{self.name}: factr must be > 0 and pgtol >= 0")

    # ----- per-example budgets -----
    def at_budgets(self, model: nn.Module, sources: torch.Tensor, budgets: torch.Tensor, *,
                   seeds: torch.Tensor | None = None) -> AttackResult:
        """Attack example i of ``sources`` (N, C, H, W) at its own radius ``budgets[i]`` ((N,),
        >= 0): a K = 1 result, clipped and measured exactly as :meth:`__call__`'s. With the same
        ``seeds`` (default seed + arange(N)) and all budgets equal to r, it is the sweep's entry
        at r before the ``monotone`` envelope. ``sweep_name`` is ``"epsilon per example"``."""
        n = sources.shape[0] if isinstance(sources, torch.Tensor) and sources.dim() == 4 else -1
        if not isinstance(budgets, torch.Tensor) or tuple(budgets.shape) != (n,) or \
                not torch.is_floating_point(budgets) or not bool(torch.isfinite(budgets).all()):
            shape = tuple(budgets.shape) if isinstance(budgets, torch.Tensor) else type(budgets).__name__
            raise ConfigError(f"{self.name}: budgets must be a finite float tensor of shape ({n},), got {shape}")
        if bool((budgets < 0).any()):
            raise ConfigError(f"{self.name}: budgets must be >= 0, got min {float(budgets.min())}")
        single = replace(self, epsilon=0.0)  # K = 1; its per-problem ε is replaced below
        device = torch.device(self.device) if self.device else model_device(model)
        if self.device:
            model.to(device)
        vae = as_attackable(model)
        problem = single._flatten_batch(vae, device, sources, sources, seeds, None)
        per_example = budgets.detach().to(device, torch.float32)
        problem = replace(problem, sweep=per_example, epsilon=per_example.clone())
        out = single._run_frozen(model, problem)
        result = single._result(vae, problem, out, device)
        return replace(result, sweep_name=PER_EXAMPLE_SWEEP, sweep_values=[math.nan])

    # ----- the optimisation -----
    def run(self, model: nn.Module, problem: Problem) -> RunOutput:
        sources, eps = problem.sources, problem.epsilon
        assert eps is not None
        m = sources.shape[0]
        values = self.sweep_values() or [0.0]
        n = m // len(values)
        # sweep entry 0 carries the caller's seeds: every radius starts from the same directions
        seeds = problem.seeds[:n].repeat(len(values))
        starts = random_starts(self.ball, seeds, sources.shape[1:], self.restarts).to(sources)
        with torch.no_grad():
            clean = as_attackable(model).reconstruct(sources)
        if DamageOptimizer(self.optimizer) is DamageOptimizer.LBFGSB:
            return self._lbfgsb(model, sources, eps, clean, starts)
        return self._pgd(model, sources, eps, clean, starts)

    def _pgd(self, model: nn.Module, sources: torch.Tensor, eps: torch.Tensor, clean: torch.Tensor,
             starts: torch.Tensor) -> RunOutput:
        """Projected gradient ascent from each of the (R, M, C, H, W) ``starts``."""
        m, ball = sources.shape[0], self.ball
        radius = eps.to(sources).view(-1, 1, 1, 1)
        alpha = self.rel_stepsize * radius
        rows = torch.arange(m, device=sources.device)

        def gain(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            return (differentiable_reconstruction(model, x) - clean[r]).flatten(1).pow(2).sum(dim=1)

        best_x, best_damage = sources.clone(), torch.full((m,), -1.0, device=sources.device)

        def keep_better(x: torch.Tensor) -> None:
            nonlocal best_damage
            damage = measured_damage(model, x, clean)
            better = damage > best_damage
            best_damage = torch.where(better, damage, best_damage)
            best_x[better] = x[better]

        total = self.restarts * self.steps
        for restart in range(self.restarts):
            x = ball.project(sources + radius * starts[restart], sources, eps)
            for i in range(self.steps):
                _, grad = loss_and_gradient(gain, x, rows)
                keep_better(x)
                x = ball.project(x + alpha * ball.steepest_direction(grad), sources, eps)
                progress.step(restart * self.steps + i + 1, total)
            keep_better(x)
        iterations = torch.full((m,), total, dtype=torch.int64)
        return RunOutput(best_x, best_damage, iterations, extras={"damage": best_damage})

    def _lbfgsb(self, model: nn.Module, sources: torch.Tensor, eps: torch.Tensor, clean: torch.Tensor,
                starts: torch.Tensor) -> RunOutput:
        """L-BFGS-B on the penalised form, all R·M (restart, problem) pairs in one lock-step batch."""
        m, ball, restarts = sources.shape[0], self.ball, self.restarts
        tiled_sources = sources.repeat(restarts, 1, 1, 1)  # restart-major, as ``starts.flatten(0, 1)``
        tiled_eps = eps.to(sources).repeat(restarts)
        tiled_clean = clean.repeat(restarts, 1, 1, 1)
        radius = tiled_eps.view(-1, 1, 1, 1)
        x0 = ball.project(tiled_sources + radius * starts.flatten(0, 1), tiled_sources, tiled_eps)
        l2 = Norm(self.norm) is Norm.L2
        flat = tiled_sources.flatten(1)
        if l2:
            lower, upper = torch.zeros_like(flat), torch.ones_like(flat)
        else:
            lower = (flat - tiled_eps[:, None]).clamp_min(0.0)
            upper = (flat + tiled_eps[:, None]).clamp_max(1.0)

        def loss_fn(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            gain = (differentiable_reconstruction(model, x) - tiled_clean[r]).flatten(1).pow(2).sum(dim=1)
            if not l2:
                return -gain
            # a smooth norm (no NaN gradient at d = 0), penalised outside the ball only
            norm = (x - tiled_sources[r]).flatten(1).pow(2).sum(dim=1).clamp_min(1e-24).sqrt()
            return -gain + self.c * (norm - tiled_eps[r]).clamp_min(0.0).pow(2)

        x, nit = self._solve(loss_fn, x0, lower, upper)
        x = ball.project(x, tiled_sources, tiled_eps)
        damage = measured_damage(model, x, tiled_clean).view(restarts, m)
        best = damage.argmax(dim=0)
        columns = torch.arange(m, device=sources.device)
        chosen = x.view(restarts, m, *sources.shape[1:])[best, columns]
        best_damage = damage[best, columns]
        iterations = nit.to(sources.device).view(restarts, m)[best, columns]
        return RunOutput(chosen, best_damage, iterations, extras={"damage": best_damage})

    def _solve(self, loss_fn: LossFn, x0: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """min loss_fn over the boxes [lower, upper] (M, n) from ``x0`` (M, C, H, W): (x, nit)."""
        shape, device = x0.shape[1:], x0.device
        if Solver(self.solver) is Solver.TORCH:
            def torch_objective(rows: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                loss, grad = loss_and_gradient(loss_fn, points.to(torch.float32).view(-1, *shape), rows)
                return loss.double(), grad.flatten(1).double()

            result = torch_lbfgsb(torch_objective, x0.flatten(1).double(), lower.double(), upper.double(),
                                  memory=self.memory, factr=self.factr, pgtol=self.pgtol,
                                  max_iter=self.max_iter, batch=self.batch)
            return result.x.to(torch.float32).view(-1, *shape), result.nit

        def objective(index: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            rows = torch.from_numpy(index).to(device)
            x = torch.from_numpy(points).to(device=device, dtype=torch.float32).view(-1, *shape)
            loss, grad = loss_and_gradient(loss_fn, x, rows)
            return loss.double().cpu().numpy(), grad.flatten(1).double().cpu().numpy()

        def as_numpy(t: torch.Tensor) -> np.ndarray:
            array: np.ndarray = t.detach().flatten(1).cpu().double().numpy()
            return array

        solved = lockstep_lbfgsb(objective, as_numpy(x0), as_numpy(lower), as_numpy(upper),
                                 memory=self.memory, factr=self.factr, pgtol=self.pgtol,
                                 max_iter=self.max_iter, workers=self.workers)
        x = torch.from_numpy(solved.x).to(device=device, dtype=torch.float32).view(-1, *shape)
        return x, torch.from_numpy(solved.nit)

    # ----- measuring what is returned -----
    def _result(self, model: AttackableModel, problem: Problem, out: RunOutput, device: torch.device) -> AttackResult:
        """The base result, with ``objective`` and ``extras["damage"]`` re-measured on the
        clipped adversarials (the base clip may move a pixel by an ulp), then the ``monotone``
        envelope over the radii."""
        result = super()._result(model, problem, out, device)
        k, n = result.l2.shape
        with torch.no_grad():
            clean = model.reconstruct(problem.sources)
            damage = measured_damage(model, result.adversarial.flatten(0, 1), clean).view(k, n)
        assert problem.epsilon is not None
        run_epsilon = problem.epsilon.to(device).view(k, n)
        result = replace(result, objective=damage,
                         extras={**result.extras, "damage": damage, "run_epsilon": run_epsilon})
        if self.monotone and k > 1:
            result = monotone_envelope(result, torch.tensor(self.sweep_values() or [], device=device))
        return result


def monotone_envelope(result: AttackResult, radii: torch.Tensor) -> AttackResult:
    """Per example and radius r_j, the entry of largest ``objective`` (the damage) among the
    entries with radius ≤ r_j (the entry itself on ties): every (K, N) field follows it.
    ``radii`` (K,) need not be sorted."""
    damage = result.objective  # (K, N)
    allowed = radii.view(1, -1) <= radii.view(-1, 1)  # (K_j, K_i): entry i fits the ball of j
    candidates = torch.where(allowed.unsqueeze(-1), damage.unsqueeze(0), -math.inf)  # (K_j, K_i, N)
    best, index = candidates.max(dim=1)
    own = torch.arange(damage.shape[0], device=damage.device).view(-1, 1).expand_as(index)
    index = torch.where(damage >= best, own, index)
    columns = torch.arange(damage.shape[1], device=damage.device).view(1, -1)

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t[index.to(t.device), columns.to(t.device)]

    return replace(result, adversarial=pick(result.adversarial), l2=pick(result.l2), linf=pick(result.linf),
                   latent_distance=pick(result.latent_distance), objective=pick(result.objective),
                   iterations=pick(result.iterations), extras={k: pick(v) for k, v in result.extras.items()})


def damage_curve(model: nn.Module, x: torch.Tensor, radii: Sequence[float] | torch.Tensor, *,
                 attack: MaxDamage | None = None, seeds: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The damage-vs-r curve of ``x`` (N, C, H, W): (radii (K,), damage (K, N)), by ``attack``
    (default :class:`MaxDamage`'s defaults) with its ``epsilon`` set to ``radii``."""
    values = [float(r) for r in (radii.flatten().tolist() if isinstance(radii, torch.Tensor) else radii)]
    if not values:
        raise ConfigError("damage_curve: radii must not be empty")
    sweep = replace(attack if attack is not None else MaxDamage(), epsilon=values)
    result = sweep(model, x, x, seeds=seeds)
    return torch.tensor(values, dtype=torch.float32), result.objective
