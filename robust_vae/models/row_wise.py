"""A wrapper that runs a model one example at a time, so its outputs cannot depend on the batch.

A batched convolution on CPU rounds differently at different batch sizes, and an optimiser
such as L-BFGS-B amplifies that last bit; through :class:`RowWise` every example's output is
bitwise the same whatever it is batched with (the attacks' ``row_by_row`` option, and the
tests that check batch independence exactly). It costs the batching.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from robust_vae.models.base import LatentParams


def _concat(rows: list[LatentParams]) -> LatentParams:
    logits = [r.logits for r in rows if r.logits is not None]
    return LatentParams(torch.cat([r.mean for r in rows]), torch.cat([r.logvar for r in rows]),
                        torch.cat(logits) if logits else None)


class RowWise(nn.Module):
    """``model`` (any :class:`~robust_vae.models.AttackableModel`) with every interface method
    applied row by row: (N, ...) -> the N single-row results, concatenated."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model: Any = model  # any module with the interface methods (typed loosely: tests wrap toys)

    @staticmethod
    def _rows(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.cat([fn(x[i:i + 1]) for i in range(x.shape[0])])

    def encode(self, x: torch.Tensor) -> LatentParams:
        """(N, C, H, W) -> the posterior parameters of each image encoded alone."""
        return _concat([self.model.encode(x[i:i + 1]) for i in range(x.shape[0])])

    def deterministic_code(self, params: LatentParams) -> torch.Tensor:
        """Elementwise already (means ⊕ one-hot argmax): the model's own."""
        code: torch.Tensor = self.model.deterministic_code(params)
        return code

    def attack_code(self, x: torch.Tensor) -> torch.Tensor:
        return self._rows(self.model.attack_code, x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._rows(self.model.decode, z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self._rows(self.model.reconstruct, x)

    def relaxed_reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self._rows(self.model.relaxed_reconstruct, x)
