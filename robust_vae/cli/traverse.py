"""``robust-vae traverse``: the latent-traversal figure of a shipped model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robust_vae.cli.options import add_common, positive_int
from robust_vae.core.errors import ConfigError
from robust_vae.core.paths import writable_file
from robust_vae.data import load_dataset_at
from robust_vae.evaluation.traversal import code_scale, plot_traversal
from robust_vae.zoo import load_model

SCALE_IMAGES = 2000  # test images whose codes set the units of a model without a prior


def add_parser(sub: Any) -> None:
    """Register the command on the ``robust-vae`` subparsers ``sub``."""
    p = sub.add_parser("traverse", help="latent-traversal figure of a shipped model")
    add_common(p)
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, default=0, help="model seed (default: 0)")
    p.add_argument("--image", type=int, default=0, help="test image whose code is traversed")
    p.add_argument("--span", type=float, default=3.0, help="Gaussian latents go from -span to +span (a model without a prior, ae: its test codes' mean ± span standard deviations)")
    p.add_argument("--steps", type=positive_int, default=10, help="columns per Gaussian latent")
    p.add_argument("--out", type=Path, default=None,
                   help="PNG path (default: reports/<dataset>/<model>/traversal.png)")
    p.set_defaults(handler=cmd_traverse)


def cmd_traverse(args: argparse.Namespace) -> int:
    model = load_model(args.model, args.dataset, seed=args.seed, device=args.device)
    test = load_dataset_at(args.dataset, "test", model.image_shape, args.data_dir, what=args.model)
    default = Path("reports") / args.dataset / args.model / (
        "traversal.png" if args.seed == 0 else f"traversal-seed{args.seed}.png")
    if not 0 <= args.image < len(test):
        raise ConfigError(f"--image {args.image} is not a test image: choose 0 to {len(test) - 1}")
    out = writable_file(args.out or default)
    label = int(test.labels[args.image])  # used by a conditional model only
    # a model without a prior (ae) in its codes' own units: mean ± span sd over the first test images
    scale = None if getattr(model, "stochastic", True) else code_scale(model, test.images[:SCALE_IMAGES])
    plot_traversal(model, test.images[args.image], out, span=args.span, steps=args.steps,
                   title=f"{args.model} (seed {args.seed}) latent traversal", label=label, scale=scale)
    print(f"wrote {out}")
    return 0


