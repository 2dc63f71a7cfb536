"""Adam on a batch of independent problems."""

from __future__ import annotations

import torch


class BatchedAdam:
    """Adam on a batch of independent problems, with torch.optim.Adam's arithmetic.

    Every row has its own moments and step count, so rows can stop early independently.
    """

    def __init__(self, x: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.m = torch.zeros_like(x)
        self.v = torch.zeros_like(x)
        self.t = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)

    def step(self, x: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Return the updated ``x[rows]`` (all rows when ``rows`` is None) for gradient ``grad``."""
        sel: slice | torch.Tensor = slice(None) if rows is None else rows
        m, v = self.m[sel], self.v[sel]
        m.lerp_(grad, 1 - self.beta1)
        v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        self.t[sel] += 1
        t = self.t[sel]
        shape = (-1,) + (1,) * (x.dim() - 1)
        bias1 = (1 - self.beta1 ** t).to(x.dtype).view(shape)
        bias2_sqrt = (1 - self.beta2 ** t).sqrt().to(x.dtype).view(shape)
        if rows is not None:
            self.m[sel], self.v[sel] = m, v
        denom = (v.sqrt() / bias2_sqrt).add_(self.eps)
        return x - (self.lr / bias1) * m / denom
