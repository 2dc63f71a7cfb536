"""Where a module's tensors live: the one helper every layer uses."""

from __future__ import annotations

import torch
from torch import nn

from robust_vae.core.errors import ConfigError


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a module without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of ``model``'s first floating-point parameter (float32 without one): what inputs
    are cast to, so a float64 model is differentiated in float64."""
    for p in model.parameters():
        if torch.is_floating_point(p):
            return p.dtype
    return torch.float32


def check_device(device: str, what: str = "--device") -> torch.device:
    """``device`` as a ``torch.device`` that can be used here, or a one-line error with the fix."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{what} {device!r} is not a torch device: use cpu or cuda (cuda:N)") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{what} {device!r} requested but CUDA is not available: use cpu")
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"{what} {device!r} is not supported: use cpu or cuda (cuda:N)")
    return parsed
