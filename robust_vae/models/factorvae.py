"""FactorVAE (Kim & Mnih 2018): the ELBO plus γ times a discriminator's estimate of the total correlation.

The VAE minimises recon + KL + γ·TC(z), where TC(z) = KL(q(z) ‖ q̄(z)) between the aggregate
posterior q(z) and the product of its marginals q̄(z) = Π_j q(z_j). A discriminator D with two
output logits is trained to tell samples of q(z) (class 0) from samples of q̄(z) (class 1), so
that at its optimum D(z)_0 − D(z)_1 = log q(z) − log q̄(z) (the density-ratio trick), and

    TC(z) ≈ E_q(z)[D(z)_0 − D(z)_1]

on the sampled Gaussian codes of the batch. Samples of q̄(z) are made by :func:`permute_dims`:
every latent dimension is shuffled across the batch independently, which keeps each marginal
and breaks every dependence between dimensions. D is the paper's MLP (6 hidden layers of 1000
units, LeakyReLU(0.2), 2 logits) and is trained by Adam (lr 1e-4, betas (0.5, 0.9)) on the
cross-entropy 0.5·[CE(D(z), 0) + CE(D(permute_dims(z)), 1)]; the VAE's Adam has lr 1e-4 and
betas (0.9, 0.999); γ = 10.

**One optimiser, one backward.** The training loop (:mod:`robust_vae.training.vae`) takes one
optimiser from :meth:`FactorVAE.optimizer` and does one backward of :meth:`FactorVAE.objective`
per step. So the discriminator is a submodule (its weights are in the state dict: saved with the
model's weights and in resume checkpoints), the optimiser is one Adam with two parameter groups
(the VAE's, then the discriminator's, each with its own lr and betas), and the objective is
``vae_loss + disc_loss`` where

* the TC term of ``vae_loss`` evaluates D through ``torch.func.functional_call`` with its
  parameters *detached*: its gradient reaches the encoder (through z) but never D;
* ``disc_loss`` sees only *detached* codes: its gradient reaches D and never the VAE.

The two losses thus touch disjoint parameters, and Adam's update of a parameter depends only on
that parameter's own gradient and state, so one step of the combined Adam is exactly a step of
a VAE Adam on ``vae_loss`` (D frozen) plus a step of a D Adam on ``disc_loss``, both from the
same state (as in the paper's training algorithm, D's step uses codes of the VAE before the
VAE's step). Adam's weight decay (``weight_decay``) applies to the VAE group only.

**Deviation: one batch, not two.** The paper draws a second minibatch, encodes it and permutes
*its* codes to get the samples of q̄(z) for the discriminator. The training loop here hands
the model one batch per step, so the permuted samples are made from the same batch's detached
codes. That costs no extra encoder pass and the permuted batch is still a sample of the product
of the batch's marginals; the only difference is that D's real and permuted examples of a step
share their coordinate values (they are dependent), which the paper's second batch avoids. The
VAE's TC estimate itself is as in the paper (D on the batch's own codes).

With a categorical latent configured (the default has none), D sees only the Gaussian part of
the code and the categorical KL enters the loss unweighted. In evaluation (``evaluate_vae``,
under ``torch.no_grad``) the objective is the same sum, so the card's ``objective`` includes the
discriminator's loss; ``tc`` and ``disc_loss`` are also shown in the training progress bar.
Attacks use only the interface (``encode``, ``decode``, ...), which never runs D.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from robust_vae.core.errors import ConfigError
from robust_vae.models.base import LatentParams, LatentVAE, VAEConfig
from robust_vae.models.registry import register_family

#: The VAE's Adam betas (torch's defaults, as in the paper).
VAE_BETAS = (0.9, 0.999)


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each column of ``z`` (N, D) permuted across the batch, independently of the other columns.

    Column j of the result is z[π_j, j] with π_1, ..., π_D independent uniform permutations of
    the N rows (drawn from ``generator``, or the global RNG): the marginal of every dimension is
    kept exactly, the dependence between dimensions is broken (a sample of Π_j q(z_j)).
    """
    if z.dim() != 2:
        raise ValueError(f"permute_dims takes (N, D) codes, got shape {tuple(z.shape)}")
    batch, dims = z.shape
    device = generator.device if generator is not None else z.device
    index = torch.stack([torch.randperm(batch, generator=generator, device=device) for _ in range(dims)], dim=1)
    return z.gather(0, index.to(z.device))


