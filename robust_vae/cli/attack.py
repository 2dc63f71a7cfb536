"""``robust-vae attack``: one model under one recipe on every class pair."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robust_vae.attacks import parse_overrides
from robust_vae.cli.options import DEFAULT_PER_PAIR, add_common, add_sampling_arguments
from robust_vae.evaluation.run_config import RunConfig
from robust_vae.evaluation.runner import run_attack
from robust_vae.models.conditional import LABEL_SOURCES


def add_parser(sub: Any) -> None:
    """Register the command on the ``robust-vae`` subparsers ``sub``."""
    p = sub.add_parser(
        "attack", help="attack a shipped model on every class pair; write thesis tables and figures",
        description="Attack every ordered class pair of the test set and write cells.csv, matrix.csv, "
        "marginals.csv, matrix.tex, marginals.tex, summary.md, heatmaps.png, examples.png and run.json. "
        f"By default {DEFAULT_PER_PAIR} pairs per cell are sampled (1,800 pairs), which with the thesis "
        "recipe finishes within 10 minutes on a 2-core CPU; --full attacks every test pair. "
        "Rerunning the same command after an interruption resumes.")
    add_common(p)
    p.add_argument("--model", required=True, help="zoo name: vae, vae-wd, jointvae, betavae, ...")
    p.add_argument("--seed-model", type=int, default=0, help="which shipped seed of the model (default: 0)")
    p.add_argument("--attack", default="thesis", help="recipe name in attacks/ or a .toml path (default: thesis)")
    add_sampling_arguments(p, set_example="steps=200")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: reports/<dataset>/<model>/<recipe>/)")
    p.add_argument("--label", default=None, help="name of the model in tables (default: the model name)")
    p.add_argument("--label-source", choices=LABEL_SOURCES, default=None,
                   help="threat model of a conditional model such as cond-betavae (required for one): "
                   "'true' feeds the source's true label (the attacker changes pixels only), 'classifier' "
                   "the evaluation classifier's prediction on the attacked image (the attack must fool both)")
    p.add_argument("--restart", action="store_true",
                   help="discard a run of a different configuration found in --out")
    p.set_defaults(handler=cmd_attack)


def print_marginals(result) -> None:  # type: ignore[no-untyped-def]
    marginals = result.marginals()
    rows = marginals[marginals["kind"] == "source"]
    overall = marginals[marginals["kind"] == "overall"].iloc[0]
    print(f"\nMarginal attack success per source ({result.metadata.get('label', '')}):")
    print(f"{'source':>7}  {'AS target':>10}  {'AS ignore-target':>16}")
    for _, row in rows.iterrows():
        print(f"{int(row['cls']):>7}  {100 * row['as_target']:9.2f}%  {100 * row['as_ignore_target']:15.2f}%")
    print(f"{'mean':>7}  {100 * overall['as_target']:9.2f}%  {100 * overall['as_ignore_target']:15.2f}%")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The :class:`RunConfig` that ``robust-vae attack`` arguments describe."""
    return RunConfig.create(
        args.model, dataset=args.dataset, model_seed=args.seed_model, recipe=args.attack,
        overrides=parse_overrides(args.set), per_pair=None if args.full else args.per_pair, seed=args.seed,
        batch_size=args.batch_size, device=args.device, data_dir=args.data_dir, label=args.label,
        label_source=args.label_source,
    )


def cmd_attack(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    out = args.out or config.default_out()
    result = run_attack(config, out, restart=args.restart)
    print_marginals(result)
    written = sorted(p.name for p in Path(out).iterdir() if p.is_file() and not p.name.startswith("."))
    print(f"\nwrote {out}/ ({', '.join(written)})")
    return 0
