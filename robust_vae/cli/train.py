"""``robust-vae train`` and ``robust-vae train-classifier``: resumable training into the zoo."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from robust_vae.attacks import parse_overrides
from robust_vae.cli.options import add_common, add_dataset_options, dataset_options, positive_int
from robust_vae.models import FAMILIES
from robust_vae.training import ClassifierConfig, train_classifier, train_vae


def add_parser(sub: Any) -> None:
    """Register the command on the ``robust-vae`` subparsers ``sub``."""
    p = sub.add_parser("train-classifier", help="train the evaluation classifier (protocol §3)")
    add_common(p)
    add_dataset_options(p)
    p.add_argument("--architecture", default="lenet", choices=["lenet", "cnn"],
                   help="lenet (the thesis's) or cnn (three conv blocks with batch norm)")
    p.add_argument("--epochs", type=positive_int, default=20)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <zoo>/<dataset>/, the zoo being $ROBUST_VAE_MODELS or the package's robust_vae/zoo/weights/)")
    p.set_defaults(handler=cmd_train_classifier)

    p = sub.add_parser("train", help="train a VAE family; rerun the same command to resume")
    add_common(p)
    add_dataset_options(p)
    p.add_argument("--model", required=True, help="family: " + ", ".join(sorted(FAMILIES)))
    p.add_argument("--steps", type=positive_int, default=None, help="training steps (default: 100000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=None, help="override Adam weight decay")
    p.add_argument("--recon-scale", type=float, default=None, metavar="W",
                   help="weight of the reconstruction term in the objective (default 1); 4 trains 32×32 renders of "
                        "64×64 data (dsprites) with the 64×64 papers' β, γ and capacities")
    p.add_argument("--checkpoint-every", type=positive_int, default=2000)
    p.add_argument("--snapshot-every", type=positive_int, default=None, metavar="N",
                   help="also write the weights every N steps as zoo entries NAME-stepK (to score a run along its way)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="replace one config value of the family, e.g. --set beta=8 (repeatable; needs --name)")
    p.add_argument("--name", default=None,
                   help="zoo name of a variant trained with --set, e.g. betavae-b8 (default: the family)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <zoo>/<dataset>/, the zoo being $ROBUST_VAE_MODELS or the package's robust_vae/zoo/weights/)")
    p.set_defaults(handler=cmd_train)


def cmd_train_classifier(args: argparse.Namespace) -> int:
    config = ClassifierConfig(architecture=args.architecture, epochs=args.epochs, lr=args.lr, seed=args.seed)
    card = train_classifier(args.dataset, config, out_dir=args.out, device=args.device,
                            data_dir=args.data_dir, dataset_options=dataset_options(args))
    print(f"wrote {card.weights_path}: test accuracy {card.data['metrics']['test_accuracy']:.4f}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    overrides = {}
    if args.weight_decay is not None:
        overrides["weight_decay"] = args.weight_decay
    if args.recon_scale is not None:
        overrides["recon_scale"] = args.recon_scale
    result = train_vae(args.model, args.dataset, seed=args.seed, steps=args.steps, out_dir=args.out,
                       device=args.device, data_dir=args.data_dir,
                       checkpoint_every=args.checkpoint_every, overrides=overrides,
                       dataset_options=dataset_options(args), name=args.name, settings=parse_overrides(args.set),
                       snapshot_every=args.snapshot_every)
    assert result is not None
    metrics = result.card.data["metrics"]
    print(json.dumps({"weights": str(result.card.weights_path), "metrics": metrics}, indent=2))
    return 0


