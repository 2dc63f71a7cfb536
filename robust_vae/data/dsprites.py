"""dSprites (Matthey et al. 2017), rendered by our own code: no download, any batch on demand.

The factor grid is dSprites' (the ``metadata`` of ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``
shown in deepmind/dsprites-dataset's ``dsprites_reloading_example.ipynb``; its README lists the
same ranges), without the constant colour factor:

============  ====  ===========================================================
factor        size  values
============  ====  ===========================================================
shape            3  square, ellipse, heart (their values 1, 2, 3)
scale            6  0.5, 0.6, ..., 1.0 (linspace(0.5, 1, 6))
orientation     40  linspace(0, 2π, 40) radians: *both ends included*, as in the original,
                    so orientations 0 and 39 give the same image (dsprites-dataset issue #7)
posX            32  linspace(0, 1, 32)
posY            32  linspace(0, 1, 32)
============  ====  ===========================================================

3 · 6 · 40 · 32 · 32 = 737,280 images. A flat index enumerates the grid in dSprites' order
(posY fastest, then posX, orientation, scale, shape), so index ``i`` here is image ``i`` of
the original file as far as the factors go. The pixels are ours: the original was drawn with
the LÖVE framework, whose canvas transforms were not published. Our geometry, in canvas units
([0, 1] across the image; x to the right, y *down*, as rows grow):

* the shape's centre is at ``0.2 + 0.6 · pos`` (x and y), so one position step is
  0.6 / 31 of the width (1.24 px at 64×64) and no shape leaves the canvas;
* at scale 1 the square's side is 0.25; the ellipse's semi-axes are 0.16 (along x at
  orientation 0) and 0.08; the heart is the implicit curve (X² + Y² − 1)³ − X²Y³ ≤ 0,
  point down, shifted so its area centroid is the centre, 0.135 canvas units per unit
  (about as wide as the square's diagonal); the scale factor multiplies these sizes;
* orientation θ turns the shape about its centre (clockwise on screen, as y points down).

A pixel is 1 when its centre lies inside the shape, else 0: binary images, no anti-aliasing,
as in dSprites. Sizes of 64 and larger are rendered directly; smaller sizes that divide 64
(32, 16) are the 64×64 image averaged over (64/S)² blocks (area downsampling), so at 32×32 a
pixel is one of 0, ¼, ½, ¾, 1. Rendered directly at 32, one x step (0.62 px) would leave
about 1 % of neighbouring positions with identical images; averaged, every neighbouring x
and every neighbouring y pair of the full grid gives two different images (checked once,
exhaustively; the tests check a sample). float32 coordinates (the default) and float64 ones
agree except for a pixel whose centre lies within float32 rounding of an edge (6 pixels in
92,160 images). CPU and CUDA do the same elementwise arithmetic on the same tables, so they
should agree bit for bit (a test compares them where CUDA is present).

The split is by flat index: a ``torch.Generator`` seeded with 0 permutes the 737,280 indices,
the first 10 % (73,728) are the test split, the rest (663,552) the train split.
``load_dataset("dsprites", split)`` returns the first ``samples`` indices of that permuted
split (default 20,000 train / 5,000 test; ``samples=0`` means the whole split: 663,552
images at 32×32 float32 are 2.7 GB, at 64×64 10.9 GB) rendered at ``image_size`` (default 32,
the thesis network's input; 64 is dSprites' own size). ``labels`` are the shape index (the
class attacks use); ``factors`` the five factor indices in the order above.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F

from robust_vae.core.errors import DataError
from robust_vae.data.base import Dataset, DatasetSource, OptionValue, PathArg, register_dataset

SHAPES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (3, 6, 40, 32, 32)
NUM_IMAGES = math.prod(FACTOR_SIZES)  # 737,280
# The factor values of dSprites' metadata (float64, as Python floats).
FACTOR_VALUES: dict[str, tuple[float, ...]] = {
    "shape": (1.0, 2.0, 3.0),
    "scale": tuple(0.5 + 0.5 * i / 5 for i in range(6)),
    "orientation": tuple(2 * math.pi * i / 39 for i in range(40)),
    "posX": tuple(i / 31 for i in range(32)),
    "posY": tuple(i / 31 for i in range(32)),
}

RENDER_SIZE = 64  # dSprites' resolution; smaller images are block means of this one
MARGIN = 0.2  # canvas units between the border and the extreme centre positions
SQUARE_HALF_SIDE = 0.125
ELLIPSE_AXES = (0.16, 0.08)
HEART_UNIT = 0.135
HEART_CENTROID_Y = 0.29348  # area centroid of (X²+Y²−1)³ ≤ X²Y³ (numerically, 4000² grid)
MAX_RADIUS = SQUARE_HALF_SIDE * math.sqrt(2)  # the largest distance of any shape point from its centre

SPLIT_SEED = 0
TEST_FRACTION = 0.1
NUM_TEST = int(NUM_IMAGES * TEST_FRACTION)  # 73,728
DEFAULT_SAMPLES = {"train": 20_000, "test": 5_000}
DEFAULT_IMAGE_SIZE = 32


# ----------------------------------------------------------------- factor indices
def check_factors(factors: torch.Tensor) -> torch.Tensor:
    """``factors`` as (n, 5) int64, or a one-line DataError naming the bad factor."""
    if factors.dtype != torch.int64 or factors.dim() != 2 or factors.shape[1] != len(FACTOR_SIZES):
        raise DataError(f"dSprites factors must be (n, 5) int64 indices, got {tuple(factors.shape)} {factors.dtype}")
    if len(factors):
        for f, (name, size) in enumerate(zip(FACTOR_NAMES, FACTOR_SIZES)):
            low, high = int(factors[:, f].min()), int(factors[:, f].max())
            if low < 0 or high >= size:
                raise DataError(f"dSprites factor {name} index out of range: {low}..{high}, must be 0..{size - 1}")
    return factors


def factors_of(flat: torch.Tensor) -> torch.Tensor:
    """Flat indices (n,) in [0, 737,280) -> factor indices (n, 5), dSprites' order (posY fastest)."""
    columns = []
    rest = flat.to(torch.int64)
    for size in reversed(FACTOR_SIZES):
        columns.append(rest % size)
        rest = rest // size
    return torch.stack(columns[::-1], dim=1)


def flat_index(factors: torch.Tensor) -> torch.Tensor:
    """Factor indices (n, 5) -> flat indices (n,), the inverse of :func:`factors_of`."""
    flat = torch.zeros(factors.shape[0], dtype=torch.int64, device=factors.device)
    for f, size in enumerate(FACTOR_SIZES):
        flat = flat * size + factors[:, f]
    return flat


def split_indices(split: str) -> torch.Tensor:
    """The flat indices of ``split`` in their seeded random order: (663,552,) train, (73,728,) test."""
    permutation = torch.randperm(NUM_IMAGES, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return permutation[:NUM_TEST] if split == "test" else permutation[NUM_TEST:]


# ----------------------------------------------------------------- rendering
def _tables(dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """Per-index lookup tables (computed in float64 by Python, then cast): identical on every device."""
    angles = FACTOR_VALUES["orientation"]
    return {
        "cos": torch.tensor([math.cos(a) for a in angles], dtype=dtype, device=device),
        "sin": torch.tensor([math.sin(a) for a in angles], dtype=dtype, device=device),
        "scale": torch.tensor(FACTOR_VALUES["scale"], dtype=dtype, device=device),
        "centre": torch.tensor([MARGIN + (1 - 2 * MARGIN) * p for p in FACTOR_VALUES["posX"]],
                               dtype=dtype, device=device),
    }


def _inside(shape: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Whether shape-local points (u right, v down; canvas units at scale 1) lie in ``SHAPES[shape]``."""
    if shape == 0:
        return torch.maximum(u.abs(), v.abs()) <= SQUARE_HALF_SIDE
    if shape == 1:
        a = u / ELLIPSE_AXES[0]
        b = v / ELLIPSE_AXES[1]
        return a * a + b * b <= 1.0
    x = u / HEART_UNIT
    y = HEART_CENTROID_Y - v / HEART_UNIT  # math y points up, the heart's tip down
    x2 = x * x
    r = x2 + y * y - 1.0
    return r * r * r <= x2 * y * y * y


def _render_binary(factors: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """(n, 5) factor indices -> (n, 1, size, size) float32 in {0, 1}, pixel centres tested.

    Only a window around each centre is evaluated (the shape never reaches beyond it) and
    pasted into an empty canvas; every pixel gets the same arithmetic whatever the batch.
    """
    n, device = factors.shape[0], factors.device
    table = _tables(dtype, device)
    window = min(size, math.ceil(2 * MAX_RADIUS * size) + 4)
    steps = torch.arange(window, device=device)
    centre_x, centre_y = table["centre"][factors[:, 3]], table["centre"][factors[:, 4]]
    coords = []
    for centre in (centre_x, centre_y):
        origin = (torch.floor(centre * size).to(torch.int64) - window // 2).clamp(0, size - window)
        pixels = origin[:, None] + steps  # (n, window) pixel indices
        coords.append((pixels, (pixels.to(dtype) + 0.5) / size - centre[:, None]))
    (cols, dx), (rows, dy) = coords
    cos, sin = table["cos"][factors[:, 2]][:, None], table["sin"][factors[:, 2]][:, None]
    scale = table["scale"][factors[:, 1]][:, None, None]
    u = ((cos * dx)[:, None, :] + (sin * dy)[:, :, None]) / scale  # (n, window rows, window cols)
    v = ((cos * dy)[:, :, None] - (sin * dx)[:, None, :]) / scale
    inside = torch.zeros(n, window, window, dtype=torch.bool, device=device)
    for shape in range(len(SHAPES)):
        chosen = factors[:, 0] == shape
        if bool(chosen.any()):
            inside[chosen] = _inside(shape, u[chosen], v[chosen])
    canvas = torch.zeros(n, size, size, dtype=torch.float32, device=device)
    batch = torch.arange(n, device=device)[:, None, None]
    canvas[batch, rows[:, :, None], cols[:, None, :]] = inside.to(torch.float32)
    return canvas.unsqueeze(1)


def render(factors: torch.Tensor, image_size: int = RENDER_SIZE, device: torch.device | str | None = None,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """dSprites images of factor indices: (n, 5) int64 -> (n, 1, S, S) float32 in [0, 1].

    S >= 64: binary ({0, 1}), rendered at S; S < 64 (a divisor of 64): the 64×64 image's
    (64/S)²-block means. ``dtype`` is the coordinate arithmetic (float32, or float64 as a
    reference); ``device`` defaults to the device of ``factors``.
    """
    factors = check_factors(factors).to(device if device is not None else factors.device)
    if dtype not in (torch.float32, torch.float64):
        raise DataError(f"dSprites renders with float32 or float64 coordinates, not {dtype}")
    if image_size >= RENDER_SIZE:
        return _render_binary(factors, image_size, dtype)
    if image_size < 1 or RENDER_SIZE % image_size:
        raise DataError(f"dSprites image_size {image_size} is not supported: use 64, a larger size, or a divisor "
                        "of 64 (32, 16)")
    return F.avg_pool2d(_render_binary(factors, RENDER_SIZE, dtype), RENDER_SIZE // image_size)


def render_batches(factors: torch.Tensor, image_size: int, batch_size: int = 4096) -> torch.Tensor:
    """:func:`render` in batches (bounded temporary memory): (n, 5) -> (n, 1, S, S) float32 on CPU."""
    out = torch.empty(factors.shape[0], 1, image_size, image_size, dtype=torch.float32)
    for start in range(0, factors.shape[0], batch_size):
        out[start:start + batch_size] = render(factors[start:start + batch_size], image_size)
    return out


# ----------------------------------------------------------------- the dataset
@register_dataset
class DSprites(DatasetSource):
    """dSprites' factor grid rendered on demand (see the module docstring for values and geometry)."""

    name = "dsprites"
    num_classes: ClassVar[int | None] = len(SHAPES)
    class_names = SHAPES
    class_noun = "shape"  # the label is the shape factor
    description = ("dSprites (Matthey et al. 2017) rendered by robust-vae: 3 shapes × 6 scales × 40 orientations "
                   "× 32 × 32 positions = 737,280 binary 64×64 images; 90/10 split by index (seed 0); loads a seeded "
                   "sample (20,000 train / 5,000 test) at 32×32 by default; label = shape")
    split_sizes = {"train": NUM_IMAGES - NUM_TEST, "test": NUM_TEST}
    image_shape = (1, DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)
    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES
    options: ClassVar[dict[str, OptionValue]] = {"image_size": DEFAULT_IMAGE_SIZE, "samples": None}
    needs_files = False

    def load(self, split: str, data_dir: PathArg | None = None, **options: OptionValue) -> Dataset:
        """``samples`` images of the split (default 20,000 / 5,000; 0: all) at ``image_size``."""
        image_size = options.get("image_size", DEFAULT_IMAGE_SIZE) or DEFAULT_IMAGE_SIZE
        samples = options.get("samples")
        indices = split_indices(split)
        count = DEFAULT_SAMPLES[split] if samples is None else (len(indices) if samples == 0 else samples)
        if not 0 < count <= len(indices):
            raise DataError(f"dsprites {split} has {len(indices)} images: samples must be 1..{len(indices)} "
                            f"(or 0 for all), got {count}")
        factors = factors_of(indices[:count])
        return Dataset(name=self.name, split=split, images=render_batches(factors, image_size),
                       labels=factors[:, 0].clone(), factors=factors, factor_names=FACTOR_NAMES,
                       factor_sizes=FACTOR_SIZES, class_names=SHAPES)

    def render_factors(self, factors: torch.Tensor, **options: OptionValue) -> torch.Tensor:
        """:func:`render` at ``image_size`` (default 32, as loaded)."""
        return render(factors, options.get("image_size", DEFAULT_IMAGE_SIZE) or DEFAULT_IMAGE_SIZE)
