"""Tiny models with the zoo's model interface (encode, decode, reconstruct,
relaxed_reconstruct, attack_code), for attack tests whose answers are known exactly."""

from __future__ import annotations

import torch
from torch import nn

from robust_vae.models.base import LatentParams
from robust_vae.models.row_wise import RowWise

__all__ = ["RowWise"]  # re-exported: the tests wrap models with the package's own


class LinearEncoder(nn.Module):
    """φ(x) = W·vec(x) + b (optionally tanh of it), no categorical latent.

    ``weight`` (D, C·H·W) and ``bias`` (D,) are float32 parameters; images are (N, *shape).
    encode -> LatentParams(mean=φ(x), logvar=0, logits=None); attack_code = mean;
    decode(z) = sigmoid(Wᵀz) reshaped to an image.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, shape: tuple[int, ...],
                 nonlinear: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone().float())
        self.bias = nn.Parameter(bias.detach().clone().float())
        self.shape = tuple(shape)
        self.nonlinear = nonlinear

    def encode(self, x: torch.Tensor) -> LatentParams:
        mean = x.flatten(1) @ self.weight.T + self.bias
        if self.nonlinear:
            mean = torch.tanh(mean)
        return LatentParams(mean, torch.zeros_like(mean), None)

    def attack_code(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x).mean

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z @ self.weight).view(-1, *self.shape)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.attack_code(x))

    def relaxed_reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)


SEEDS = torch.tensor([5, 17, 3, 99, 1234, 7, 42, 8], dtype=torch.int64)


def one_at_a_time(attack, model, xs, xt, seeds):  # type: ignore[no-untyped-def]
    """The attack run on each example alone: (adversarials (1, N, ...), iterations (1, N))."""
    singles = [attack(model, xs[i:i + 1], xt[i:i + 1], seeds=seeds[i:i + 1]) for i in range(xs.shape[0])]
    return torch.cat([s.adversarial for s in singles], dim=1), torch.cat([s.iterations for s in singles], dim=1)


def assert_exactly_batch_independent(attack, model, xs, xt, seeds) -> None:  # type: ignore[no-untyped-def]
    """Bit for bit: batched, one at a time and in another order, every example gets the same
    adversarial and iteration count (use a row-wise ``model`` so the objective is too)."""
    batch = attack(model, xs, xt, seeds=seeds)
    single, iterations = one_at_a_time(attack, model, xs, xt, seeds)
    assert torch.equal(single, batch.adversarial)
    assert torch.equal(iterations, batch.iterations)
    order = torch.arange(xs.shape[0]).flip(0)
    shuffled = attack(model, xs[order], xt[order], seeds=seeds[order])
    assert torch.equal(shuffled.adversarial, batch.adversarial[:, order])


class LinearAutoencoder(nn.Module):
    """x̂(x) = D·E·vec(x) + b: a linear encoder E (d, n) and decoder D (n, d), n = C·H·W.

    encode -> LatentParams(mean=E·vec(x), logvar=0, logits=None); attack_code = mean;
    decode(z) = D·z + b reshaped to an image (not clipped to [0, 1], so the damage of a
    perturbation d is exactly ‖D·E·vec(d)‖₂). :attr:`matrix` is W = D·E (n, n).
    """

    def __init__(self, encoder: torch.Tensor, decoder: torch.Tensor, bias: torch.Tensor,
                 shape: tuple[int, ...]) -> None:
        super().__init__()
        self.encoder = nn.Parameter(encoder.detach().clone().float())
        self.decoder = nn.Parameter(decoder.detach().clone().float())
        self.bias = nn.Parameter(bias.detach().clone().float())
        self.shape = tuple(shape)

    @property
    def matrix(self) -> torch.Tensor:
        return (self.decoder @ self.encoder).detach()

    def encode(self, x: torch.Tensor) -> LatentParams:
        mean = x.flatten(1) @ self.encoder.T
        return LatentParams(mean, torch.zeros_like(mean), None)

    def deterministic_code(self, params: LatentParams) -> torch.Tensor:
        return params.mean

    def attack_code(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x).mean

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.decoder.T + self.bias).view(-1, *self.shape)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.attack_code(x))

    def relaxed_reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)