class Discriminator(nn.Module):
    """(N, latent_dim) -> (N, 2) logits: ``layers`` Linear + LeakyReLU(0.2) of width ``hidden``, then Linear(2).

    Logit 0 is "a sample of q(z)", logit 1 "a sample of the product of marginals".
    """

    def __init__(self, latent_dim: int, hidden: int = 1000, layers: int = 6) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        width = latent_dim
        for _ in range(layers):
            modules += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        modules.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*modules)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(z)
        return logits


def log_density_ratio(logits: torch.Tensor) -> torch.Tensor:
    """D(z)_0 − D(z)_1 per row, (N, 2) -> (N,): the estimate of log q(z) − log Π_j q(z_j)."""
    return logits[:, 0] - logits[:, 1]


def tc_estimate(discriminator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """E[D(z)_0 − D(z)_1] over the batch (0-dim), with D's parameters detached.

    The gradient reaches ``z`` (the encoder) and never the discriminator's parameters.
    """
    frozen = {name: p.detach() for name, p in discriminator.named_parameters()}
    frozen.update({name: b for name, b in discriminator.named_buffers()})
    logits: torch.Tensor = functional_call(discriminator, frozen, (z,))
    return log_density_ratio(logits).mean()


def discriminator_loss(discriminator: nn.Module, z: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """0.5·[CE(D(z), 0) + CE(D(permute_dims(z)), 1)] on the *detached* codes ``z`` (N, D); 0-dim.

    The gradient reaches the discriminator's parameters and never the encoder.
    """
    real = z.detach()
    permuted = permute_dims(real, generator)
    logits = discriminator(torch.cat([real, permuted]))
    batch = real.shape[0]
    labels = torch.cat([torch.zeros(batch, dtype=torch.long, device=z.device),
                        torch.ones(batch, dtype=torch.long, device=z.device)])
    # the mean over the 2N rows is the average of the two batch-mean cross-entropies
    return F.cross_entropy(logits, labels)


@dataclass
class FactorVAEConfig(VAEConfig):
    """recon + KL_z + KL_c + γ·TC(z), TC from the discriminator (see the module docstring).

    ``disc_hidden`` × ``disc_layers``: the discriminator's hidden widths (the paper: 6 × 1000);
    ``disc_lr``, ``disc_beta1``, ``disc_beta2``: its Adam (the paper: 1e-4, 0.5, 0.9). The VAE's
    Adam uses ``lr`` and betas (0.9, 0.999).
    """

    categorical_dim: int = 0
    gamma: float = 10.0
    disc_hidden: int = 1000
    disc_layers: int = 6
    disc_lr: float = 1e-4
    disc_beta1: float = 0.5
    disc_beta2: float = 0.9

    def validate(self) -> None:
        super().validate()
        if self.gamma < 0:
            raise ConfigError(f"gamma must be >= 0, got {self.gamma}")
        for name in ("disc_hidden", "disc_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.disc_lr <= 0:
            raise ConfigError(f"disc_lr must be > 0, got {self.disc_lr}")
        for name in ("disc_beta1", "disc_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must lie in [0, 1), got {getattr(self, name)}")


@register_family
class FactorVAE(LatentVAE):
    config: FactorVAEConfig
    config_class = FactorVAEConfig
    family = "factorvae"

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__(config)
        c = self.config
        self.discriminator = Discriminator(c.latent_dim, c.disc_hidden, c.disc_layers)

    def vae_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the discriminator's (encoder and decoder)."""
        disc = {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.parameters() if id(p) not in disc]

    def extra_terms(self, x: torch.Tensor, params: LatentParams, code: torch.Tensor,
                    logits: torch.Tensor) -> dict[str, torch.Tensor]:
        z = code[:, :self.config.latent_dim]  # the Gaussian sample that was decoded
        return {"tc": tc_estimate(self.discriminator, z), "disc_loss": discriminator_loss(self.discriminator, z)}

    def objective(self, terms: dict[str, torch.Tensor], step: int, total_steps: int) -> torch.Tensor:
        vae_loss = terms["recon"] + terms["kl_z"] + terms["kl_c"] + self.config.gamma * terms["tc"]
        return vae_loss + terms["disc_loss"]

    def optimizer(self) -> torch.optim.Optimizer:
        """One Adam, two groups: the VAE's (``lr``, betas (0.9, 0.999), ``weight_decay``) first,
        then the discriminator's (``disc_lr``, ``disc_beta1``, ``disc_beta2``, no decay)."""
        c = self.config
        return torch.optim.Adam([
            {"params": self.vae_parameters(), "lr": c.lr, "betas": VAE_BETAS, "weight_decay": c.weight_decay},
            {"params": list(self.discriminator.parameters()), "lr": c.disc_lr,
             "betas": (c.disc_beta1, c.disc_beta2), "weight_decay": 0.0},
        ])
