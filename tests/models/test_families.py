"""The families of issue 18 against their papers' formulas: β-TCVAE, ControlVAE, σ-VAE, L-VAE, AE,
FactorVAE.

The parametrised interface tests of ``tests/test_models.py`` cover these families too; here are
the tests specific to each objective, and short runs on real MNIST.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from robust_vae.attacks.objectives import posterior_kl
from robust_vae.data import Dataset
from robust_vae.models import get_family
from robust_vae.models.base import gaussian_kl
from robust_vae.models.betatcvae import gaussian_log_density, mws_decomposition
from robust_vae.models.factorvae import (
    Discriminator,
    FactorVAE,
    FactorVAEConfig,
    discriminator_loss,
    permute_dims,
    tc_estimate,
)
from robust_vae.models.sigmavae import gaussian_nll_shared_sigma, optimal_sigma_sq

NEW_FAMILIES = ["betatcvae", "controlvae", "sigmavae", "lvae", "ae", "factorvae"]


# ----------------------------------------------------------------- β-TCVAE
def _mixture_on_grid(mean: torch.Tensor, logvar: torch.Tensor, half_width: float = 8.0, points: int = 801):
    """Densities of the 2-D mixture q(z) = (1/N) Σ_n N(z; mean_n, diag exp(logvar_n)) on a grid."""
    axis = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    step = float(axis[1] - axis[0])
    # per component and dimension: (N, P, 2)
    log_1d = gaussian_log_density(axis.view(1, -1, 1), mean.unsqueeze(1), logvar.unsqueeze(1))
    comp_1d = log_1d.exp()
    # q(z | n) on the grid: (N, P, P)
    q_given = comp_1d[:, :, None, 0] * comp_1d[:, None, :, 1]
    q = q_given.mean(0)
    q1, q2 = comp_1d[:, :, 0].mean(0), comp_1d[:, :, 1].mean(0)
    return axis, step, q_given, q, q1, q2


def test_mws_estimator_matches_quadrature_on_a_tiny_problem() -> None:
    """N = 4 correlated 2-D Gaussian posteriors: TC, MI and dimension-wise KL by quadrature.

    With the batch equal to the dataset (repeated R times, so the mixture inside the estimator is
    exact), MWS gives log q(z) − log N and Σ_k [log q(z_k) − log N]: its MI, TC and dim-KL are the
    true ones plus log N, (D − 1)·log N and −D·log N. A wrong normaliser (log M instead of
    log(N·M), say) moves the TC by more than a nat here.
    """
    n, d = 4, 2
    mean = torch.tensor([[-2.0, -1.5], [-0.5, -0.8], [0.7, 1.0], [2.0, 1.8]], dtype=torch.float64)
    logvar = torch.tensor([[-0.5, 0.0], [0.2, -0.3], [-0.2, 0.1], [0.0, -0.6]], dtype=torch.float64)

    _, step, q_given, q, q1, q2 = _mixture_on_grid(mean, logvar)
    area = step * step
    assert float(q.sum() * area) == pytest.approx(1.0, abs=1e-6)  # the grid holds the mass
    prod = q1[:, None] * q2[None, :]
    tiny = 1e-300
    tc_true = float((q * (torch.log(q + tiny) - torch.log(prod + tiny))).sum() * area)
    mi_true = float(((q_given * (torch.log(q_given + tiny) - torch.log(q + tiny))).sum((1, 2)) * area).mean())
    axis = torch.linspace(-8.0, 8.0, 801, dtype=torch.float64)
    log_p = -0.5 * (math.log(2 * math.pi) + axis.pow(2))
    dim_kl_true = float(sum((qk * (torch.log(qk + tiny) - log_p)).sum() * step for qk in (q1, q2)))
    assert tc_true > 0.1  # the posteriors' means are correlated: there is something to measure

    generator = torch.Generator().manual_seed(0)
    repeats, rounds = 500, 6
    big_mean, big_logvar = mean.repeat(repeats, 1), logvar.repeat(repeats, 1)
    sums = {"mi": 0.0, "tc": 0.0, "dim_kl": 0.0}
    kl_sample = 0.0
    for _ in range(rounds):
        z = big_mean + (0.5 * big_logvar).exp() * torch.randn(big_mean.shape, generator=generator, dtype=torch.float64)
        terms = mws_decomposition(z, big_mean, big_logvar, dataset_size=n)
        for key in sums:
            sums[key] += float(terms[key]) / rounds
        log_qzx = gaussian_log_density(z, big_mean, big_logvar).sum(1)
        log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
        kl_sample += float((log_qzx - log_pz).mean()) / rounds
        # the three terms telescope to the sampled KL whatever the estimate of q(z)
        assert float(terms["mi"] + terms["tc"] + terms["dim_kl"]) == pytest.approx(
            float((log_qzx - log_pz).mean()), abs=1e-9)
    log_n = math.log(n)
    assert sums["tc"] == pytest.approx(tc_true + (d - 1) * log_n, abs=0.05)
    assert sums["mi"] == pytest.approx(mi_true + log_n, abs=0.05)
    assert sums["dim_kl"] == pytest.approx(dim_kl_true - d * log_n, abs=0.05)
    # and the sampled KL is the exact mean KL(q(z|x_n) ‖ N(0, I))
    exact_kl = float((0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar)).sum(1).mean())
    assert kl_sample == pytest.approx(exact_kl, abs=0.05)


def test_betatcvae_objective_and_terms() -> None:
    family = get_family("betatcvae")
    model = family()
    c = model.config
    assert (c.alpha, c.beta, c.gamma, c.dataset_size, c.latent_dim, c.categorical_dim) == (1.0, 6.0, 1.0, 60000, 10, 0)
    fixed = {"recon": torch.tensor(100.0), "kl_z": torch.tensor(9.0), "kl_c": torch.tensor(0.0),
             "mi": torch.tensor(2.0), "tc": torch.tensor(3.0), "dim_kl": torch.tensor(4.0)}
    assert float(model.objective(fixed, 0, 10)) == pytest.approx(100 + 2 + 6 * 3 + 4)
    # the model's terms use the decoded z sample: they add up to log q(z|x) − log p(z) of that sample
    torch.manual_seed(0)
    x = torch.rand(8, 1, 32, 32)
    torch.manual_seed(1)
    terms = model.loss_terms(x)
    assert {"mi", "tc", "dim_kl"} <= set(terms) and all(v.dim() == 0 for v in terms.values())
    torch.manual_seed(1)
    params = model.encode(x)
    z = model.sample_code(params)
    log_ratio = (gaussian_log_density(z, params.mean, params.logvar)
                 - gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))).sum(1).mean()
    torch.testing.assert_close(terms["mi"] + terms["tc"] + terms["dim_kl"], log_ratio, atol=1e-3, rtol=1e-5)


# ----------------------------------------------------------------- L-VAE
@pytest.mark.parametrize(("sigma0_sq", "sigma1_sq"), [(1.0, 1.0), (1e3, 1e-3)])
def test_lvae_sigmas_move_the_way_their_gradient_says(sigma0_sq: float, sigma1_sq: float,
                                                      mnist_train: Dataset) -> None:
    """∂L/∂log σ0² = σ0² − recon/σ0²: σ0² grows iff recon > σ0⁴ (likewise σ1² with the KL)."""
    family = get_family("lvae")
    torch.manual_seed(0)
    model = family(family.config_class(lr=1e-3, sigma0_sq_init=sigma0_sq, sigma1_sq_init=sigma1_sq))
    assert {"log_sigma0_sq", "log_sigma1_sq"} <= {name for name, _ in model.named_parameters()}
    optimizer = model.optimizer()
    terms = model.loss_terms(mnist_train.images[:32])
    loss = model.objective(terms, 0, 10)
    optimizer.zero_grad()
    loss.backward()
    recon, kl = float(terms["recon"].detach()), float((terms["kl_z"] + terms["kl_c"]).detach())
    s0, s1 = math.exp(float(model.log_sigma0_sq.detach())), math.exp(float(model.log_sigma1_sq.detach()))
    assert model.log_sigma0_sq.grad is not None and model.log_sigma1_sq.grad is not None
    assert float(model.log_sigma0_sq.grad) == pytest.approx(s0 - recon / s0, rel=1e-4)
    assert float(model.log_sigma1_sq.grad) == pytest.approx(s1 - kl / s1, rel=1e-4)
    before0, before1 = float(model.log_sigma0_sq.detach()), float(model.log_sigma1_sq.detach())
    optimizer.step()
    moved0 = float(model.log_sigma0_sq.detach()) - before0
    moved1 = float(model.log_sigma1_sq.detach()) - before1
    assert (moved0 > 0) == (recon > s0 ** 2) and moved0 != 0
    assert (moved1 > 0) == (kl > s1 ** 2) and moved1 != 0
    if sigma0_sq == 1.0:  # recon ≫ 1 and KL ≈ 0 at initialisation: σ0² up, σ1² down
        assert moved0 > 0 > moved1
    else:
        assert moved0 < 0 < moved1
    # the objective is the literature's: recon/σ0² + KL/σ1² + σ0² + σ1²
    assert float(loss.detach()) == pytest.approx(recon / s0 + kl / s1 + s0 + s1, rel=1e-5)


# ----------------------------------------------------------------- ControlVAE
def test_controlvae_pi_step_follows_the_formula() -> None:
    family = get_family("controlvae")
    model = family(family.config_class(kl_set=10.0, kp=0.01, ki=0.001))
    assert (family().config.kp, family().config.ki, family().config.beta_max) == (0.01, 0.0001, 1.0)
    # KL above the set point: e = −5, β = Kp/(1 + e^−5) + Ki·5
    beta = model.update_controller(torch.tensor(15.0))
    assert float(beta) == pytest.approx(0.01 / (1 + math.exp(-5)) + 0.005, rel=1e-6)
    beta = model.update_controller(torch.tensor(12.0))  # e = −2: the integral is now 0.005 + 0.002
    assert float(beta) == pytest.approx(0.01 / (1 + math.exp(-2)) + 0.007, rel=1e-6)
    # KL far below: β would go negative, so it is clipped at β_min and the integral is frozen
    integral = float(model.controller_integral)
    assert float(model.update_controller(torch.tensor(-1000.0))) == 0.0
    assert float(model.controller_integral) == pytest.approx(integral)
    # the state is in the state dict (training checkpoints save it), so a copy continues identically
    model.update_controller(torch.tensor(30.0))
    state = model.state_dict()
    assert {"controller_beta", "controller_integral"} <= set(state)
    copy = family(model.config)
    copy.load_state_dict(state)
    for kl in (25.0, 8.0, 14.0):
        assert torch.equal(model.update_controller(torch.tensor(kl)), copy.update_controller(torch.tensor(kl)))
    # evaluation reads β without moving the controller
    before = model.controller_beta.clone()
    fixed = {"recon": torch.tensor(100.0), "kl_z": torch.tensor(50.0), "kl_c": torch.tensor(0.0)}
    with torch.no_grad():
        value = model.eval().objective(fixed, 0, 10)
    assert torch.equal(model.controller_beta, before)
    assert float(value) == pytest.approx(100 + float(before) * 50)


def test_controlvae_holds_the_kl_at_the_set_point_on_mnist(mnist_train: Dataset) -> None:
    """250 steps (lr 1e-3, batch 64): the batch KL of the last 50 steps averages within 10 % of
    the set point. To settle that fast the test uses a 15-nat set point and a stronger
    proportional gain (K_p = 0.5, K_i = 0.001) than the 100,000-step defaults."""
    family = get_family("controlvae")
    torch.manual_seed(0)
    kl_set = 15.0
    model = family(family.config_class(lr=1e-3, kl_set=kl_set, kp=0.5, ki=0.001)).train()
    optimizer = model.optimizer()
    images = mnist_train.images
    kls, losses, betas = [], [], []
    for step in range(250):
        x = images[step * 64:(step + 1) * 64]
        terms = model.loss_terms(x)
        loss = model.objective(terms, step, model.config.steps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        kls.append(float(terms["kl_z"]))
        losses.append(float(loss))
        betas.append(float(model.controller_beta))
    held = sum(kls[-50:]) / 50
    assert abs(held - kl_set) < 0.1 * kl_set, (held, kls[-50:])
    assert 0.0 < max(betas[-50:]) < 1.0  # the controller, not the cap, holds the KL
    assert sum(losses[-20:]) / 20 < 0.6 * sum(losses[:20]) / 20


# ----------------------------------------------------------------- σ-VAE
def test_sigmavae_optimal_sigma_is_the_closed_form() -> None:
    family = get_family("sigmavae")
    torch.manual_seed(0)
    model = family()
    x = torch.rand(16, 1, 32, 32)
    torch.manual_seed(1)
    terms = model.loss_terms(x)
    torch.manual_seed(1)
    mean = model.decode(model.sample_code(model.encode(x)))
    mse = (x - mean).pow(2).mean()
    torch.testing.assert_close(terms["sigma_sq"], mse)
    pixels = 32 * 32
    torch.testing.assert_close(terms["recon_gauss"], 0.5 * pixels * (torch.log(mse) + math.log(2 * math.pi) + 1))
    assert float(model.objective(terms, 0, 10)) == pytest.approx(float(terms["recon_gauss"] + terms["kl_z"]))
    # σ*² minimises the Gaussian NLL over the shared variance
    with torch.no_grad():
        best = float(gaussian_nll_shared_sigma(x, mean, mse))
        for factor in (0.5, 0.9, 1.1, 2.0):
            assert float(gaussian_nll_shared_sigma(x, mean, mse * factor)) > best
    # and the gradient is the same whether σ*² is detached or not (envelope theorem)
    mean = mean.detach().requires_grad_(True)
    with_sigma = torch.autograd.grad(gaussian_nll_shared_sigma(x, mean, optimal_sigma_sq(x, mean)), mean)[0]
    detached = torch.autograd.grad(gaussian_nll_shared_sigma(x, mean, optimal_sigma_sq(x, mean).detach()), mean)[0]
    torch.testing.assert_close(with_sigma, detached, rtol=1e-4, atol=1e-6)
    # the floor: a perfect reconstruction gives σ = e^−6, not log 0
    assert float(optimal_sigma_sq(x, x)) == pytest.approx(math.exp(-12))


# ----------------------------------------------------------------- AE
def test_ae_is_deterministic_and_has_no_kl() -> None:
    family = get_family("ae")
    torch.manual_seed(0)
    model = family().train()
    assert not model.stochastic and model.encoder.head.out_features == 10
    x = torch.rand(8, 1, 32, 32)
    torch.manual_seed(1)
    first = model.loss_terms(x)
    torch.manual_seed(2)  # the global RNG does not matter
    second = model.loss_terms(x)
    assert set(first) == {"recon", "kl_z", "kl_c"}
    assert float(first["kl_z"]) == 0.0 and float(first["kl_c"]) == 0.0
    assert torch.equal(first["recon"], second["recon"])
    assert torch.equal(model.objective(first, 0, 10), first["recon"])
    params = model.encode(x)
    assert params.logits is None and torch.equal(params.logvar, torch.zeros(8, 10))
    assert torch.equal(model.sample_code(params), params.mean)
    assert torch.equal(model.latent_kl_per_dim(params), torch.zeros(8, 10))
    with torch.no_grad():
        assert torch.equal(model.reconstruct(x), model.reconstruct(x))
        # the logvar placeholder makes a KL between codes half their squared distance
        target = model.encode(x.flip(0))
        torch.testing.assert_close(posterior_kl(model, x, target),
                                   0.5 * (params.mean - target.mean).pow(2).sum(1))


# ----------------------------------------------------------------- FactorVAE
def _tiny_factorvae(**values: float) -> FactorVAE:
    """FactorVAE with a small discriminator (2 hidden layers of 16), distinct lrs for the two groups."""
    config = FactorVAEConfig(**({"disc_hidden": 16, "disc_layers": 2, "lr": 1e-3, "disc_lr": 3e-4} | values))
    return FactorVAE(config)


def test_factorvae_defaults_are_the_papers() -> None:
    model = FactorVAE()
    c = model.config
    assert (c.gamma, c.latent_dim, c.categorical_dim, c.lr) == (10.0, 10, 0, 1e-4)
    assert (c.disc_hidden, c.disc_layers, c.disc_lr, c.disc_beta1, c.disc_beta2) == (1000, 6, 1e-4, 0.5, 0.9)
    linears = [m for m in model.discriminator.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(10, 1000)] + [(1000, 1000)] * 5 + [(1000, 2)]
    slopes = [m.negative_slope for m in model.discriminator.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert slopes == [0.2] * 6
    groups = model.optimizer().param_groups
    assert [(g["lr"], g["betas"]) for g in groups] == [(1e-4, (0.9, 0.999)), (1e-4, (0.5, 0.9))]
    vae_ids = {id(p) for p in groups[0]["params"]}
    disc_ids = {id(p) for p in groups[1]["params"]}
    assert disc_ids == {id(p) for p in model.discriminator.parameters()}
    assert vae_ids | disc_ids == {id(p) for p in model.parameters()} and not vae_ids & disc_ids


def test_permute_dims_permutes_each_column_independently() -> None:
    n, d = 50, 6
    z = torch.arange(n * d, dtype=torch.float32).view(n, d)  # all values distinct
    out = permute_dims(z, torch.Generator().manual_seed(0))
    assert out.shape == z.shape
    # each column is a permutation of the same input column
    for j in range(d):
        assert torch.equal(out[:, j].sort().values, z[:, j])
    # recover each column's permutation: they are not all the same, nor the identity
    rows = ((out - torch.arange(d)) / d).long()  # row index each entry came from
    perms = {tuple(rows[:, j].tolist()) for j in range(d)}
    assert len(perms) == d
    assert tuple(range(n)) not in perms
    # the same seed gives the same permutation; the global RNG path is reproducible too
    assert torch.equal(out, permute_dims(z, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, permute_dims(z, torch.Generator().manual_seed(1)))
    torch.manual_seed(3)
    first = permute_dims(z)
    torch.manual_seed(3)
    assert torch.equal(first, permute_dims(z))
    # every permutation of a column is (about) equally likely: 4 rows, 24 permutations
    generator = torch.Generator().manual_seed(4)
    small = torch.arange(4, dtype=torch.float32).view(4, 1).expand(4, 2400).contiguous()
    columns = permute_dims(small, generator).t().long().tolist()
    counts: dict[tuple[int, ...], int] = {}
    for column in columns:
        counts[tuple(column)] = counts.get(tuple(column), 0) + 1
    assert len(counts) == 24 and min(counts.values()) > 60 and max(counts.values()) < 140


def test_permute_dims_breaks_the_joint_distribution() -> None:
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(1000, 1, generator=generator)
    z = torch.cat([base, base, torch.randn(1000, 1, generator=generator)], dim=1)  # z_0 = z_1
    out = permute_dims(z, generator)
    assert (out[:, 0] == out[:, 1]).float().mean() < 0.01  # 1/N expected
    for j in range(3):  # the marginals are kept exactly
        assert torch.equal(out[:, j].sort().values, z[:, j].sort().values)
    # the correlation of the equal pair is gone
    assert abs(float(torch.corrcoef(out[:, :2].t())[0, 1])) < 0.1


def _correlated(n: int, rho: float, generator: torch.Generator) -> torch.Tensor:
    z1 = torch.randn(n, generator=generator)
    z2 = rho * z1 + math.sqrt(1 - rho ** 2) * torch.randn(n, generator=generator)
    return torch.stack([z1, z2], dim=1)


def _train_discriminator(rho: float, seed: int, steps: int = 400, batch: int = 256) -> Discriminator:
    """The tiny discriminator trained with :func:`discriminator_loss` on codes of correlation ``rho``."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    disc = Discriminator(2, hidden=32, layers=2)
    optimizer = torch.optim.Adam(disc.parameters(), lr=3e-3, betas=(0.5, 0.9))
    for _ in range(steps):
        loss = discriminator_loss(disc, _correlated(batch, rho, generator), generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return disc


def test_discriminator_estimates_the_total_correlation() -> None:
    """D(z)_0 − D(z)_1 is log q(z) − log Π q(z_j): positive and near the true TC on correlated codes."""
    rho = 0.95
    true_tc = -0.5 * math.log(1 - rho ** 2)  # 1.16 nats for a bivariate Gaussian of correlation ρ
    correlated_disc = _train_discriminator(rho, seed=0)
    independent_disc = _train_discriminator(0.0, seed=1)
    generator = torch.Generator().manual_seed(10)
    with torch.no_grad():
        correlated = _correlated(4096, rho, generator)
        independent = _correlated(4096, 0.0, generator)
        tc_correlated = float(tc_estimate(correlated_disc, correlated))
        tc_independent = float(tc_estimate(independent_disc, independent))
        tc_shuffled = float(tc_estimate(correlated_disc, permute_dims(correlated, generator)))
    assert 0.5 * true_tc < tc_correlated < 1.5 * true_tc, tc_correlated
    assert abs(tc_independent) < 0.1, tc_independent
    # the correlated-trained D on samples of the product of marginals: the ratio is below 1 there
    assert tc_shuffled < 0 < tc_correlated


def test_factorvae_losses_reach_only_their_own_parameters() -> None:
    torch.manual_seed(0)
    model = _tiny_factorvae().train()
    terms = model.loss_terms(torch.rand(8, 1, 32, 32))
    assert {"tc", "disc_loss"} <= set(terms) and terms["tc"].dim() == 0 and terms["disc_loss"].dim() == 0
    disc = list(model.discriminator.parameters())
    vae = model.vae_parameters()
    encoder = list(model.encoder.parameters())

    def grads(value: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor | None]:
        return list(torch.autograd.grad(value, params, retain_graph=True, allow_unused=True))

    vae_loss = terms["recon"] + terms["kl_z"] + terms["kl_c"] + model.config.gamma * terms["tc"]
    # the VAE's loss (through the TC term) sends no gradient into the discriminator
    assert all(g is None for g in grads(vae_loss, disc))
    assert all(g is None for g in grads(terms["tc"], disc))
    # ... but the TC term does reach the encoder
    assert any(g is not None and g.abs().sum() > 0 for g in grads(terms["tc"], encoder))
    # the discriminator's loss reaches its parameters only
    assert all(g is None for g in grads(terms["disc_loss"], vae))
    assert all(g is not None and g.abs().sum() > 0 for g in grads(terms["disc_loss"], disc)[::2])  # weights
    # the objective is the VAE loss plus the discriminator's, and on D its gradient is the latter's
    objective = model.objective(terms, 0, 10)
    torch.testing.assert_close(objective, vae_loss + terms["disc_loss"])
    for ours, theirs in zip(grads(objective, disc), grads(terms["disc_loss"], disc), strict=True):
        assert ours is not None and theirs is not None and torch.equal(ours, theirs)


def test_factorvae_one_step_is_the_two_optimizer_step() -> None:
    """One backward of the objective and one step of the two-group Adam = a VAE Adam step on the
    VAE loss with D frozen plus a D Adam step on the discriminator loss, from the same state."""
    torch.manual_seed(0)
    combined = _tiny_factorvae(weight_decay=0.01).train()
    reference = copy.deepcopy(combined)
    initial = {key: value.clone() for key, value in combined.state_dict().items()}
    c = reference.config
    optimizer = combined.optimizer()
    vae_optimizer = torch.optim.Adam(reference.vae_parameters(), lr=c.lr, betas=(0.9, 0.999),
                                     weight_decay=c.weight_decay)
    disc_optimizer = torch.optim.Adam(reference.discriminator.parameters(), lr=c.disc_lr, betas=(0.5, 0.9))
    data = torch.rand(3, 16, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    for step, x in enumerate(data):
        torch.manual_seed(100 + step)
        loss = combined.objective(combined.loss_terms(x), step, c.steps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        # the reference, written out: same random draws in the same order (the sample, then the permutation)
        torch.manual_seed(100 + step)
        params = reference.encode(x)
        code = reference.sample_code(params)
        recon = F.binary_cross_entropy_with_logits(reference.decoder(code), x, reduction="sum") / x.shape[0]
        kl = gaussian_kl(params.mean, params.logvar).sum(-1).mean()
        z = code[:, :c.latent_dim]
        permuted = permute_dims(z.detach())
        reference.discriminator.requires_grad_(False)
        ratio = reference.discriminator(z)
        vae_loss = recon + kl + c.gamma * (ratio[:, 0] - ratio[:, 1]).mean()
        reference.discriminator.requires_grad_(True)
        vae_optimizer.zero_grad()
        vae_loss.backward()
        vae_optimizer.step()
        real_logits = reference.discriminator(z.detach())
        fake_logits = reference.discriminator(permuted)
        disc_loss = 0.5 * (F.cross_entropy(real_logits, torch.zeros(16, dtype=torch.long))
                           + F.cross_entropy(fake_logits, torch.ones(16, dtype=torch.long)))
        disc_optimizer.zero_grad()
        disc_loss.backward()
        disc_optimizer.step()

        for (name, ours), theirs in zip(combined.named_parameters(), reference.parameters(), strict=True):
            assert torch.allclose(ours, theirs, atol=1e-6, rtol=1e-5), (step, name)
    # both parts did move
    assert not torch.equal(combined.encoder.head.weight, initial["encoder.head.weight"])
    assert not torch.equal(combined.discriminator.net[0].weight, initial["discriminator.net.0.weight"])


def test_factorvae_evaluates_and_loads_with_its_discriminator(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from robust_vae.training.vae import evaluate_vae
    from robust_vae.zoo import load_model, save_weights

    torch.manual_seed(0)
    model = _tiny_factorvae()
    with torch.no_grad():  # what evaluate_vae does: the objective under no_grad, in eval mode
        terms = model.eval().loss_terms(torch.rand(4, 1, 32, 32))
        assert torch.isfinite(model.objective(terms, 5, 5))
    test = Dataset("mnist", "test", torch.rand(12, 1, 32, 32), torch.zeros(12, dtype=torch.long))
    metrics = evaluate_vae(model, test, None, batch_size=5)
    assert math.isfinite(metrics["objective"]) and math.isfinite(metrics["elbo"])

    assert any(key.startswith("discriminator.") for key in model.state_dict())
    save_weights(model, tmp_path / "mnist" / "factorvae-seed0.safetensors",
                 {"name": "factorvae", "dataset": "mnist", "family": "factorvae", "seed": 0,
                  "config_class": "FactorVAEConfig", "config": model.config.to_dict()})
    monkeypatch.setenv("ROBUST_VAE_MODELS", str(tmp_path))
    loaded = load_model("factorvae", "mnist", seed=0)
    assert loaded.config == model.config
    expected, actual = model.state_dict(), loaded.state_dict()
    assert list(expected) == list(actual)
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


# ----------------------------------------------------------------- short runs on MNIST
@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_loss_decreases_over_a_short_run(family: str, mnist_train: Dataset) -> None:
    """150 Adam steps (lr 1e-3, batch 32, the paper's defaults otherwise) on real MNIST."""
    steps, batch = 150, 32
    torch.manual_seed(0)
    family_class = get_family(family)
    model = family_class(family_class.config_class(lr=1e-3)).train()
    optimizer = model.optimizer()
    losses = []
    for step in range(steps):
        x = mnist_train.images[step * batch:(step + 1) * batch]
        loss = model.objective(model.loss_terms(x), step, model.config.steps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < first - 0.2 * abs(first), (family, first, last)  # σ-VAE's loss may go negative


# ----------------------------------------------------------------- card metrics
@pytest.mark.parametrize(("family", "keys"), [
    ("vae", set()),
    ("betatcvae", {"mi", "tc", "dim_kl"}),
    ("factorvae", {"tc", "disc_loss"}),
    ("sigmavae", {"recon_gauss", "sigma_sq"}),
    ("lvae", {"sigma0_sq", "sigma1_sq", "beta_hat"}),
    ("controlvae", {"controller_beta", "controller_integral"}),
])
def test_cards_carry_the_family_metrics(family: str, keys: set[str], mnist_test: Dataset) -> None:
    from robust_vae.training.vae import evaluate_vae

    torch.manual_seed(0)
    model = get_family(family)()
    test = Dataset("mnist", "test", mnist_test.images[:64], mnist_test.labels[:64])
    metrics = evaluate_vae(model, test, None, batch_size=32)
    assert set(metrics.get("family_metrics", {})) == keys
    assert all(math.isfinite(v) for v in metrics.get("family_metrics", {}).values())
    if family == "controlvae":
        assert metrics["family_metrics"]["controller_beta"] == pytest.approx(model.config.beta_init)
