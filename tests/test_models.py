"""Model families: KL pieces, capacity schedules, the interface shapes, training, save/load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.distributions import Categorical, Normal, kl_divergence

from robust_vae.core.errors import ConfigError, ZooError
from robust_vae.data import Dataset
from robust_vae.models import FAMILIES, get_family
from robust_vae.models.base import (
    categorical_kl,
    categorical_kl_between,
    gaussian_kl,
    gaussian_kl_between,
    linear_capacity,
)
from robust_vae.models.conditional import TrueLabel
from robust_vae.zoo import load_state, read_card, save_weights, sha256_of

ALL_FAMILIES = sorted(FAMILIES)


def plain_view(model: torch.nn.Module) -> Any:
    """The model with the plain interface: itself, or a conditional model under the true label 3
    (its plain ``encode`` refuses: the label must come from a threat model)."""
    return TrueLabel(model, 3) if getattr(model, "needs_labels", False) else model



# ----------------------------------------------------------------- KL pieces
def _random_gaussian(generator: torch.Generator, n: int = 64, d: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.randn(n, d, generator=generator, dtype=torch.float64) * 2.0
    logvar = torch.randn(n, d, generator=generator, dtype=torch.float64) * 1.5
    return mean, logvar


def test_gaussian_kl_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    mean, logvar = _random_gaussian(g)
    ours = gaussian_kl(mean, logvar)
    assert ours.shape == (64, 10)
    reference = kl_divergence(Normal(mean, (0.5 * logvar).exp()),
                              Normal(torch.zeros_like(mean), torch.ones_like(mean)))
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert (ours >= -1e-12).all()
    # float32 (what the models use) agrees too
    torch.testing.assert_close(gaussian_kl(mean.float(), logvar.float()), reference.float(),
                               atol=1e-5, rtol=1e-5)


def test_gaussian_kl_is_zero_at_the_prior() -> None:
    zeros = torch.zeros(3, 10)
    assert torch.equal(gaussian_kl(zeros, zeros), torch.zeros(3, 10))


def test_categorical_kl_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 10, generator=g, dtype=torch.float64) * 3.0
    ours = categorical_kl(logits)
    assert ours.shape == (64,)
    uniform = Categorical(logits=torch.zeros_like(logits))
    reference = kl_divergence(Categorical(logits=logits), uniform)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    # bounds: 0 for a uniform posterior, at most log K
    assert categorical_kl(torch.zeros(2, 10)).abs().max() < 1e-6
    assert (ours <= torch.log(torch.tensor(10.0, dtype=torch.float64)) + 1e-9).all()
    # another K
    logits7 = torch.randn(8, 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        categorical_kl(logits7),
        kl_divergence(Categorical(logits=logits7), Categorical(logits=torch.zeros_like(logits7))),
        atol=1e-5, rtol=0)


def test_gaussian_kl_between_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(2)
    mean_a, logvar_a = _random_gaussian(g)
    mean_b, logvar_b = _random_gaussian(g)
    ours = gaussian_kl_between(mean_a, logvar_a, mean_b, logvar_b)
    assert ours.shape == (64,)
    reference = kl_divergence(Normal(mean_a, (0.5 * logvar_a).exp()),
                              Normal(mean_b, (0.5 * logvar_b).exp())).sum(-1)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-9)
    # against the standard normal it reduces to gaussian_kl summed over dimensions
    zeros = torch.zeros_like(mean_a)
    torch.testing.assert_close(gaussian_kl_between(mean_a, logvar_a, zeros, zeros),
                               gaussian_kl(mean_a, logvar_a).sum(-1), atol=1e-9, rtol=0)
    # KL is not symmetric: the argument order matters
    assert not torch.allclose(gaussian_kl_between(mean_b, logvar_b, mean_a, logvar_a), ours)


def test_categorical_kl_between_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.randn(64, 10, generator=g, dtype=torch.float64) * 2.0
    b = torch.randn(64, 10, generator=g, dtype=torch.float64) * 2.0
    ours = categorical_kl_between(a, b)
    assert ours.shape == (64,)
    reference = kl_divergence(Categorical(logits=a), Categorical(logits=b))
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert not torch.allclose(categorical_kl_between(b, a), ours)
    torch.testing.assert_close(categorical_kl_between(a, torch.zeros_like(a)), categorical_kl(a),
                               atol=1e-9, rtol=0)


# ----------------------------------------------------------------- capacity schedules
def test_linear_capacity_schedule() -> None:
    assert linear_capacity(0, 1000, 5.0) == 0.0
    assert linear_capacity(500, 1000, 5.0) == pytest.approx(2.5)
    assert linear_capacity(250, 1000, 5.0) == pytest.approx(1.25)
    assert linear_capacity(1000, 1000, 5.0) == pytest.approx(5.0)
    assert linear_capacity(5000, 1000, 5.0) == pytest.approx(5.0)  # held at the maximum
    assert linear_capacity(3, 0, 5.0) == 5.0  # no horizon: the maximum
    values = [linear_capacity(s, 100, 25.0) for s in range(0, 201, 10)]
    assert values == sorted(values)


FIXED_TERMS = {"recon": torch.tensor(100.0), "kl_z": torch.tensor(3.0), "kl_c": torch.tensor(1.0)}


def test_jointvae_objective_follows_the_capacity_schedule() -> None:
    model = get_family("jointvae")()  # γ = 30, C_z and C_c raised 0 -> 5
    assert (model.config.gamma, model.config.capacity_z_max, model.config.capacity_c_max) == (30.0, 5.0, 5.0)

    def objective(step: int, total: int = 1000) -> float:
        return float(model.objective(FIXED_TERMS, step, total))

    assert objective(0) == pytest.approx(100 + 30 * 3 + 30 * 1)                   # C = 0
    assert objective(500) == pytest.approx(100 + 30 * 0.5 + 30 * 1.5)             # C = 2.5
    assert objective(1000) == pytest.approx(100 + 30 * 2 + 30 * 4)                # C = 5
    assert objective(2000) == objective(1000)
    # capacity_steps sets the horizon independently of the run length
    short = get_family("jointvae")(get_family("jointvae").config_class(capacity_steps=100))
    assert float(short.objective(FIXED_TERMS, 100, 1000)) == pytest.approx(280.0)
    assert float(short.objective(FIXED_TERMS, 50, 1000)) == pytest.approx(160.0)


def test_capacity_betavae_objective_follows_the_schedule() -> None:
    family = get_family("betavae-capacity")
    model = family(family.config_class(gamma=10.0, capacity_max=8.0))
    assert float(model.objective(FIXED_TERMS, 0, 100)) == pytest.approx(100 + 10 * 4)
    assert float(model.objective(FIXED_TERMS, 50, 100)) == pytest.approx(100 + 10 * 0)
    assert float(model.objective(FIXED_TERMS, 100, 100)) == pytest.approx(100 + 10 * 4)


def test_elbo_and_beta_objectives() -> None:
    assert float(get_family("vae")().objective(FIXED_TERMS, 0, 10)) == pytest.approx(104.0)
    assert float(get_family("vae-wd")().objective(FIXED_TERMS, 0, 10)) == pytest.approx(104.0)
    assert get_family("vae-wd")().config.weight_decay == 0.5
    beta = get_family("betavae")
    assert float(beta(beta.config_class(beta=4.0)).objective(FIXED_TERMS, 7, 10)) == pytest.approx(116.0)


# ----------------------------------------------------------------- the interface
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_interface_shapes(family: str) -> None:
    torch.manual_seed(0)
    family_model = get_family(family)().eval()
    assert family_model.family == family
    model = plain_view(family_model)
    x = torch.rand(4, 1, 32, 32)
    k = family_model.config.categorical_dim  # 10 for the thesis families, 0 for those without a categorical
    with torch.no_grad():
        params = model.encode(x)
        assert params.mean.shape == (4, 10) and params.logvar.shape == (4, 10)
        if k == 0:
            assert params.logits is None
            assert torch.equal(model.attack_code(x), params.mean)
            assert torch.equal(model.deterministic_code(params), params.mean)
            assert model.decode(torch.randn(4, 10)).shape == (4, 1, 32, 32)
            assert torch.equal(model.relaxed_reconstruct(x), model.reconstruct(x))
            return
        assert params.logits is not None and params.logits.shape == (4, 10)
        z = torch.randn(4, 20)
        for name, out in {
            "decode": model.decode(z),
            "reconstruct": model.reconstruct(x),
            "relaxed_reconstruct": model.relaxed_reconstruct(x),
        }.items():
            assert out.shape == (4, 1, 32, 32), name
            assert out.min() >= 0 and out.max() <= 1, name
        code = model.attack_code(x)
        assert code.shape == (4, 20)
        assert torch.equal(code, torch.cat([params.mean, params.logits], dim=-1))
        # the deterministic code: means plus a one-hot of the argmax
        det = model.deterministic_code(params)
        assert torch.equal(det[:, :10], params.mean)
        assert torch.equal(det[:, 10:].argmax(-1), params.logits.argmax(-1))
        assert torch.equal(det[:, 10:].sum(-1), torch.ones(4))


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_reconstruct_is_deterministic(family: str) -> None:
    torch.manual_seed(0)
    family_model = get_family(family)()
    model = plain_view(family_model)
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        first = model.reconstruct(x)
        torch.manual_seed(123)  # global RNG state must not matter
        assert torch.equal(first, model.reconstruct(x))
        assert torch.equal(first, model.train().reconstruct(x))
        assert torch.equal(model.relaxed_reconstruct(x), model.relaxed_reconstruct(x))
        # training-time sampling, by contrast, is random (except for the deterministic autoencoder)
        a = family_model.sample_code(model.encode(x))
        b = family_model.sample_code(model.encode(x))
        assert torch.equal(a, b) != family_model.stochastic


BAD_COMMON = [
    {"latent_dim": 0}, {"categorical_dim": 1}, {"categorical_dim": -1}, {"temperature": 0.0},
    {"image_size": 28}, {"lr": 0.0}, {"batch_size": 0}, {"steps": 0}, {"weight_decay": -0.1},
]
BAD_SPECIFIC = {
    "betavae": [{"beta": -1.0}],
    "betavae-capacity": [{"gamma": 0.0}, {"gamma": -5.0}],
    "jointvae": [{"categorical_dim": 0}, {"gamma": 0.0}],
    "vae": [],
    "vae-wd": [],
    "betatcvae": [{"beta": -1.0}, {"alpha": -1.0}, {"gamma": -1.0}, {"dataset_size": 0}],
    "controlvae": [{"kl_set": -1.0}, {"kp": -0.1}, {"ki": -0.1}, {"beta_min": 0.5, "beta_max": 0.2},
                   {"beta_init": 2.0}],
    "sigmavae": [],
    "lvae": [{"sigma0_sq_init": 0.0}, {"sigma1_sq_init": -1.0}],
    "ae": [{"categorical_dim": 10}],
    "factorvae": [{"gamma": -1.0}, {"disc_hidden": 0}, {"disc_layers": 0}, {"disc_lr": 0.0},
                  {"disc_beta1": 1.0}, {"disc_beta2": -0.1}],
    "cond-betavae": [{"beta": -1.0}, {"num_classes": 1}, {"categorical_dim": 10}],
}


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_configs_reject_bad_values(family: str) -> None:
    config_class = get_family(family).config_class
    assert set(BAD_SPECIFIC) == set(FAMILIES)
    for values in BAD_COMMON + BAD_SPECIFIC[family]:
        with pytest.raises(ConfigError):
            config_class(**values)
    with pytest.raises(ConfigError, match="no field"):
        config_class.from_dict({"not_a_field": 1})
    # a valid dict round-trips
    config = config_class()
    assert config_class.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_a_few_steps_lower_the_objective(family: str, mnist_train: Dataset) -> None:
    """30 Adam steps (the family's own optimizer and objective) on real MNIST.

    lr 1e-3 instead of the thesis's 1e-4 so that 30 steps move the loss clearly; the schedule
    horizon is the config's ``steps``, as in :func:`robust_vae.training.train_vae`.
    """
    steps = 30
    torch.manual_seed(0)
    family_class = get_family(family)
    model = family_class(family_class.config_class(lr=1e-3)).train()
    optimizer = model.optimizer()
    assert optimizer.param_groups[0]["weight_decay"] == model.config.weight_decay
    images, labels = mnist_train.images[:steps * 32], mnist_train.labels[:steps * 32]
    losses = []
    for step in range(steps):
        rows = slice(step * 32, (step + 1) * 32)
        loss = model.objective(model.batch_terms(images[rows], labels[rows]), step, model.config.steps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert all(torch.isfinite(torch.tensor(losses)))
    assert last < 0.8 * first, (family, first, last)


# ----------------------------------------------------------------- save / load
@pytest.mark.parametrize("family", ["vae", "jointvae", "factorvae"])
def test_save_load_is_bit_exact(family: str, tmp_path: Path) -> None:
    family_class = get_family(family)
    torch.manual_seed(1)
    original = family_class()
    card = save_weights(original, tmp_path / f"{family}-seed1.safetensors",
                        {"name": family, "dataset": "mnist", "family": family, "seed": 1,
                         "config_class": type(original.config).__name__,
                         "config": original.config.to_dict()})
    assert card.data["sha256"] == sha256_of(tmp_path / f"{family}-seed1.safetensors")

    read = read_card(tmp_path / f"{family}-seed1.json")
    torch.manual_seed(2)
    fresh = family_class(family_class.config_class.from_dict(read.data["config"])).train()
    assert not torch.equal(fresh.encoder.head.weight, original.encoder.head.weight)
    loaded = load_state(read, fresh)
    assert loaded is fresh and not loaded.training
    expected, actual = original.state_dict(), loaded.state_dict()
    assert list(expected) == list(actual)
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(original.reconstruct(x), loaded.reconstruct(x))


def test_card_with_wrong_sha256_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = get_family("vae")()
    card = save_weights(model, tmp_path / "vae-seed0.safetensors",
                        {"name": "vae", "dataset": "mnist", "family": "vae", "seed": 0})
    data = json.loads(card.path.read_text())
    data["sha256"] = "0" * 64
    card.path.write_text(json.dumps(data))
    fresh = get_family("vae")()
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(ZooError, match="sha256"):
        load_state(read_card(card.path), fresh)
    for key, tensor in fresh.state_dict().items():  # nothing was loaded
        assert torch.equal(tensor, before[key]), key
