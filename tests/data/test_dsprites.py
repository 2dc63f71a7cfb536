"""dSprites rendered by robust_vae.data.dsprites: the factor grid, exact factor semantics,
determinism, the split and ``load_dataset("dsprites", ...)``."""

from __future__ import annotations

import math

import pytest
import torch

from robust_vae.core.errors import DataError
from robust_vae.data import dataset_source, load_dataset
from robust_vae.data.dsprites import (
    DEFAULT_SAMPLES,
    ELLIPSE_AXES,
    FACTOR_NAMES,
    FACTOR_SIZES,
    FACTOR_VALUES,
    HEART_UNIT,
    MARGIN,
    NUM_IMAGES,
    NUM_TEST,
    SHAPES,
    SQUARE_HALF_SIDE,
    factors_of,
    flat_index,
    render,
    split_indices,
)

STEP_PX = (1 - 2 * MARGIN) / 31  # one position step, in canvas widths


def grid(**fixed: int | range) -> torch.Tensor:
    """Factor indices (n, 5) of every combination of the given values (ints or ranges), others 0."""
    axes = [fixed.get(name, 0) for name in FACTOR_NAMES]
    values = [torch.tensor([a] if isinstance(a, int) else list(a)) for a in axes]
    return torch.cartesian_prod(*values).reshape(-1, len(FACTOR_NAMES))


