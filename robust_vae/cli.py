"""The ``robust-vae`` command line. Each subcommand is a small function over the Python API.

Errors caused by input, data or files print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

from robust_vae.errors import RobustVAEError

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Handler] = {}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_common(parser: argparse.ArgumentParser, dataset: bool = True) -> None:
    if dataset:
        parser.add_argument("--dataset", default="mnist", help="dataset name (default: mnist)")
    parser.add_argument("--data-dir", default=None,
                        help="data root holding one folder per dataset (else $ROBUST_VAE_DATA, else download)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="torch CPU threads (default: torch's choice)")


def _setup_torch(args: argparse.Namespace) -> None:
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    device = getattr(args, "device", "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RobustVAEError(f"--device {device} requested but CUDA is not available: use --device cpu")


# ----------------------------------------------------------------- models / training
def cmd_models(args: argparse.Namespace) -> int:
    from robust_vae.zoo import list_cards

    cards = list_cards(args.dataset)
    if args.json:
        print(json.dumps([card.summary() for card in cards], indent=2))
        return 0
    if not cards:
        print("no shipped models" + (f" for {args.dataset}" if args.dataset else ""))
        return 0
    print(f"{'name':<18}{'dataset':<9}{'seed':<6}{'metrics'}")
    for card in cards:
        s = card.summary()
        metrics = ", ".join(
            f"{k}={v:.4f}" for k, v in s["metrics"].items() if isinstance(v, float)
        )
        seed = "-" if s["seed"] is None else str(s["seed"])
        print(f"{s['name']:<18}{s['dataset']:<9}{seed:<6}{metrics}")
    return 0


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from robust_vae.classifier import ClassifierConfig, train_classifier

    config = ClassifierConfig(epochs=args.epochs, lr=args.lr, seed=args.seed)
    card = train_classifier(args.dataset, config, out_dir=args.out, device=args.device,
                            data_dir=args.data_dir)
    print(f"wrote {card.weights_path}: test accuracy {card.data['metrics']['test_accuracy']:.4f}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from robust_vae.training import train_vae

    overrides = {}
    if args.weight_decay is not None:
        overrides["weight_decay"] = args.weight_decay
    result = train_vae(args.model, args.dataset, seed=args.seed, steps=args.steps, out_dir=args.out,
                       device=args.device, data_dir=args.data_dir,
                       checkpoint_every=args.checkpoint_every, overrides=overrides)
    assert result is not None
    metrics = result.card.data["metrics"]
    print(json.dumps({"weights": str(result.card.weights_path), "metrics": metrics}, indent=2))
    return 0


# ----------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robust-vae",
        description="Train, load and attack VAEs; write thesis-style adversarial success tables.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list shipped models and their metrics")
    p.add_argument("--dataset", default=None, help="only this dataset")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(handler=cmd_models)

    p = sub.add_parser("train-classifier", help="train the evaluation classifier (protocol §3)")
    _add_common(p)
    p.add_argument("--epochs", type=_positive_int, default=20)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: models/<dataset>/)")
    p.set_defaults(handler=cmd_train_classifier)

    p = sub.add_parser("train", help="train a VAE family; rerun the same command to resume")
    _add_common(p)
    p.add_argument("--model", required=True, help="family: vae, vae-wd, jointvae, betavae, betavae-capacity")
    p.add_argument("--steps", type=_positive_int, default=None, help="training steps (default: 100000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=None, help="override Adam weight decay")
    p.add_argument("--checkpoint-every", type=_positive_int, default=2000)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: models/<dataset>/)")
    p.set_defaults(handler=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        _setup_torch(args)
        return args.handler(args)
    except RobustVAEError as error:
        print(f"robust-vae {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robust-vae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
