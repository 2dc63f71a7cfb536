"""Attack-free robustness scores from the encoder's pullback metric (Khan & Storkey 2023).

The posterior family's Fisher–Rao metric, pulled back through the encoder, measures how far
the posterior q(z|x) moves per unit of input change: ``δᵀ G(x) δ`` is the (second-order) KL
between q(z|x) and q(z|x + δ) times 2. For the diagonal Gaussian N(μ(x), diag σ²(x)),

    G(x) = J_μᵀ diag(1/σ²) J_μ + J_σᵀ diag(2/σ²) J_σ            (n × n, n = C·H·W pixels),

and a model with a K-way categorical posterior softmax(ℓ(x)) adds the categorical family's
Fisher metric in logit coordinates, F = diag π − ππᵀ, pulled back: J_ℓᵀ (diag π − ππᵀ) J_ℓ.
A large top eigenvalue means one input direction moves the posterior a lot (an attack
direction); a low spectral entropy means the sensitivity is concentrated in few directions.

**Through the latent side.** G = AᵀA with the factor A (R × n), R = 2D (+ K):

- rows diag(1/σ) J_μ (D rows);
- rows diag(√2/σ) J_σ = J_logvar / √2, since σ = exp(logvar / 2) gives J_σ = diag(σ/2) J_logvar
  (D rows);
- with a categorical, rows diag(√π)(I − 1πᵀ) J_ℓ: row k is √π_k ∇ log π_k, the gradient of
  ``log_softmax(ℓ)_k`` (K rows). This square-root factor S = diag(√π)(I − 1πᵀ) satisfies
  SᵀS = (I − π1ᵀ) diag π (I − 1πᵀ) = diag π − 2ππᵀ + ππᵀ·(1ᵀπ) = diag π − ππᵀ, as Σπ = 1.

Each row is one batched vector–Jacobian product (one backward pass per latent coordinate over
the whole batch: the examples are independent in eval mode), and the nonzero eigenvalues of
G are those of the small (R × R) Gram matrix A Aᵀ, computed in float64. No n × n matrix is
ever built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robust_vae.attacks.base import as_attackable, check_images, frozen
from robust_vae.core.devices import model_device, model_dtype
from robust_vae.core.errors import ConfigError
from robust_vae.models.base import LatentParams

#: Eigenvalues at most this fraction of the largest (times R) count as numerically zero in the
#: spectral entropy: float64 round-off of the Gram, far below any real direction's weight.
ZERO_EIGENVALUE_TOLERANCE = torch.finfo(torch.float64).eps


@dataclass
class PullbackScores:
    """Per-example scores of the pullback metric G(x), float64 on the CPU.

    largest_eigenvalue, spectral_entropy, trace: (N,); eigenvalues: (N, R), all R eigenvalues
    of the Gram A Aᵀ (the nonzero spectrum of G padded with zeros), largest first, negatives
    from round-off clamped to 0. ``spectral_entropy`` is −Σ p_i ln p_i (natural log, nats) with
    p_i = λ_i / Σ_j λ_j over the nonzero eigenvalues (0 when G = 0); at most ln R.
    ``trace`` is tr G = ‖A‖²_F, the summed squared sensitivity of every posterior coordinate.
    """

    largest_eigenvalue: torch.Tensor
    spectral_entropy: torch.Tensor
    trace: torch.Tensor
    eigenvalues: torch.Tensor


def _check_model(model: nn.Module) -> None:
    if not callable(getattr(model, "encode", None)):
        raise ConfigError(f"pullback scores need a model with encode(x) -> LatentParams; "
                          f"{type(model).__name__} has no encode method")


def _check_params(params: object, n: int) -> LatentParams:
    """``params`` as LatentParams with mean/logvar (n, D) and logits (n, K) or None, or an error."""
    if not isinstance(params, tuple) or len(params) != 3:
        raise ConfigError(f"encode must return LatentParams(mean, logvar, logits), got {type(params).__name__}")
    mean, logvar, logits = params
    if not isinstance(mean, torch.Tensor) or mean.dim() != 2 or mean.shape[0] != n:
        raise ConfigError(f"encode's mean must be ({n}, D), got {getattr(mean, 'shape', type(mean).__name__)}")
    if not isinstance(logvar, torch.Tensor) or logvar.shape != mean.shape:
        raise ConfigError(f"encode's logvar must have the mean's shape {tuple(mean.shape)}, "
                          f"got {getattr(logvar, 'shape', type(logvar).__name__)}")
    if logits is not None and (not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != n):
        raise ConfigError(f"encode's logits must be ({n}, K) or None, "
                          f"got {getattr(logits, 'shape', type(logits).__name__)}")
    return LatentParams(mean, logvar, logits)


def _factor_rows(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The factor A of each example of ``x`` (N, C, H, W), already on the model's device and
    dtype: (N, R, n). The model must already be frozen."""
    n_examples = x.shape[0]
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        params = _check_params(as_attackable(model).encode(x), n_examples)
        std = torch.exp(0.5 * params.logvar.detach())
        # outputs[:, r] is differentiated; scale[:, r] multiplies its gradient (detached).
        outputs = [params.mean, params.logvar / math.sqrt(2.0)]
        scales = [1.0 / std, torch.ones_like(std)]
        if params.logits is not None:
            outputs.append(F.log_softmax(params.logits, dim=-1))
            scales.append(F.softmax(params.logits.detach(), dim=-1).sqrt())
        stacked = torch.cat(outputs, dim=1)
        scale = torch.cat(scales, dim=1)
        count = stacked.shape[1]
        if not stacked.requires_grad:  # an encoder that ignores its input: G = 0
            return x.new_zeros((n_examples, count, x[0].numel()))
        rows = []
        for r in range(count):
            # Σ over the batch: example i's input only reaches example i's output.
            (grad,) = torch.autograd.grad(stacked[:, r].sum(), x, retain_graph=r < count - 1, allow_unused=True)
            row = grad.flatten(1) if grad is not None else x.new_zeros((n_examples, x[0].numel()))
            rows.append(row * scale[:, r:r + 1])
    return torch.stack(rows, dim=1).detach()


