"""Conditional β-VAE: the class label enters the encoder and the decoder (β = 10, MNIST study).

The thesis network with the label as an input on both sides:

* encoder q(z | x, y): the one-hot label is broadcast to ``num_classes`` constant H×W planes,
  concatenated to the image's channels (1 + 10 input channels on MNIST), then the thesis
  convolutions, Dense 128 and a head with the mean and log-variance of 10 Gaussian latents;
* decoder p(x | z, y): its input is z ⊕ one-hot(y) (10 + 10 values), then the thesis decoder.

There is no categorical latent (``categorical_dim`` = 0): the label plays that role. The loss
is the β-VAE's, recon + β·KL_z with β = 10. A label is an (N,) int64 class or an (N, K) soft
one-hot (rows of probabilities, e.g. a classifier's softmax), in every method that takes one.

Without a label the model is not defined, so ``encode(x)`` (and ``reconstruct``,
``attack_code``, ...) refuse with a one-line error: attacks and evaluations see it through a
threat model of :mod:`robust_vae.models.conditional` that says where the label comes from
(``true``: the source's true label; ``classifier``: the evaluation classifier's prediction).
``decode(z)`` takes the full decoder input z ⊕ one-hot(y), (N, latent_dim + num_classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robust_vae.core.errors import ConfigError
from robust_vae.models.base import LatentParams
from robust_vae.models.betavae import BetaVAE, BetaVAEConfig
from robust_vae.models.registry import register_family


def label_one_hot(labels: torch.Tensor, num_classes: int, rows: int, like: torch.Tensor) -> torch.Tensor:
    """(N,) int64 classes or an (N, K) soft one-hot -> (N, K) in the dtype and device of ``like``;
    a one-line error for any other shape or an out-of-range class."""
    if not isinstance(labels, torch.Tensor):
        raise ConfigError(f"labels must be a tensor of {rows} classes or a ({rows}, {num_classes}) one-hot, "
                          f"got {type(labels).__name__}")
    if labels.dim() == 1 and not torch.is_floating_point(labels) and labels.shape[0] == rows:
        if rows and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ConfigError(f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, "
                              f"{int(labels.max())}]")
        return F.one_hot(labels.to(like.device), num_classes).to(like.dtype)
    if labels.dim() == 2 and tuple(labels.shape) == (rows, num_classes) and torch.is_floating_point(labels):
        return labels.to(like.device, like.dtype)
    raise ConfigError(f"labels must be ({rows},) int64 classes or a ({rows}, {num_classes}) floating one-hot, "
                      f"got {tuple(labels.shape)} {labels.dtype}")


@dataclass
class CondBetaVAEConfig(BetaVAEConfig):
    """recon + β·KL_z with β = 10; 10 Gaussian latents, the label (``num_classes`` = 10) as input
    to the encoder and the decoder, no categorical latent."""

    beta: float = 10.0
    categorical_dim: int = 0
    num_classes: int = 10

    def validate(self) -> None:
        super().validate()
        if self.categorical_dim != 0:
            raise ConfigError("the conditional β-VAE has no categorical latent (categorical_dim must be 0): "
                              "the label plays that role")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {self.num_classes}")


@register_family
class CondBetaVAE(BetaVAE):
    """β-VAE conditioned on the class label (see the module docstring)."""

    config: CondBetaVAEConfig
    config_class = CondBetaVAEConfig
    family = "cond-betavae"
    needs_labels = True

    def encoder_channels(self) -> int:
        return self.config.channels + self.config.num_classes

    def decoder_inputs(self) -> int:
        return self.config.latent_dim + self.config.num_classes

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def one_hot(self, labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``labels`` for the rows of ``like`` as an (N, K) one-hot (soft rows kept as they are)."""
        return label_one_hot(labels, self.config.num_classes, like.shape[0], like)

    # ----- the conditional interface: every method takes the label explicitly -----
    def encode_with(self, x: torch.Tensor, labels: torch.Tensor) -> LatentParams:
        """q(z | x, y): (N, C, H, W), labels (N,) or (N, K) -> mean, logvar (N, D), no logits."""
        self.check_input(x)
        y = self.one_hot(labels, x)
        planes = y[:, :, None, None].expand(-1, -1, *x.shape[2:])
        h = self.encoder(torch.cat([x, planes], dim=1))
        d = self.config.latent_dim
        return LatentParams(h[:, :d], h[:, d:2 * d], None)

    def decode_with(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """p(x | z, y): (N, D), labels (N,) or (N, K) -> (N, C, H, W) images in [0, 1]."""
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise ConfigError(f"decode_with takes codes of shape (N, {self.config.latent_dim}), got {tuple(z.shape)}")
        return torch.sigmoid(self.decoder(torch.cat([z, self.one_hot(labels, z)], dim=-1)))

    def reconstruct_with(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction under ``labels``: decode_with(mean of q(z | x, y), y)."""
        return self.decode_with(self.encode_with(x, labels).mean, labels)

    # ----- the plain interface needs a label -----
    def encode(self, x: torch.Tensor) -> LatentParams:
        raise ConfigError(
            f"{self.family} takes the class label with the image: call encode_with(x, y) / "
            "reconstruct_with(x, y), or attack it under a threat model (robust_vae.models.conditional."
            "threat_model; `robust-vae attack --label-source true|classifier`)")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent_dim + num_classes) decoder input z ⊕ one-hot(y) -> (N, C, H, W) in [0, 1]."""
        width = self.decoder_inputs()
        if z.dim() != 2 or z.shape[1] != width:
            raise ConfigError(f"{self.family}.decode takes z ⊕ one-hot(y), (N, {width}); got {tuple(z.shape)}: "
                              "use decode_with(z, y) for a code without its label")
        return torch.sigmoid(self.decoder(z))

    # ----- training -----
    def loss_terms(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One stochastic pass under the batch's ``labels``: batch-mean BCE and KL_z (KL_c = 0)."""
        if labels is None:
            raise ConfigError(f"{self.family} trains on (image, label) batches: pass the batch's labels "
                              "(loss_terms(x, labels) or batch_terms(x, labels))")
        params = self.encode_with(x, labels)
        return self.pass_terms(x, params, torch.cat([self.sample_code(params), self.one_hot(labels, x)], dim=-1))

    def batch_terms(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.loss_terms(x, labels)
