"""Perturbation budgets as objects: the [0, 1] box alone, or the box ∩ an L∞ or L2 ball.

A budget projects a batch onto its feasible set (:meth:`Budget.project`, ε per example) and
measures per-example distances (:meth:`Budget.distance`, (N,)). Recipes and attack fields name
a norm by string (``"linf"``, ``"l2"``); :func:`budget_for` / :class:`Norm` turn the string into
the budget object once, and the attacks use the object from then on.

Both projections hold the budget exactly in float32: the rounding of ``center ± ε`` (L∞) and
of ``center + d·ε/‖d‖`` (L2) can land an ulp outside the ball, so they step such values back in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from robust_vae.attacks.options import Choice
from robust_vae.core.errors import ConfigError

Epsilon = torch.Tensor | float | None  # per example (N,), one value, or no ball


def per_example(value: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """``value`` shaped to broadcast against ``x`` (N, ...): (N,) -> (N, 1, ..., 1); scalars as is."""
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        return value.to(x).view(-1, *([1] * (x.dim() - 1)))
    return torch.as_tensor(value, dtype=x.dtype, device=x.device)


class Budget(ABC):
    """Where an adversarial may lie: always inside the [0, 1] box, possibly inside a ball."""

    norm: ClassVar[str | None]  # the recipe string of the ball's norm; None for the box alone

    @abstractmethod
    def project(self, x: torch.Tensor, center: torch.Tensor, epsilon: Epsilon) -> torch.Tensor:
        """``x`` (N, ...) projected onto [0, 1] ∩ {‖x − center‖ ≤ ε}; ε None: onto [0, 1] only."""

    @abstractmethod
    def distance(self, x: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """‖x − center‖ per example, (N,)."""


@dataclass(frozen=True)
class Box(Budget):
    """No ball: the adversarial only stays in [0, 1] (``epsilon`` is ignored; distances are 0)."""

    norm: ClassVar[str | None] = None

    def project(self, x: torch.Tensor, center: torch.Tensor, epsilon: Epsilon = None) -> torch.Tensor:
        return x.clamp(0.0, 1.0)

    def distance(self, x: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)


class NormBall(Budget):
    """A ball of a norm (intersected with the box), with what gradient attacks need of it."""

    @abstractmethod
    def steepest_direction(self, grad: torch.Tensor) -> torch.Tensor:
        """The unit-norm direction of steepest ascent for ``grad`` (N, ...) in this norm."""

    @abstractmethod
    def start_from_cube(self, sample: torch.Tensor) -> torch.Tensor:
        """A random start in the unit ball from a uniform sample of the cube [−1, 1]ⁿ (N, ...)."""

    @abstractmethod
    def sample_unit_ball(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """One point (n,) drawn uniformly from the unit ball of this norm, from ``generator``."""


@dataclass(frozen=True)
class LinfBall(NormBall):
    """[0, 1] ∩ {|x − center|∞ ≤ ε}."""

    norm: ClassVar[str | None] = "linf"

    def project(self, x: torch.Tensor, center: torch.Tensor, epsilon: Epsilon) -> torch.Tensor:
        x = x.clamp(0.0, 1.0)
        if epsilon is not None:
            eps = per_example(epsilon, x)
            x = torch.maximum(torch.minimum(x, center + eps), center - eps).clamp(0.0, 1.0)
            # (center + ε) − center can round above ε in float32: step such values inwards
            for _ in range(4):
                over = (x - center).abs() > eps
                if not over.any():
                    break
                x = torch.where(over, torch.nextafter(x, center), x)
        return x

    def distance(self, x: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        return (x - center).flatten(1).abs().amax(dim=1)

    def steepest_direction(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()

    def start_from_cube(self, sample: torch.Tensor) -> torch.Tensor:
        return sample  # the cube is the unit L∞ ball

    def sample_unit_ball(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(n, generator=generator) * 2 - 1


@dataclass(frozen=True)
class L2Ball(NormBall):
    """[0, 1] ∩ {‖x − center‖₂ ≤ ε}: the perturbation is scaled into the ball, then clipped."""

    norm: ClassVar[str | None] = "l2"

    def project(self, x: torch.Tensor, center: torch.Tensor, epsilon: Epsilon) -> torch.Tensor:
        if epsilon is None:
            return x.clamp(0.0, 1.0)
        d = x - center
        norms = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        eps = per_example(epsilon, x).flatten()
        scale = torch.clamp(eps / norms, max=1.0)
        shape = (-1, *([1] * (x.dim() - 1)))
        x = (center + d * scale.view(shape)).clamp(0.0, 1.0)
        # ε/‖d‖ and center + d·scale round in float32, so ‖x − center‖ can land an ulp above ε:
        # shrink such rows by a few ulps (relative 2^-22, doubling) until the budget holds
        for attempt in range(8):
            over = (x - center).flatten(1).norm(dim=1) > eps
            if not over.any():
                break
            scale = torch.where(over, scale * (1.0 - 2.0 ** (attempt - 22)), scale)
            x = (center + d * scale.view(shape)).clamp(0.0, 1.0)
        return x

    def distance(self, x: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        norms: torch.Tensor = (x - center).flatten(1).norm(dim=1)
        return norms

    def steepest_direction(self, grad: torch.Tensor) -> torch.Tensor:
        return unit_l2(grad)

    def start_from_cube(self, sample: torch.Tensor) -> torch.Tensor:
        return unit_l2(sample)  # onto the unit sphere

    def sample_unit_ball(self, n: int, generator: torch.Generator) -> torch.Tensor:
        # the first n coordinates of a uniform point on the (n + 1)-sphere are uniform in the
        # n-ball (Voelker et al. 2017, as foolbox samples them)
        point = torch.randn(n + 2, generator=generator)
        sample: torch.Tensor = (point / point.norm())[:n]
        return sample


def unit_l2(v: torch.Tensor) -> torch.Tensor:
    """Each example of ``v`` (N, C, H, W) scaled to L2 norm 1 (zero rows stay zero)."""
    unit: torch.Tensor = v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return unit


BOX = Box()
LINF_BALL = LinfBall()
L2_BALL = L2Ball()


class Norm(Choice):
    """The norm of a budget, as recipes spell it."""

    LINF = "linf"
    L2 = "l2"

    @property
    def budget(self) -> NormBall:
        return LINF_BALL if self is Norm.LINF else L2_BALL


def budget_for(norm: str | None) -> Budget:
    """The budget a recipe string names: ``"linf"`` -> :data:`LINF_BALL`, ``"l2"`` -> :data:`L2_BALL`,
    None -> :data:`BOX` (no ball)."""
    if norm is None:
        return BOX
    try:
        return Norm(norm).budget
    except ValueError:
        raise ConfigError(f"budget norm must be one of {', '.join(map(repr, Norm.values()))} or None, "
                          f"got {norm!r}") from None
