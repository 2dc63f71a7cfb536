"""Classifier-free metrics of any attack's output (Kuzina et al. 2022), per example.

- ``msssim_input``: MS-SSIM(x, x*) between the source and its adversarial;
- ``msssim_reconstruction``: MS-SSIM(x̂(x), x̂(x*)) between their deterministic reconstructions;
- ``symmetric_kl``: KL(q(z|x) ‖ q(z|x*)) + KL(q(z|x*) ‖ q(z|x)) of the encoder's posteriors,
  the diagonal Gaussians plus, for a model with a categorical latent, the categorical
  softmax(logits) (the two parts are independent, so their divergences add).

**MS-SSIM on small images.** ``pytorch_msssim.ms_ssim`` asserts that the smaller image side
exceeds (win_size − 1)·2⁴ whatever the number of scales, so a 32×32 image passes only with a
1-pixel window. :func:`ms_ssim` therefore runs the library's own per-scale SSIM
(``pytorch_msssim.ssim._ssim``, its Gaussian window and its 2×2 average pooling, combined
exactly as ``ms_ssim`` combines them: ReLU'd contrast-structure terms of the first scales times
the SSIM of the last, each to its weight) with :data:`MSSSIM_SETTINGS`: a 7-pixel Gaussian
window (σ = 1.5) and 3 scales (32, 16 and 8 pixels: the coarsest scale must be at least as wide
as the window), weighted by the first three of the standard five weights (Wang et al. 2003)
renormalised to sum 1, data range 1. With the library's default settings it equals
``pytorch_msssim.ms_ssim`` (tested on 176×176 images).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim
from torch import nn

# the symmetric KL has one implementation, in the attacks layer (the KL attack maximises it);
# its parts are re-exported here for the metric's users
from robust_vae.attacks.objectives import categorical_symmetric_kl as categorical_symmetric_kl
from robust_vae.attacks.objectives import gaussian_symmetric_kl as gaussian_symmetric_kl
from robust_vae.attacks.objectives import posterior_symmetric_kl
from robust_vae.core.errors import ConfigError
from robust_vae.models import attackable

STANDARD_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # pytorch_msssim's default (5 scales)
_FIRST_THREE = STANDARD_WEIGHTS[:3]
MSSSIM_SETTINGS: dict[str, Any] = {
    "win_size": 7,
    "win_sigma": 1.5,
    "weights": [w / sum(_FIRST_THREE) for w in _FIRST_THREE],
    "data_range": 1.0,
    "K": (0.01, 0.03),
}
METRIC_COLUMNS = ["msssim_input", "msssim_reconstruction", "symmetric_kl"]


def ms_ssim(x: torch.Tensor, y: torch.Tensor, *, win_size: int = 7, win_sigma: float = 1.5,
            weights: list[float] | tuple[float, ...] = tuple(MSSSIM_SETTINGS["weights"]),
            data_range: float = 1.0, K: tuple[float, float] = (0.01, 0.03)) -> torch.Tensor:
    """MS-SSIM per image, (N, C, H, W) × 2 -> (N,), with as many scales as ``weights``.

    The coarsest scale, min(H, W) / 2^(scales − 1), must be at least ``win_size`` pixels.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ConfigError(f"ms_ssim takes two (N, C, H, W) batches of one shape, got {tuple(x.shape)} "
                          f"and {tuple(y.shape)}")
    if win_size % 2 != 1:
        raise ConfigError(f"ms_ssim: win_size must be odd, got {win_size}")
    levels = len(weights)
    coarsest = min(x.shape[-2:]) / 2 ** (levels - 1)
    if coarsest < win_size:
        raise ConfigError(f"ms_ssim: {levels} scales of {tuple(x.shape[-2:])} images end at {coarsest:g} pixels, "
                          f"smaller than the {win_size}-pixel window: use fewer scales or a smaller window")
    x, y = x.float(), y.float()
    win = _fspecial_gauss_1d(win_size, win_sigma).repeat([x.shape[1], 1, 1, 1])
    weight = x.new_tensor(list(weights))
    contrast: list[torch.Tensor] = []
    ssim_per_channel = x.new_zeros(0)
    for level in range(levels):
        ssim_per_channel, cs = _ssim(x, y, win=win, data_range=data_range, size_average=False, K=K)
        if level < levels - 1:
            contrast.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    stacked = torch.stack([*contrast, torch.relu(ssim_per_channel)], dim=0)  # (levels, N, C)
    values: torch.Tensor = torch.prod(stacked ** weight.view(-1, 1, 1), dim=0).mean(1)
    return values


@torch.no_grad()
def attack_metrics(model: nn.Module, sources: torch.Tensor, adversarials: torch.Tensor) -> dict[str, np.ndarray]:
    """:data:`METRIC_COLUMNS` per example for sources x and adversarials x* (N, C, H, W) in [0, 1]:
    name -> (N,) float64 arrays."""
    net = attackable(model)
    clean, attacked = net.encode(sources), net.encode(adversarials)
    recon_clean = net.decode(net.deterministic_code(clean))
    recon_attacked = net.decode(net.deterministic_code(attacked))
    values = {
        "msssim_input": ms_ssim(sources, adversarials, **MSSSIM_SETTINGS),
        "msssim_reconstruction": ms_ssim(recon_clean, recon_attacked, **MSSSIM_SETTINGS),
        "symmetric_kl": posterior_symmetric_kl(clean, attacked),
    }
    return {k: v.double().cpu().numpy() for k, v in values.items()}


def metrics_settings() -> dict[str, Any]:
    """What ``run.json`` records about the metrics (the MS-SSIM setting, the KL's parts)."""
    return {
        "msssim": {**{k: v for k, v in MSSSIM_SETTINGS.items() if k != "K"}, "K": list(MSSSIM_SETTINGS["K"]),
                   "scales": len(MSSSIM_SETTINGS["weights"]),
                   "implementation": "pytorch_msssim per-scale _ssim (its ms_ssim asserts side > 16·(win − 1))"},
        "symmetric_kl": "KL(q(z|x)‖q(z|x*)) + KL(q(z|x*)‖q(z|x)): diagonal Gaussians plus the categorical if any",
    }
