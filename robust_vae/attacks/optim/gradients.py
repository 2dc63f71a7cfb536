"""Per-example losses and their gradients with respect to the images."""

from __future__ import annotations

from collections.abc import Callable

import torch

# (points (B, C, H, W), indices of the problems (B,)) -> per-problem loss (B,)
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def loss_and_gradient(loss_fn: LossFn, x: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-problem losses ``loss_fn(x, rows)`` (B,) and their gradients with respect to
    ``x`` (B, C, H, W), detached.

    Every problem's loss depends on its own row of ``x`` only, so the gradient of their sum is
    each problem's own gradient. Gradients are on even inside ``torch.no_grad()``.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = loss_fn(x, rows)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad
