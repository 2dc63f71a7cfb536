"""The thesis architecture (protocol §2), the model interface, and the ELBO pieces.

Every family is a :class:`LatentVAE` subclass that only changes ``objective``. Attacks and
evaluation use only the interface methods ``encode``, ``decode``, ``reconstruct``,
``relaxed_reconstruct`` and ``attack_code``, so any ``torch.nn.Module`` that implements
them can be attacked.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from robust_vae.core.errors import ConfigError

SUPPORTED_IMAGE_SIZES = (32, 64, 128)


def conv_widths(image_size: int) -> list[int]:
    """Output channels of the encoder's stride-2 4×4 convolutions for ``image_size``.

    32×32 is the thesis network (32, 32, 64: three halvings to 4×4); each doubling adds one
    64-channel layer, which at 64×64 gives Burgess et al. (2018)'s four-layer dSprites encoder.
    """
    layers = int(math.log2(image_size // 4))
    return [32, 32, 64] + [64] * (layers - 3)


class LatentParams(NamedTuple):
    """Posterior parameters of a batch.

    mean, logvar: (N, latent_dim); logits: (N, categorical_dim) or None without a categorical.
    """

    mean: torch.Tensor
    logvar: torch.Tensor
    logits: torch.Tensor | None


@dataclass
class VAEConfig:
    """Entangled VAE (protocol §2): standard ELBO, 10 Gaussian + one 10-way Concrete latent.

    Training values (lr, batch, steps, weight decay) live here too, so that one dataclass
    fully specifies a zoo checkpoint.
    """

    latent_dim: int = 10
    categorical_dim: int = 10
    temperature: float = 0.1
    hidden_dim: int = 128
    image_size: int = 32
    channels: int = 1
    lr: float = 1e-4
    batch_size: int = 64
    steps: int = 100_000
    weight_decay: float = 0.0
    # weight of the reconstruction term in the training objective (not in the ELBO or the card's
    # recon_bce): 4 trains 32×32 renders of 64×64 data as if each pixel were the 4 it replaces,
    # so the papers' β, γ and capacities (set for 64×64) keep their meaning
    recon_scale: float = 1.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.latent_dim < 1:
            raise ConfigError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.categorical_dim < 0 or self.categorical_dim == 1:
            raise ConfigError(f"categorical_dim must be 0 or >= 2, got {self.categorical_dim}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.image_size not in SUPPORTED_IMAGE_SIZES:
            raise ConfigError(f"image_size must be one of {', '.join(map(str, SUPPORTED_IMAGE_SIZES))} (the thesis "
                              f"network at 32, one more stride-2 layer per doubling), got {self.image_size}")
        if self.channels < 1:
            raise ConfigError(f"channels must be >= 1, got {self.channels}")
        for name in ("lr", "batch_size", "steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not self.recon_scale > 0:
            raise ConfigError(f"recon_scale must be > 0, got {self.recon_scale}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VAEConfig:
        if not isinstance(values, dict):
            raise ConfigError(f"{cls.__name__} needs a mapping of field values, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"{cls.__name__} has no field(s) {sorted(unknown)}; valid: {sorted(known)}")
        try:
            return cls(**values)
        except TypeError as error:
            raise ConfigError(f"{cls.__name__}: {error}") from None


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per dimension: (N, D) -> (N, D)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)


def categorical_kl(logits: torch.Tensor) -> torch.Tensor:
    """Analytic KL(q || Uniform(K)) = Σ q_i log(q_i K): (N, K) -> (N,)."""
    log_q = F.log_softmax(logits, dim=-1)
    return (log_q.exp() * (log_q + math.log(logits.shape[-1]))).sum(-1)


def gaussian_kl_between(
    mean_a: torch.Tensor, logvar_a: torch.Tensor, mean_b: torch.Tensor, logvar_b: torch.Tensor
) -> torch.Tensor:
    """KL(N_a || N_b) for diagonal Gaussians, summed over dimensions: (N, D) -> (N,)."""
    return 0.5 * (
        logvar_b - logvar_a + (logvar_a.exp() + (mean_a - mean_b).pow(2)) / logvar_b.exp() - 1.0
    ).sum(-1)


def categorical_kl_between(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """KL(Cat(a) || Cat(b)): (N, K) -> (N,)."""
    log_a = F.log_softmax(logits_a, dim=-1)
    log_b = F.log_softmax(logits_b, dim=-1)
    return (log_a.exp() * (log_a - log_b)).sum(-1)


class Encoder(nn.Module):
    """(N, C, S, S) -> (N, out_dim): stride-2 4×4 convs down to 4×4 (see :func:`conv_widths`),
    Dense ``hidden_dim``, linear head."""

    def __init__(self, channels: int, hidden_dim: int, out_dim: int, image_size: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = channels
        for out in conv_widths(image_size):
            layers += [nn.Conv2d(width, out, 4, stride=2, padding=1), nn.ReLU()]
            width = out
        self.convs = nn.Sequential(*layers)
        self.hidden = nn.Linear(width * 4 * 4, hidden_dim)
        self.head = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x).flatten(1)
        out: torch.Tensor = self.head(F.relu(self.hidden(h)))
        return out


class Decoder(nn.Module):
    """(N, in_dim) -> (N, C, S, S) logits: Dense ``hidden_dim``, Dense 64·4·4, then the
    encoder's convolutions mirrored as 4×4 stride-2 transposed convs."""

    def __init__(self, in_dim: int, hidden_dim: int, channels: int, image_size: int = 32) -> None:
        super().__init__()
        widths = conv_widths(image_size)
        self.dense = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, widths[-1] * 4 * 4), nn.ReLU()
        )
        self.top = widths[-1]
        outs = [*reversed(widths[:-1]), channels]
        layers: list[nn.Module] = []
        width = widths[-1]
        for i, out in enumerate(outs):
            layers.append(nn.ConvTranspose2d(width, out, 4, stride=2, padding=1))
            if i < len(outs) - 1:
                layers.append(nn.ReLU())
            width = out
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.deconvs(self.dense(z).view(-1, self.top, 4, 4))
        return logits


class LatentVAE(nn.Module):
    """VAE with Gaussian latents and an optional Concrete categorical (thesis architecture).

    Subclasses set ``config_class`` and override :meth:`objective`.
    """

    config_class: ClassVar[type[VAEConfig]] = VAEConfig
    family: ClassVar[str] = "vae"
    #: False for a family whose code is deterministic (the autoencoder): ``sample_code`` returns the mean.
    stochastic: ClassVar[bool] = True
    #: True for a family conditioned on the class label (``cond-betavae``): training and
    #: evaluation then pass each batch's labels to :meth:`batch_terms`, and attacks need a threat
    #: model that says where the label comes from (:mod:`robust_vae.models.conditional`).
    needs_labels: ClassVar[bool] = False
    #: The decoder likelihood the objective uses, as written on the model card.
    likelihood: ClassVar[str] = "Bernoulli (BCE summed over pixels, mean over batch)"

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.config_class()
        c = self.config
        self.encoder = Encoder(self.encoder_channels(), c.hidden_dim, self.encoder_outputs(), c.image_size)
        self.decoder = Decoder(self.decoder_inputs(), c.hidden_dim, c.channels, c.image_size)

    def encoder_channels(self) -> int:
        """Input channels of the encoder: the image's (a conditional family adds its label's)."""
        return self.config.channels

    def encoder_outputs(self) -> int:
        """Width of the encoder's linear head: mean and logvar per Gaussian latent, plus the logits."""
        return 2 * self.config.latent_dim + self.config.categorical_dim

    def decoder_inputs(self) -> int:
        """Width of the decoder's input: the Gaussian latents plus the categorical (or the label's one-hot)."""
        return self.config.latent_dim + self.config.categorical_dim

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images this model takes and reconstructs (from its config)."""
        return self.config.channels, self.config.image_size, self.config.image_size

    # ----- the model interface (what attacks and evaluation use) -----
    def encode(self, x: torch.Tensor) -> LatentParams:
        """(N, C, H, W) in [0, 1] -> posterior parameters (C, H, W from the config)."""
        self.check_input(x)
        h = self.encoder(x)
        d = self.config.latent_dim
        logits = h[:, 2 * d:] if self.config.categorical_dim else None
        return LatentParams(h[:, :d], h[:, d:2 * d], logits)

    def check_input(self, x: torch.Tensor) -> None:
        """A one-line error unless ``x`` is (N, C, H, W) with C, H, W of the config."""
        c = self.config
        if x.dim() != 4 or tuple(x.shape[1:]) != (c.channels, c.image_size, c.image_size):
            raise ConfigError(f"inputs have shape {tuple(x.shape)} but this {self.family} takes "
                              f"(N, {c.channels}, {c.image_size}, {c.image_size}): resize them "
                              "(robust_vae.load_dataset gives that shape)")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent_dim + categorical_dim) -> (N, C, S, S) images in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def deterministic_code(self, params: LatentParams) -> torch.Tensor:
        """Decoder input at evaluation: Gaussian mean ⊕ one-hot argmax of the categorical."""
        if params.logits is None:
            return params.mean
        one_hot = F.one_hot(params.logits.argmax(-1), params.logits.shape[-1]).to(params.mean.dtype)
        return torch.cat([params.mean, one_hot], dim=-1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction (means, argmax one-hot): (N, C, S, S) -> (N, C, S, S)."""
        return self.decode(self.deterministic_code(self.encode(x)))

    def relaxed_reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable stand-in for :meth:`reconstruct`: softmax(logits / τ) instead of argmax."""
        params = self.encode(x)
        if params.logits is None:
            return self.decode(params.mean)
        soft = F.softmax(params.logits / self.config.temperature, dim=-1)
        return self.decode(torch.cat([params.mean, soft], dim=-1))

    def attack_code(self, x: torch.Tensor) -> torch.Tensor:
        """The thesis's φ(x): Gaussian means ⊕ categorical logits, (N, latent_dim + K)."""
        params = self.encode(x)
        if params.logits is None:
            return params.mean
        return torch.cat([params.mean, params.logits], dim=-1)

    # ----- training -----
    def sample_code(self, params: LatentParams) -> torch.Tensor:
        """Reparameterised Gaussian sample ⊕ Concrete (Gumbel-softmax) sample at temperature τ."""
        std = torch.exp(0.5 * params.logvar)
        z = params.mean + std * torch.randn_like(std)
        if params.logits is None:
            return z
        uniform = torch.rand_like(params.logits).clamp_(1e-10, 1.0 - 1e-10)
        gumbel = -torch.log(-torch.log(uniform))
        c = F.softmax((params.logits + gumbel) / self.config.temperature, dim=-1)
        return torch.cat([z, c], dim=-1)

    def loss_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One stochastic pass: batch-mean BCE (summed over pixels) and batch-mean KLs.

        ``recon``, ``kl_z`` and ``kl_c`` are always there; a family adds its own scalar terms
        through :meth:`extra_terms`, which sees the same pass (the code sample that was decoded).
        """
        params = self.encode(x)
        return self.pass_terms(x, params, self.sample_code(params))

    def pass_terms(self, x: torch.Tensor, params: LatentParams, code: torch.Tensor) -> dict[str, torch.Tensor]:
        """The terms of one pass whose posterior is ``params`` and whose decoder input is ``code``
        (a sample of it; a conditional family appends the label's one-hot)."""
        logits = self.decoder(code)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
        terms = {"recon": recon, "kl_z": gaussian_kl(params.mean, params.logvar).sum(-1).mean()}
        if params.logits is not None:
            terms["kl_c"] = categorical_kl(params.logits).mean()
        else:
            terms["kl_c"] = torch.zeros((), device=x.device)
        terms.update(self.extra_terms(x, params, code, logits))
        return terms

    def batch_terms(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """:meth:`loss_terms` of one batch as training and evaluation compute them: ``labels``
        (N,) int64 are the batch's classes, which only a family that :attr:`needs_labels` uses
        (it overrides this); every other family ignores them, so its results do not change."""
        return self.loss_terms(x)

    def extra_terms(self, x: torch.Tensor, params: LatentParams, code: torch.Tensor,
                    logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Family-specific scalar terms of one pass (none here).

        x: the batch; params: its posterior; code: the decoder input that was sampled from it
        (Gaussian sample ⊕ Concrete sample); logits: the decoder's output logits. Every value
        must be a 0-dim tensor (training shows them in its progress bar).
        """
        return {}

    def card_state(self) -> dict[str, float]:
        """Scalars of the family's state that a card should show (a controller's β; none here)."""
        return {}

    def latent_kl_per_dim(self, params: LatentParams) -> torch.Tensor:
        """KL(q(z_j|x) ‖ N(0, 1)) per Gaussian dimension, (N, D): the cards' ``kl_per_dim``."""
        return gaussian_kl(params.mean, params.logvar)

    def weighted_terms(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``terms`` with the reconstruction weighted by ``config.recon_scale``: what the
        family's :meth:`objective` is given in training (the same dict when the scale is 1)."""
        scale = self.config.recon_scale
        return terms if scale == 1.0 else dict(terms, recon=terms["recon"] * scale)

    def objective(self, terms: dict[str, torch.Tensor], step: int, total_steps: int) -> torch.Tensor:
        """The quantity training minimises; the plain VAE minimises the negative ELBO."""
        return terms["recon"] + terms["kl_z"] + terms["kl_c"]

    def optimizer(self) -> torch.optim.Optimizer:
        """Adam as in the thesis; ``weight_decay`` is Adam's L2 term (torch semantics)."""
        return torch.optim.Adam(self.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)


def linear_capacity(step: int, total_steps: int, capacity_max: float) -> float:
    """Capacity schedule C(step) = capacity_max · min(step / total_steps, 1) (Burgess; JointVAE)."""
    if total_steps <= 0:
        return capacity_max
    return capacity_max * min(step / total_steps, 1.0)