def _prepare(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    _check_model(model)
    check_images(x, "images", model)
    return x.to(model_device(model), model_dtype(model))


def pullback_factor(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Rows of the factor A with G(x) = AᵀA, per example: (N, C, H, W) -> (N, R, n).

    n = C·H·W; R = 2D for a Gaussian posterior, 2D + K with a K-way categorical (rows in that
    order: diag(1/σ) J_μ, diag(√2/σ) J_σ, diag(√π)(I − 1πᵀ) J_ℓ; see the module docstring).
    Computed on the model's device in its dtype; the model runs in eval mode with parameter
    gradients off (restored after).
    """
    x = _prepare(model, x)
    with frozen(model):
        return _factor_rows(model, x)


def _scores_from_factor(factor: torch.Tensor) -> PullbackScores:
    """Scores of factors (N, R, n) from the eigenvalues of their float64 Gram (N, R, R)."""
    a = factor.to(torch.float64)
    gram = a @ a.transpose(1, 2)
    eigenvalues = torch.linalg.eigvalsh(gram).clamp_min(0.0).flip(-1)  # largest first
    largest = eigenvalues[:, 0]
    cutoff = largest * (ZERO_EIGENVALUE_TOLERANCE * eigenvalues.shape[1])
    nonzero = eigenvalues > cutoff.unsqueeze(1)
    kept = torch.where(nonzero, eigenvalues, torch.zeros_like(eigenvalues))
    total = kept.sum(1, keepdim=True)
    p = kept / total.clamp_min(torch.finfo(torch.float64).tiny)
    terms = torch.where(nonzero, -p * torch.log(torch.where(nonzero, p, torch.ones_like(p))), torch.zeros_like(p))
    trace = torch.diagonal(gram, dim1=1, dim2=2).sum(1)
    return PullbackScores(largest_eigenvalue=largest.cpu(), spectral_entropy=terms.sum(1).cpu(),
                          trace=trace.cpu(), eigenvalues=eigenvalues.cpu())


def pullback_scores(model: nn.Module, x: torch.Tensor, *, batch_size: int = 64) -> PullbackScores:
    """Largest eigenvalue, spectral entropy (nats) and trace of G(x) per example of ``x``
    (N, C, H, W) in [0, 1], ``batch_size`` examples per pass (the results do not depend on it).

    One pass costs R backward passes through the encoder (R = 2D or 2D + K) and an (R × R)
    float64 eigen-decomposition per example; memory is batch_size · R · n factor entries.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    x = _prepare(model, x)
    parts: list[PullbackScores] = []
    with frozen(model):
        for start in range(0, x.shape[0], batch_size):
            parts.append(_scores_from_factor(_factor_rows(model, x[start:start + batch_size])))
    if not parts:
        empty = torch.zeros(0, dtype=torch.float64)
        return PullbackScores(empty, empty.clone(), empty.clone(), torch.zeros((0, 0), dtype=torch.float64))
    return PullbackScores(
        largest_eigenvalue=torch.cat([p.largest_eigenvalue for p in parts]),
        spectral_entropy=torch.cat([p.spectral_entropy for p in parts]),
        trace=torch.cat([p.trace for p in parts]),
        eigenvalues=torch.cat([p.eigenvalues for p in parts]),
    )