def centroid(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, S, S) -> centroid x and y in pixels (pixel centres at i + 0.5), each (n,)."""
    img = images[:, 0]
    centres = torch.arange(img.shape[-1], dtype=torch.float64) + 0.5
    mass = img.sum((-1, -2)).double()
    return (img.sum(-2).double() * centres).sum(-1) / mass, (img.sum(-1).double() * centres).sum(-1) / mass


def area(images: torch.Tensor) -> torch.Tensor:
    return images.sum((1, 2, 3))


# ----------------------------------------------------------------- the grid
def test_factor_grid_is_dsprites() -> None:
    # the values of dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz's metadata (colour left out)
    assert FACTOR_NAMES == ("shape", "scale", "orientation", "posX", "posY")
    assert FACTOR_SIZES == (3, 6, 40, 32, 32) and NUM_IMAGES == 737_280
    assert SHAPES == ("square", "ellipse", "heart") and FACTOR_VALUES["shape"] == (1.0, 2.0, 3.0)
    assert FACTOR_VALUES["scale"] == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9, 1.0], abs=1e-12)
    orientation = FACTOR_VALUES["orientation"]
    assert orientation[0] == 0.0 and orientation[1] == pytest.approx(0.16110732, abs=1e-8)
    assert orientation[-1] == pytest.approx(2 * math.pi, abs=1e-12)  # linspace(0, 2π, 40), both ends
    for name in ("posX", "posY"):
        assert FACTOR_VALUES[name][1] == pytest.approx(0.03225806, abs=1e-8)
        assert (FACTOR_VALUES[name][0], FACTOR_VALUES[name][-1]) == (0.0, 1.0)


def test_flat_index_is_dsprites_order() -> None:
    # posY fastest, then posX, orientation, scale, shape (the original's latents_classes order)
    flat = torch.tensor([0, 1, 32, 32 * 32, 40 * 32 * 32, 6 * 40 * 32 * 32, NUM_IMAGES - 1])
    assert factors_of(flat).tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0],
                                         [0, 1, 0, 0, 0], [1, 0, 0, 0, 0], [2, 5, 39, 31, 31]]
    every = torch.arange(NUM_IMAGES)
    assert torch.equal(flat_index(factors_of(every)), every)


def test_split_is_a_fixed_partition() -> None:
    train, test = split_indices("train"), split_indices("test")
    assert (len(train), len(test)) == (NUM_IMAGES - NUM_TEST, NUM_TEST) == (663_552, 73_728)
    seen = torch.zeros(NUM_IMAGES, dtype=torch.int64)
    seen[train] += 1
    seen[test] += 1
    assert bool((seen == 1).all())
    assert torch.equal(split_indices("test"), test)  # seeded: the same every time
    assert test[:5].tolist() == split_indices("test")[:5].tolist()
    # every factor value occurs in the test split in about its share
    counts = torch.bincount(factors_of(test)[:, 0], minlength=3)
    assert counts.tolist() == pytest.approx([NUM_TEST / 3] * 3, rel=0.02)


# ----------------------------------------------------------------- pixels
def test_images_are_binary_at_64_and_block_means_at_32() -> None:
    factors = factors_of(split_indices("test")[:64])
    big, small = render(factors), render(factors, 32)
    assert big.shape == (64, 1, 64, 64) and small.shape == (64, 1, 32, 32)
    assert big.dtype == small.dtype == torch.float32
    assert set(big.unique().tolist()) == {0.0, 1.0}
    assert set(small.unique().tolist()) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    torch.testing.assert_close(small, torch.nn.functional.avg_pool2d(big, 2), rtol=0, atol=0)
    assert bool((area(big) > 30).all())  # every sprite is visible and, with the margin, inside:
    assert float(big[..., 0, :].sum() + big[..., -1, :].sum() + big[..., 0].sum() + big[..., -1].sum()) == 0.0


@pytest.mark.parametrize("size", [64, 32])
@pytest.mark.parametrize("shape", range(3))
@pytest.mark.parametrize("scale", [0, 5])
def test_one_x_step_moves_the_centroid_right(size: int, shape: int, scale: int) -> None:
    images = render(grid(shape=shape, scale=scale, orientation=7, posX=range(32), posY=12), size)
    cx, cy = centroid(images)
    steps = cx.diff()
    expected = STEP_PX * size  # 1.24 px at 64, 0.62 px at 32
    assert float(cx[-1] - cx[0]) == pytest.approx(31 * expected, abs=0.6 * size / 64)  # over the whole range
    assert float((steps - expected).abs().max()) <= 0.45 * size / 64  # each step: pixel quantisation only
    assert float(cy.max() - cy.min()) <= 0.5 * size / 64  # x moves nothing vertically (but quantisation)


@pytest.mark.parametrize("shape", range(3))
def test_one_y_step_moves_the_centroid_down(shape: int) -> None:
    cx, cy = centroid(render(grid(shape=shape, scale=3, orientation=11, posX=20, posY=range(32))))
    assert float(cy[-1] - cy[0]) == pytest.approx(31 * STEP_PX * 64, abs=0.6)
    assert float((cy.diff() - STEP_PX * 64).abs().max()) <= 0.45 and float(cx.max() - cx.min()) <= 0.5


@pytest.mark.parametrize("shape", range(3))
def test_the_position_is_the_centroid_and_rotation_turns_about_it(shape: int) -> None:
    images = render(grid(shape=shape, scale=5, orientation=range(40), posX=9, posY=22))
    cx, cy = centroid(images)
    expected_x = (MARGIN + (1 - 2 * MARGIN) * 9 / 31) * 64
    expected_y = (MARGIN + (1 - 2 * MARGIN) * 22 / 31) * 64
    assert float((cx - expected_x).abs().max()) < 0.5 and float((cy - expected_y).abs().max()) < 0.5


EXACT_AREA = {0: (2 * SQUARE_HALF_SIDE) ** 2, 1: math.pi * ELLIPSE_AXES[0] * ELLIPSE_AXES[1],
              2: 3.66199 * HEART_UNIT ** 2}  # canvas units² at scale 1; the heart curve's area is 3.66199


@pytest.mark.parametrize("shape", range(3))
@pytest.mark.parametrize("scale, tolerance", [(0, 0.05), (5, 0.02)])
def test_rotation_preserves_area(shape: int, scale: int, tolerance: float) -> None:
    factors = grid(shape=shape, scale=scale, orientation=range(40), posX=range(0, 32, 3), posY=range(5, 32, 10))
    areas = area(render(factors)).view(40, -1)  # (orientation, position)
    exact = EXACT_AREA[shape] * FACTOR_VALUES["scale"][scale] ** 2 * 64 * 64
    # one image is off by its boundary pixels (up to 15 % for an axis-aligned small square);
    # averaged over positions, every orientation has the shape's exact area
    assert float((areas / exact - 1).abs().max()) <= 0.16
    assert float((areas.mean(1) / exact - 1).abs().max()) <= tolerance
    if shape == 2:  # and rotation does turn the shape: the heart has no rotational symmetry
        images = render(grid(shape=2, scale=scale, orientation=range(39), posX=13, posY=17))
        assert len({tuple(image.flatten().tolist()) for image in images}) == 39


def test_first_and_last_orientation_are_the_same_image_as_in_dsprites() -> None:
    first = render(grid(shape=range(3), scale=range(6), orientation=0, posX=range(0, 32, 5), posY=4))
    last = render(grid(shape=range(3), scale=range(6), orientation=39, posX=range(0, 32, 5), posY=4))
    assert torch.equal(first, last)  # 0 and 2π (dsprites-dataset issue #7)


@pytest.mark.parametrize("shape", range(3))
def test_scale_orders_area(shape: int) -> None:
    for orientation in (0, 5, 17, 30):
        areas = area(render(grid(shape=shape, scale=range(6), orientation=orientation, posX=16, posY=16)))
        assert bool((areas.diff() > 0).all()), areas
        assert float(areas[-1] / areas[0]) == pytest.approx(4.0, rel=0.12)  # area ∝ scale², (1/0.5)² = 4


@pytest.mark.parametrize("size", [64, 32])
def test_the_three_shapes_differ_at_every_scale(size: int) -> None:
    for scale in range(6):
        images = render(grid(shape=range(3), scale=scale, orientation=3, posX=16, posY=16), size)
        for a in range(3):
            for b in range(a + 1, 3):
                assert float((images[a] - images[b]).abs().sum()) >= (8.0 if size == 64 else 2.0), (scale, a, b)


def test_neighbouring_factors_stay_distinguishable_at_32() -> None:
    for shape in range(3):
        for scale in (0, 5):
            for orientation in (0, 13):
                xs = render(grid(shape=shape, scale=scale, orientation=orientation, posX=range(32), posY=9), 32)
                ys = render(grid(shape=shape, scale=scale, orientation=orientation, posX=21, posY=range(32)), 32)
                assert bool((xs[1:] != xs[:-1]).flatten(1).any(1).all()), (shape, scale, orientation)
                assert bool((ys[1:] != ys[:-1]).flatten(1).any(1).all()), (shape, scale, orientation)
        scales = render(grid(shape=shape, scale=range(6), orientation=8, posX=5, posY=25), 32)
        assert bool((scales[1:] != scales[:-1]).flatten(1).any(1).all())


# ----------------------------------------------------------------- determinism
def test_rendering_is_deterministic_and_batch_independent() -> None:
    factors = factors_of(torch.randint(0, NUM_IMAGES, (96,), generator=torch.Generator().manual_seed(3)))
    batch = render(factors)
    assert torch.equal(render(factors), batch)
    alone = torch.cat([render(factors[i:i + 1]) for i in range(len(factors))])
    assert torch.equal(alone, batch)
    order = torch.randperm(len(factors), generator=torch.Generator().manual_seed(4))
    assert torch.equal(render(factors[order]), batch[order])
    assert torch.equal(render(factors[:40], 32), torch.nn.functional.avg_pool2d(batch[:40], 2))


def test_float64_coordinates_agree_with_float32() -> None:
    # the two paths differ only where a pixel centre lies within float32 rounding of an edge:
    # measured 6 pixels in 92,160 images; here at most a handful, one pixel per image
    factors = factors_of(torch.randint(0, NUM_IMAGES, (2048,), generator=torch.Generator().manual_seed(5)))
    different = render(factors) != render(factors, dtype=torch.float64)
    assert int(different.sum()) <= 3
    assert int(different.flatten(1).sum(1).max()) <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_renders_the_same_images() -> None:
    factors = factors_of(torch.randint(0, NUM_IMAGES, (512,), generator=torch.Generator().manual_seed(6)))
    for size in (64, 32):
        gpu = render(factors, size, device="cuda")
        assert gpu.device.type == "cuda"
        assert torch.equal(gpu.cpu(), render(factors, size))


def test_bad_factors_and_sizes_are_one_line_errors() -> None:
    with pytest.raises(DataError, match="factor orientation index out of range: 40..40, must be 0..39"):
        render(torch.tensor([[0, 0, 40, 0, 0]]))
    with pytest.raises(DataError, match=r"\(n, 5\) int64"):
        render(torch.zeros(2, 5))
    with pytest.raises(DataError, match="image_size 48 is not supported"):
        render(grid(), 48)
    assert render(grid(), 128).shape == (1, 1, 128, 128)


# ----------------------------------------------------------------- the dataset
def test_load_dataset_returns_a_seeded_sample_with_factors() -> None:
    data = load_dataset("dsprites", "test", samples=300)
    assert (data.name, data.split, len(data), data.num_classes) == ("dsprites", "test", 300, 3)
    assert data.images.shape == (300, 1, 32, 32) and data.image_shape == (1, 32, 32)
    assert data.factors is not None and data.factors.dtype == torch.int64 and data.factors.shape == (300, 5)
    assert torch.equal(data.factors, factors_of(split_indices("test")[:300]))
    assert torch.equal(data.labels, data.factors[:, 0]) and data.class_names == SHAPES
    assert (data.factor_names, data.factor_sizes) == (FACTOR_NAMES, FACTOR_SIZES)
    assert torch.equal(data.images, render(data.factors, 32))
    assert load_dataset("dsprites", "test", samples=300) is data
    big = load_dataset("dsprites", "test", samples=50, image_size=64)
    assert big.images.shape == (50, 1, 64, 64) and torch.equal(big.factors, data.factors[:50])  # nested samples


def test_default_sample_sizes_and_the_source_description() -> None:
    assert DEFAULT_SAMPLES == {"train": 20_000, "test": 5_000}
    source = dataset_source("dsprites")
    assert source.split_sizes == {"train": 663_552, "test": 73_728} and source.image_shape == (1, 32, 32)
    assert (source.factor_names, source.factor_sizes) == (FACTOR_NAMES, FACTOR_SIZES)
    info = source.info()
    assert info["files"] == "none needed (rendered)" and info["num_classes"] == 3
    factors = grid(shape=2, scale=5, posX=3)
    assert torch.equal(source.render_factors(factors), render(factors, 32))
    assert torch.equal(source.render_factors(factors, image_size=64), render(factors))


def test_bad_options_are_one_line_errors() -> None:
    with pytest.raises(DataError, match="samples must be 1..73728"):
        load_dataset("dsprites", "test", samples=80_000)
    with pytest.raises(DataError, match="dataset dsprites has no option 'channels': its options are image_size, samples"):
        load_dataset("dsprites", "test", channels=3)
    with pytest.raises(DataError, match="dataset mnist has no option 'image_size': its options are none"):
        load_dataset("mnist", "test", image_size=64)
