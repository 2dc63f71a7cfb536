"""``robust-vae classifier-robustness``: the evaluation classifier's own accuracy and targeted
success under the same foolbox attack and ε as the classifier-guided VAE attacks."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from robust_vae.attacks import load_attack, parse_overrides, read_recipe
from robust_vae.cli.options import add_common, add_sampling_arguments
from robust_vae.core.paths import writable_folder
from robust_vae.data import load_dataset_at
from robust_vae.evaluation.classifier_robustness import classifier_robustness
from robust_vae.zoo import classifier_spec, find_card, load_classifier


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def add_parser(sub: Any) -> None:
    """Register the subcommand on the ``robust-vae`` subparsers ``sub``."""
    p = sub.add_parser(
        "classifier-robustness",
        help="the evaluation classifier's accuracy and targeted success under a foolbox attack",
        description="The discriminative baseline: attack the evaluation classifier itself with the "
        "foolbox attack of an e2e recipe (default e2e-linf, L∞ PGD) at each --eps, on the same "
        "class-pair sample as `robust-vae attack`. Writes robustness.csv, robustness.md, "
        "robustness.json and, per ε, a full report in eps-<ε>/ (cells.csv, matrix.csv, marginals.csv, "
        "matrix.tex, marginals.tex, summary.md, heatmaps.png, examples.png, run.json).")
    add_common(p)
    p.add_argument("--attack", default="e2e-linf",
                   help="an e2e recipe in attacks/ or a .toml path (default: e2e-linf)")
    p.add_argument("--eps", type=_budget, nargs="+", default=None, metavar="EPS",
                   help="one or more budgets (default: the recipe's epsilon, 0.1 for e2e-linf)")
    add_sampling_arguments(p, set_example="steps=50")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: reports/<dataset>/classifier/<recipe>/)")
    p.add_argument("--restart", action="store_true",
                   help="discard runs of a different configuration found in --out")
    p.set_defaults(handler=cmd_classifier_robustness)


def cmd_classifier_robustness(args: argparse.Namespace) -> int:
    # every check happens before anything is written
    card = find_card("classifier", args.dataset, None)
    test = load_dataset_at(args.dataset, "test", classifier_spec(card).image_shape, args.data_dir,
                           what=f"the {args.dataset} classifier")
    classifier = load_classifier(args.dataset, device=args.device)
    recipe = read_recipe(args.attack)
    attack = load_attack(args.attack, **parse_overrides(args.set)).bind(data_dir=args.data_dir)
    out = writable_folder(args.out or Path("reports") / args.dataset / "classifier" / recipe["name"])
    metadata = {
        "label": "classifier", "model": "classifier", "model_seed": None,
        "weights_sha256": card.data["sha256"], "classifier_sha256": card.data["sha256"],
        "recipe": recipe["name"], "recipe_description": recipe.get("description", ""),
        "command": "robust-vae " + " ".join(sys.argv[1:]),
    }
    result = classifier_robustness(classifier, test, attack, args.eps, None if args.full else args.per_pair,
                                   args.seed, batch_size=args.batch_size, out_dir=out, metadata=metadata,
                                   restart=args.restart)
    result.save(out)
    print(result.to_markdown())
    folders = ", ".join(f"eps-{e:g}/" for e in result.summary["epsilon"])
    print(f"wrote {out}/ (robustness.csv, robustness.md, robustness.json; {folders} with the full reports)")
    return 0
