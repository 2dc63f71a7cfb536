"""Classifier-free metrics of an attack's output: MS-SSIM (pytorch_msssim's per-scale SSIM with
3 scales and a 7-pixel window on 32×32 images) and the symmetric KL of the posteriors."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_msssim import ms_ssim as library_ms_ssim

import robust_vae as rv
from robust_vae.core.errors import ConfigError
from robust_vae.evaluation.attack_metrics import (
    MSSSIM_SETTINGS,
    STANDARD_WEIGHTS,
    attack_metrics,
    categorical_symmetric_kl,
    gaussian_symmetric_kl,
    ms_ssim,
    posterior_symmetric_kl,
)
from robust_vae.models.base import LatentParams


def test_ms_ssim_of_an_image_with_itself_is_one() -> None:
    x = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ms_ssim(x, x, **MSSSIM_SETTINGS), torch.ones(5), atol=1e-6, rtol=0)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    values = ms_ssim(x, noisy, **MSSSIM_SETTINGS)
    assert values.shape == (5,) and bool((values < 0.99).all()) and bool((values > 0).all())
    assert sum(MSSSIM_SETTINGS["weights"]) == pytest.approx(1.0) and len(MSSSIM_SETTINGS["weights"]) == 3


def test_ms_ssim_is_the_library_s_at_its_default_settings() -> None:
    """Where pytorch_msssim.ms_ssim accepts the images (side > 160 for its 11-pixel window),
    the same settings give the same numbers."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 176, 176, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ours = ms_ssim(x, y, win_size=11, win_sigma=1.5, weights=STANDARD_WEIGHTS, data_range=1.0)
    theirs = library_ms_ssim(x, y, data_range=1.0, size_average=False)
    torch.testing.assert_close(ours, theirs)
    with pytest.raises(AssertionError):  # why we do not call it on 32×32 images
        library_ms_ssim(x[:, :, :32, :32], y[:, :, :32, :32], data_range=1.0, win_size=3)


def test_ms_ssim_refuses_scales_smaller_than_the_window() -> None:
    x = torch.rand(1, 1, 32, 32)
    with pytest.raises(ConfigError, match="fewer scales or a smaller window"):
        ms_ssim(x, x, win_size=7, weights=STANDARD_WEIGHTS)


def test_symmetric_kl_is_zero_for_identical_posteriors_and_the_closed_form_by_hand() -> None:
    mean, logvar = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.equal(gaussian_symmetric_kl(mean, logvar, mean, logvar), torch.zeros(4))
    # N(0, 1) and N(1, 4): KL(p‖q) = log 2 + 2/8 − 1/2, KL(q‖p) = −log 2 + 5/2 − 1/2; sum 1.75
    p = LatentParams(torch.zeros(1, 1), torch.zeros(1, 1), None)
    q = LatentParams(torch.ones(1, 1), torch.full((1, 1), math.log(4.0)), None)
    assert float(posterior_symmetric_kl(p, q)) == pytest.approx(1.75, rel=1e-6)
    assert float(posterior_symmetric_kl(q, p)) == pytest.approx(1.75, rel=1e-6)
    # dimensions add: two copies of that pair give 3.5
    two = gaussian_symmetric_kl(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), torch.full((1, 2), math.log(4.0)))
    assert float(two) == pytest.approx(3.5, rel=1e-6)
    # categorical (0.5, 0.5) vs (0.25, 0.75): Σ (p − q)(log p − log q) = ¼ log 2 + ¼ log(3/2)
    logits_p, logits_q = torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[0.25, 0.75]]))
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert float(categorical_symmetric_kl(logits_p, logits_q)) == pytest.approx(expected, rel=1e-6)
    assert float(categorical_symmetric_kl(logits_p, logits_p)) == 0.0
    joint = posterior_symmetric_kl(LatentParams(p.mean, p.logvar, logits_p), LatentParams(q.mean, q.logvar, logits_q))
    assert float(joint) == pytest.approx(1.75 + expected, rel=1e-6)  # independent parts add


def test_attack_metrics_of_the_unattacked_input(mnist_test) -> None:  # type: ignore[no-untyped-def]
    model = rv.load_model("jointvae", "mnist")  # Gaussian and categorical parts
    x = mnist_test.images[:4]
    same = attack_metrics(model, x, x)
    assert set(same) == {"msssim_input", "msssim_reconstruction", "symmetric_kl"}
    for name in ("msssim_input", "msssim_reconstruction"):
        assert same[name] == pytest.approx([1.0] * 4, abs=1e-6), name
    assert same["symmetric_kl"] == pytest.approx([0.0] * 4, abs=1e-6)
    moved = attack_metrics(model, x, (x + 0.1).clamp(0, 1))
    assert (moved["msssim_input"] < 1).all() and (moved["symmetric_kl"] > 0).all()
