"""The protocol's class pairs (§4 step 1): which test images are attacked towards which."""

from __future__ import annotations

import torch


def class_pairs(
    labels: torch.Tensor, source: int, target: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the protocol's (source, target) pairs for one ordered class pair (§4 step 1).

    Shuffles the indices of class ``source`` and of class ``target`` with a generator seeded
    by (seed, source, target) and pairs them one to one; returns two (min(n_s, n_t),) int64
    tensors. The seed mixing makes every cell's sample independent of which cells run.
    """
    generator = torch.Generator().manual_seed(seed * 10_007 + source * 101 + target)
    source_idx = torch.nonzero(labels == source).flatten()
    target_idx = torch.nonzero(labels == target).flatten()
    source_idx = source_idx[torch.randperm(len(source_idx), generator=generator)]
    target_idx = target_idx[torch.randperm(len(target_idx), generator=generator)]
    n = min(len(source_idx), len(target_idx))
    return source_idx[:n], target_idx[:n]
