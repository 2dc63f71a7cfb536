"""``robust-vae evaluate``: recompute a shipped model's card metrics."""

from __future__ import annotations

import argparse
import json
from typing import Any

from robust_vae.cli.options import add_common
from robust_vae.data import load_dataset_at
from robust_vae.report.classes import ClassLabels, for_dataset
from robust_vae.training import evaluate_vae
from robust_vae.zoo import find_card, load_classifier_with_card, load_model, update_card


def add_parser(sub: Any) -> None:
    """Register the command on the ``robust-vae`` subparsers ``sub``."""
    p = sub.add_parser("evaluate", help="recompute a shipped model's card metrics")
    add_common(p)
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, default=0, help="model seed (default: 0)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--update-card", action="store_true",
                   help="write the recomputed metrics into the card (e.g. after a new evaluation classifier)")
    p.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    model = load_model(args.model, args.dataset, seed=args.seed, device=args.device)
    card = find_card(args.model, args.dataset, args.seed)
    classifier, classifier_card = load_classifier_with_card(args.dataset, device=args.device,
                                                           image_shape=model.image_shape)
    # the test sample the card was evaluated on (e.g. dSprites' whole test split: samples=0)
    test = load_dataset_at(args.dataset, "test", model.image_shape, args.data_dir, what=args.model,
                           options=card.data.get("dataset_options"))
    metrics = evaluate_vae(model, test, classifier, step=card.data.get("steps"))
    if args.update_card:
        update_card(card, metrics=metrics,
                    recon_classifier_sha256=classifier_card.data["sha256"])
        print(f"updated {card.path}")
    if args.json:
        print(json.dumps({"name": args.model, "seed": args.seed, "metrics": metrics,
                          "card_metrics": card.data.get("metrics", {})}, indent=2))
        return 0
    stored = card.data.get("metrics", {})
    print(f"{'metric':<18}{'recomputed':>14}{'card':>14}")
    for key, value in metrics.items():
        if isinstance(value, float):
            old = stored.get(key)
            old_text = f"{old:14.4f}" if isinstance(old, float) else f"{'-':>14}"
            print(f"{key:<18}{value:14.4f}{old_text}")
    if "recon_confusion" in metrics:
        print()
        print(confusion_text(metrics["recon_confusion"], for_dataset(args.dataset)))
    return 0


def confusion_text(confusion: list[list[int]], classes: ClassLabels) -> str:
    """The reconstruction confusion as a table: one row per class of the test images, the counts of
    the classes the classifier gives their reconstructions, and the row's accuracy."""
    names = [classes.name(k) for k in range(len(confusion))]
    width = max(12, *(len(n) + 2 for n in names))
    lines = [f"{'reconstructions of':<{width}}" + "".join(f"{n:>{width}}" for n in names) + f"{'accuracy':>{width}}"]
    for k, row in enumerate(confusion):
        accuracy = row[k] / sum(row) if sum(row) else float("nan")
        lines.append(f"{names[k]:<{width}}" + "".join(f"{c:>{width}}" for c in row) + f"{accuracy:>{width}.4f}")
    return "\n".join(lines)


