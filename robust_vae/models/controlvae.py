"""ControlVAE (Shao et al. 2020): recon + β(t)·KL with β(t) set by a PI controller on the KL.

At every training step, with the batch's KL(t) (Gaussian plus categorical, detached) and the
error e(t) = KL_set − KL(t):

    P(t) = K_p / (1 + exp(e(t)))
    I(t) = I(t−1) − K_i·e(t)          (kept at I(t−1) when β would leave [β_min, β_max]: anti-windup)
    β(t) = clip(P(t) + I(t) + β_min, β_min, β_max)

so β rises while the KL is above the set point and falls while it is below. K_p = 0.01,
K_i = 0.0001, β_min = 0, β_max = 1 and β(0) = 0 are Shao et al.'s values. (The L-VAE paper
quotes K_i = −0.001 because its code writes the integral as I += K_i·e; with the sign of the
formula above that is a gain of 0.001.)

The controller state (β and the integral) lives in buffers, so it is in the state dict: saved
in training checkpoints (a resumed run continues the controller exactly) and with the weights.
It only moves in training mode with gradients on; evaluation reads the last β.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robust_vae.core.errors import ConfigError
from robust_vae.models.base import LatentVAE, VAEConfig
from robust_vae.models.registry import register_family


@dataclass
class ControlVAEConfig(VAEConfig):
    """recon + β(t)·(KL_z + KL_c), β(t) from the PI controller (see the module docstring).

    ``kl_set`` = 25 nats for MNIST: β is capped at β_max = 1, so the controller can only hold
    KLs at or above what the plain ELBO reaches (the shipped β = 1 VAEs settle at about 19 nats);
    25 nats sits clearly above that, so β settles strictly inside (0, 1) and the controller,
    not the cap, sets the KL. (Shao et al. pick the set point per dataset the same way; the
    L-VAE paper used 18 on dSprites.)
    """

    categorical_dim: int = 0
    kl_set: float = 25.0
    kp: float = 0.01
    ki: float = 0.0001
    beta_min: float = 0.0
    beta_max: float = 1.0
    beta_init: float = 0.0

    def validate(self) -> None:
        super().validate()
        if self.kl_set < 0:
            raise ConfigError(f"kl_set must be >= 0, got {self.kl_set}")
        if self.kp < 0 or self.ki < 0:
            raise ConfigError(f"kp and ki must be >= 0, got {self.kp} and {self.ki}")
        if not 0 <= self.beta_min <= self.beta_max:
            raise ConfigError(f"need 0 <= beta_min <= beta_max, got {self.beta_min} and {self.beta_max}")
        if not self.beta_min <= self.beta_init <= self.beta_max:
            raise ConfigError(f"beta_init must lie in [beta_min, beta_max], got {self.beta_init}")


@register_family
class ControlVAE(LatentVAE):
    config: ControlVAEConfig
    config_class = ControlVAEConfig
    family = "controlvae"

    controller_beta: torch.Tensor
    controller_integral: torch.Tensor

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__(config)
        self.register_buffer("controller_beta", torch.tensor(float(self.config.beta_init)))
        self.register_buffer("controller_integral", torch.tensor(0.0))

    @torch.no_grad()
    def update_controller(self, kl: torch.Tensor) -> torch.Tensor:
        """One PI step on the observed KL; returns (and stores) the new β."""
        c = self.config
        error = c.kl_set - kl.detach().to(self.controller_beta.dtype)
        proportional = c.kp / (1.0 + torch.exp(error))
        integral = self.controller_integral - c.ki * error
        raw = proportional + integral + c.beta_min
        if bool((raw >= c.beta_min) & (raw <= c.beta_max)):
            self.controller_integral.copy_(integral)  # anti-windup: integrate only inside the range
        self.controller_beta.copy_(raw.clamp(c.beta_min, c.beta_max))
        return self.controller_beta.clone()

    def card_state(self) -> dict[str, float]:
        """The controller's β and integral term where training left them."""
        return {"controller_beta": float(self.controller_beta), "controller_integral": float(self.controller_integral)}

    def objective(self, terms: dict[str, torch.Tensor], step: int, total_steps: int) -> torch.Tensor:
        kl = terms["kl_z"] + terms["kl_c"]
        if self.training and torch.is_grad_enabled():
            beta = self.update_controller(kl)
        else:
            beta = self.controller_beta
        return terms["recon"] + beta * kl
