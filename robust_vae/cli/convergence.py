"""``robust-vae convergence``: a model's disentanglement scores over its training snapshots, and
whether they stopped changing between the last two (``--measure`` scores the unmeasured ones)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from robust_vae.analysis.convergence import (
    DEFAULT_TOLERANCE,
    HEADLINE_SCORES,
    last_changes,
    score_trajectory,
    settling_frame,
    training_checkpoints,
)
from robust_vae.cli.options import add_common
from robust_vae.core.errors import ConfigError
from robust_vae.core.paths import writable_folder
from robust_vae.evaluation.disentanglement import card_record, zoo_disentanglement
from robust_vae.evaluation.disentanglement.model import factor_source
from robust_vae.report.convergence import plot_score_trajectories, settling_markdown
from robust_vae.zoo import update_card

FILES = ("convergence.csv", "settling.csv", "convergence.md", "convergence.png")


def add_parser(sub: Any) -> None:
    """Register the command on the ``robust-vae`` subparsers ``sub``."""
    p = sub.add_parser(
        "convergence", help="disentanglement scores over a model's training snapshots: have they settled?",
        description="Collect the snapshots of zoo models trained with --snapshot-every, read the disentanglement "
        "scores recorded in their cards, and say whether each score moved by less than --tolerance between the "
        "last two checkpoints. Writes convergence.csv, settling.csv, convergence.md and convergence.png.")
    add_common(p, dataset=False)
    p.add_argument("--dataset", default="dsprites", help="a dataset with ground-truth factors (default: dsprites)")
    p.add_argument("--model", nargs="+", required=True, help="zoo name(s) trained with --snapshot-every")
    p.add_argument("--seed-model", type=int, nargs="+", default=[0], help="model seed(s) (default: 0)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"largest |change| that counts as settled (default: {DEFAULT_TOLERANCE})")
    p.add_argument("--measure", action="store_true",
                   help="first score every checkpoint without recorded scores (robust-vae disentanglement's "
                        "defaults, about 8 CPU-minutes each) and record them in its card")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(handler=cmd_convergence)


def cmd_convergence(args: argparse.Namespace) -> int:
    if not args.tolerance > 0:
        raise ConfigError(f"--tolerance must be > 0, got {args.tolerance}")
    source = factor_source(args.dataset)
    out = writable_folder(args.out)
    pairs = [(model, seed) for model in args.model for seed in args.seed_model]
    checkpoints = {(model, seed): training_checkpoints(model, source.name, seed) for model, seed in pairs}
    if args.measure:
        todo = [card for cards in checkpoints.values() for card in cards if not card.disentanglement_scores]
        for card in tqdm(todo, desc="checkpoints scored", unit="model"):
            command = (f"robust-vae disentanglement --model {card.name} --dataset {source.name} "
                       f"--seed-model {card.seed} --seed 0")
            result = zoo_disentanglement(card.name, source.name, card.seed if card.seed is not None else 0,
                                         device=args.device, seed=0, progress=True)
            update_card(card, disentanglement=card_record(result, command))
    trajectory = pd.concat([score_trajectory(model, source.name, seed) for model, seed in pairs], ignore_index=True)
    settling = settling_frame(last_changes(trajectory), args.tolerance)
    out.mkdir(parents=True, exist_ok=True)
    trajectory.to_csv(out / "convergence.csv", index=False)
    settling.to_csv(out / "settling.csv", index=False)
    command = (f"robust-vae convergence --dataset {source.name} --model {' '.join(args.model)} "
               f"--seed-model {' '.join(map(str, args.seed_model))} --tolerance {args.tolerance:g} --out {args.out}")
    table = settling_markdown(settling, args.tolerance)
    (out / "convergence.md").write_text(f"# Disentanglement over training\n\n`{command}`\n\n{table}\n")
    plot_score_trajectories(trajectory, HEADLINE_SCORES, out / "convergence.png", args.tolerance)
    unsettled = settling[~settling["settled"]]
    print(table)
    print(f"\n{len(settling) - len(unsettled)} of {len(settling)} scores settled within ±{args.tolerance:g}; "
          f"wrote {out}/ ({', '.join(FILES)})")
    return 0
