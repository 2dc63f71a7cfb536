"""Latent traversals (robust_vae.evaluation.traversal): a model without a prior in its codes' units."""

from __future__ import annotations

import torch

from robust_vae import load_model
from robust_vae.data import Dataset
from robust_vae.evaluation.traversal import code_scale, traversal_grid
from robust_vae.models import attackable


def test_a_model_without_a_prior_is_traversed_in_its_codes_units(mnist_test: Dataset) -> None:
    """The shipped `ae`'s codes are spread over several units per latent, so the prior's −3..3
    would be a sliver of them: with ``scale`` each row runs over mean ± span·sd of the codes."""
    model = load_model("ae", "mnist", seed=0)
    images = mnist_test.images[:300]
    mean, std = code_scale(model, images, batch=64)  # batched: the same statistics as all at once
    with torch.no_grad():
        codes = attackable(model).encode(images).mean
    assert torch.allclose(mean, codes.mean(dim=0), atol=1e-4) and torch.allclose(std, codes.std(dim=0), atol=1e-4)
    assert float(std.min()) > 3.0  # the trained codes are far wider than a unit prior

    image = mnist_test.images[0]
    rows = traversal_grid(model, image, span=2.0, steps=3, scale=(mean, std))
    assert len(rows) == 10 and rows[0].shape == (3, 32, 32)
    with torch.no_grad():
        code = attackable(model).encode(image.unsqueeze(0)).mean[0]
        for dim in (0, 7):
            varied = code.repeat(3, 1)
            varied[:, dim] = mean[dim] + torch.tensor([-2.0, 0.0, 2.0]) * std[dim]
            expected = attackable(model).decode(varied)[:, 0].numpy()
            assert abs(rows[dim] - expected).max() < 1e-5
    plain = traversal_grid(model, image, span=2.0, steps=3)  # the prior's units
    assert abs(rows[0][0] - rows[0][-1]).mean() > abs(plain[0][0] - plain[0][-1]).mean()
