"""LatentAdam against a hand-written reference loop: the thesis's attack loop, written the
way the thesis code wrote it (torch.optim.Adam on x, optionally without ``zero_grad``)."""

from __future__ import annotations

import pytest
import torch

from robust_vae.attacks.base import per_example_normal
from robust_vae.attacks.latent import LatentAdam

from .toy import LinearEncoder

SHAPE = (1, 4, 4)
N, LATENT = 5, 3
EPSILON, LAM, LR, NOISE = 0.3, 0.5, 0.01, 0.2
SEEDS = torch.tensor([11, 3, 8, 1, 20], dtype=torch.int64)


@pytest.fixture(scope="module")
def problem() -> tuple[LinearEncoder, torch.Tensor, torch.Tensor]:
    """A tiny nonlinear encoder φ(x) = tanh(W x + b), sources and target codes."""
    g = torch.Generator().manual_seed(0)
    model = LinearEncoder(torch.randn(LATENT, 16, generator=g), 0.1 * torch.randn(LATENT, generator=g),
                          SHAPE, nonlinear=True)
    xs = torch.rand(N, *SHAPE, generator=g)
    target = torch.tanh(torch.randn(N, LATENT, generator=g))
    return model, xs, target


def reference(model, xs, target, steps: int, zero_grad: bool) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """x = clip(x_s + noise); Adam([x]); loss = λ·Σ‖x − x_s‖₂ + Σ‖φ(x) − φ_t‖₂; project."""
    x = (xs + per_example_normal(xs.shape[1:], SEEDS, NOISE)).clamp(0, 1).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=LR)
    for _ in range(steps):
        if zero_grad:
            optimizer.zero_grad()
        loss = LAM * (x - xs).flatten(1).norm(dim=1).sum() + (model.attack_code(x) - target).norm(dim=1).sum()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            x.copy_(torch.minimum(torch.maximum(x, xs - EPSILON), xs + EPSILON).clamp(0, 1))
    return x.detach()


def library(model, xs, target, steps: int, accumulate: bool) -> torch.Tensor:  # type: ignore[no-untyped-def]
    attack = LatentAdam(epsilon=EPSILON, lam=LAM, lr=LR, steps=steps, noise_std=NOISE,
                        accumulate_gradients=accumulate)
    return attack(model, xs, target, seeds=SEEDS).adversarial[0]


@pytest.mark.parametrize("accumulate", [True, False], ids=["accumulate", "zero_grad"])
@pytest.mark.parametrize("steps", [1, 2, 5, 20])
def test_latent_adam_matches_reference_loop(problem, steps: int, accumulate: bool) -> None:  # type: ignore[no-untyped-def]
    model, xs, target = problem
    expected = reference(model, xs, target, steps, zero_grad=not accumulate)
    got = library(model, xs, target, steps, accumulate)
    gap = float((got - expected).abs().max())
    assert gap <= 1e-5, f"{steps} steps: library and reference differ by {gap:.2e}"


def test_accumulation_changes_the_trajectory(problem) -> None:  # type: ignore[no-untyped-def]
    """After 20 steps the two variants are far apart: measured max |Δ| 0.11, mean 0.035.

    (The reference loops themselves agree with the library to ≤ 9e-8 up to 20 steps.)"""
    model, xs, target = problem
    accumulated = library(model, xs, target, 20, accumulate=True)
    plain = library(model, xs, target, 20, accumulate=False)
    assert float((accumulated - plain).abs().max()) > 0.05
    assert float((accumulated - plain).abs().mean()) > 0.01
