"""Pullback-metric scores (Khan & Storkey 2023) against the dense n × n metric built from
``torch.autograd.functional.jacobian`` of μ, σ and the logits, on tiny encoders and the small
trained VAE."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from robust_vae.core.errors import ConfigError
from robust_vae.evaluation.pullback import PullbackScores, pullback_factor, pullback_scores
from robust_vae.models.base import LatentParams

SHAPE = (1, 8, 8)
N_PIXELS = 64


class TinyEncoder(nn.Module):
    """(N, 1, 8, 8) -> LatentParams: conv, dense, heads for μ, logvar (D = 3) and K logits."""

    def __init__(self, categories: int = 0, constant_logvar: float | None = None, seed: int = 0,
                 dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.config = SimpleNamespace(channels=1, image_size=8)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.hidden = nn.Linear(4 * N_PIXELS, 16)
        self.mean_head = nn.Linear(16, 3)
        self.logvar_head = nn.Linear(16, 3)
        self.logits_head = nn.Linear(16, categories) if categories else None
        self.constant_logvar = constant_logvar
        self.to(dtype)

    def encode(self, x: torch.Tensor) -> LatentParams:
        h = torch.tanh(self.hidden(torch.tanh(self.conv(x)).flatten(1)))
        mean = self.mean_head(h)
        if self.constant_logvar is None:
            logvar = self.logvar_head(h)
        else:
            logvar = torch.full_like(mean.detach(), self.constant_logvar)
        logits = self.logits_head(h) if self.logits_head is not None else None
        return LatentParams(mean, logvar, logits)


class Permuted(nn.Module):
    """``model`` with its Gaussian and categorical coordinates reordered."""

    def __init__(self, model: nn.Module, gaussian: torch.Tensor, categorical: torch.Tensor | None) -> None:
        super().__init__()
        self.model, self.gaussian, self.categorical = model, gaussian, categorical
        self.config = getattr(model, "config", None)

    def encode(self, x: torch.Tensor) -> LatentParams:
        mean, logvar, logits = self.model.encode(x)
        if logits is not None and self.categorical is not None:
            logits = logits[:, self.categorical]
        return LatentParams(mean[:, self.gaussian], logvar[:, self.gaussian], logits)


def images(count: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.rand(count, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def dense_metric(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """G of one image (C, H, W), (n, n) float64, straight from the formula with dense Jacobians:
    J_μᵀ diag(1/σ²) J_μ + J_σᵀ diag(2/σ²) J_σ (+ J_ℓᵀ (diag π − ππᵀ) J_ℓ)."""
    model.eval()
    shape = (1, *image.shape)
    flat = image.reshape(-1).detach()

    def part(index: int):  # type: ignore[no-untyped-def]
        def f(v: torch.Tensor) -> torch.Tensor:
            params = model.encode(v.view(shape))
            if index == 1:
                return torch.exp(0.5 * params.logvar[0])
            return params[index][0]
        return f

    with torch.no_grad():
        mean, logvar, logits = model.encode(flat.view(shape))
    j_mean = torch.autograd.functional.jacobian(part(0), flat).double()
    j_std = torch.autograd.functional.jacobian(part(1), flat).double()
    var = torch.exp(logvar[0].double())
    metric = j_mean.T @ torch.diag(1 / var) @ j_mean + j_std.T @ torch.diag(2 / var) @ j_std
    if logits is not None:
        j_logits = torch.autograd.functional.jacobian(part(2), flat).double()
        pi = torch.softmax(logits[0].double(), -1)
        metric = metric + j_logits.T @ (torch.diag(pi) - torch.outer(pi, pi)) @ j_logits
    return metric


def dense_scores(metric: torch.Tensor) -> tuple[float, float, float]:
    """(λ_max, spectral entropy in nats, trace) of a dense (n, n) metric."""
    eigenvalues = torch.linalg.eigvalsh(metric).clamp_min(0)
    largest = float(eigenvalues.max())
    kept = eigenvalues[eigenvalues > 1e-12 * largest]
    p = kept / kept.sum()
    return largest, float(-(p * p.log()).sum()), float(metric.trace())


def assert_matches_dense(model: nn.Module, x: torch.Tensor, scores: PullbackScores) -> None:
    for i in range(x.shape[0]):
        largest, entropy, trace = dense_scores(dense_metric(model, x[i]))
        assert float(scores.largest_eigenvalue[i]) == pytest.approx(largest, rel=1e-4)
        assert float(scores.spectral_entropy[i]) == pytest.approx(entropy, rel=1e-4)
        assert float(scores.trace[i]) == pytest.approx(trace, rel=1e-4)


@pytest.mark.parametrize("categories", [0, 4], ids=["gaussian", "joint"])
def test_factor_gives_the_dense_metric_on_a_tiny_encoder(categories: int) -> None:
    """G = AᵀA entrywise, R = 2D (+ K) rows, and the scores of the dense n × n eigenproblem."""
    model = TinyEncoder(categories=categories)
    x = images(3, seed=1)
    factor = pullback_factor(model, x)
    assert factor.shape == (3, 6 + categories, N_PIXELS)
    for i in range(3):
        dense = dense_metric(model, x[i])
        torch.testing.assert_close(factor[i].T @ factor[i], dense, rtol=1e-9, atol=1e-12 * float(dense.abs().max()))
    scores = pullback_scores(model, x)
    assert scores.eigenvalues.shape == (3, 6 + categories) and scores.eigenvalues.dtype == torch.float64
    assert bool((scores.eigenvalues[:, :-1] >= scores.eigenvalues[:, 1:]).all())  # largest first
    assert bool((scores.spectral_entropy > 0).all()) and bool((scores.spectral_entropy <= math.log(6 + categories)).all())
    assert_matches_dense(model, x, scores)


def test_categorical_block_is_the_categorical_fisher_metric() -> None:
    """The square-root factor S = diag(√π)(I − 1πᵀ) has SᵀS = diag π − ππᵀ, and the categorical
    rows of A are S J_ℓ (so they add J_ℓᵀ (diag π − ππᵀ) J_ℓ to G, nothing else)."""
    pi = torch.softmax(torch.randn(5, generator=torch.Generator().manual_seed(3), dtype=torch.float64), -1)
    root = torch.diag(pi.sqrt()) @ (torch.eye(5, dtype=torch.float64) - torch.outer(torch.ones(5, dtype=torch.float64), pi))
    torch.testing.assert_close(root.T @ root, torch.diag(pi) - torch.outer(pi, pi))

    model = TinyEncoder(categories=4, seed=4)
    x = images(2, seed=5)
    factor = pullback_factor(model, x)
    for i in range(2):
        flat = x[i].reshape(-1)
        j_logits = torch.autograd.functional.jacobian(
            lambda v: model.encode(v.view(1, *SHAPE)).logits[0], flat)  # type: ignore[index]
        with torch.no_grad():
            p = torch.softmax(model.encode(x[i:i + 1]).logits[0], -1)  # type: ignore[index]
        block = j_logits.T @ (torch.diag(p) - torch.outer(p, p)) @ j_logits
        categorical_rows = factor[i, 6:]
        torch.testing.assert_close(categorical_rows.T @ categorical_rows, block, rtol=1e-9, atol=1e-14)


def test_scores_match_the_dense_metric_on_the_small_vae(small_vae, mnist_test) -> None:  # type: ignore[no-untyped-def]
    """Float32 thesis network (Gaussian + categorical when the config has one), 2 MNIST images."""
    x = mnist_test.images[:2]
    scores = pullback_scores(small_vae, x)
    d = small_vae.config.latent_dim
    assert scores.eigenvalues.shape == (2, 2 * d + small_vae.config.categorical_dim)
    assert_matches_dense(small_vae, x, scores)


def test_scores_do_not_depend_on_the_batch_size() -> None:
    model = TinyEncoder(categories=4, seed=6, dtype=torch.float32)
    x = images(10, seed=7, dtype=torch.float32)
    one, eight = pullback_scores(model, x, batch_size=1), pullback_scores(model, x, batch_size=8)
    for name in ("largest_eigenvalue", "spectral_entropy", "trace", "eigenvalues"):
        torch.testing.assert_close(getattr(one, name), getattr(eight, name), rtol=1e-5, atol=1e-9)
    assert one.largest_eigenvalue.shape == (10,)


def test_model_state_is_restored() -> None:
    model = TinyEncoder(categories=2)
    model.train()
    model.hidden.weight.requires_grad_(False)
    pullback_scores(model, images(2, seed=8))
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == [p is not model.hidden.weight for p in model.parameters()]
    assert all(p.grad is None for p in model.parameters())


def test_metric_is_invariant_to_permuting_the_latent_coordinates() -> None:
    model = TinyEncoder(categories=4, seed=9)
    permuted = Permuted(model, torch.tensor([2, 0, 1]), torch.tensor([3, 1, 0, 2]))
    x = images(3, seed=10)
    a, b = pullback_factor(model, x), pullback_factor(permuted, x)
    assert not torch.allclose(a, b)  # the rows themselves move
    torch.testing.assert_close(a.transpose(1, 2) @ a, b.transpose(1, 2) @ b)
    first, second = pullback_scores(model, x), pullback_scores(permuted, x)
    for name in ("largest_eigenvalue", "spectral_entropy", "trace", "eigenvalues"):
        torch.testing.assert_close(getattr(first, name), getattr(second, name))


def test_doubling_the_mean_weights_scales_the_metric_by_four() -> None:
    """With constant σ (J_σ = 0), G = J_μᵀ J_μ / σ²: doubling the mean head doubles J_μ."""
    model = TinyEncoder(constant_logvar=math.log(0.3), seed=11)
    x = images(4, seed=12)
    before = pullback_scores(model, x)
    with torch.no_grad():
        model.mean_head.weight.mul_(2.0)
    after = pullback_scores(model, x)
    torch.testing.assert_close(after.largest_eigenvalue, 4 * before.largest_eigenvalue, rtol=1e-10, atol=0)
    torch.testing.assert_close(after.trace, 4 * before.trace, rtol=1e-10, atol=0)
    torch.testing.assert_close(after.spectral_entropy, before.spectral_entropy, rtol=1e-8, atol=1e-12)
    assert bool((before.eigenvalues[:, 3:] <= 1e-12 * before.largest_eigenvalue[:, None]).all())  # rank ≤ D


def test_bad_input_raises_a_config_error() -> None:
    model = TinyEncoder()
    with pytest.raises(ConfigError, match="shape"):
        pullback_scores(model, torch.rand(2, 1, 7, 7, dtype=torch.float64))
    with pytest.raises(ConfigError, match=r"\(N, C, H, W\)"):
        pullback_scores(model, torch.rand(2, 64, dtype=torch.float64))
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        pullback_factor(model, 2 * torch.ones(1, *SHAPE, dtype=torch.float64))
    with pytest.raises(ConfigError, match="batch_size"):
        pullback_scores(model, images(1, seed=0), batch_size=0)
    with pytest.raises(ConfigError, match="encode"):
        pullback_scores(nn.Linear(2, 2), images(1, seed=0))
