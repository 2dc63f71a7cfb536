"""``robust-vae compare``: group A − group B of runs, with bootstrap intervals and paired tests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from robust_vae.analysis.comparison import compare_runs, default_out
from robust_vae.cli.options import positive_int
from robust_vae.core.paths import writable_folder


def add_parser(sub: Any) -> None:
    """Register the command on the ``robust-vae`` subparsers ``sub``."""
    p = sub.add_parser(
        "compare", help="group A minus group B of runs: mean AS with bootstrap intervals and paired tests",
        description="Compare two groups of finished runs (e.g. the seeds of two models): A − B in mean AS "
        "target and AS ignore-target (per run the unweighted mean over cells, averaged over the group's runs), "
        "95% intervals from a hierarchical bootstrap (seeds, then examples within cells), and paired tests "
        "over the cells (Wilcoxon signed-rank, sign-flip permutation). Writes comparison.csv, .tex and .md and "
        "prints the Markdown. Example: robust-vae compare --a runs/jointvae-seed*/thesis --b runs/vae-seed*/thesis")
    p.add_argument("--a", nargs="+", type=Path, required=True, metavar="RUN_DIR", help="group A's run folders")
    p.add_argument("--b", nargs="+", type=Path, required=True, metavar="RUN_DIR", help="group B's run folders")
    p.add_argument("--label-a", default=None, help="name of group A (default: its model, plus recipe if not thesis)")
    p.add_argument("--label-b", default=None, help="name of group B")
    p.add_argument("--bootstrap", type=positive_int, default=2000, help="bootstrap replicates (default: 2000)")
    p.add_argument("--permutations", type=positive_int, default=10_000, help="sign flips (default: 10000)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap and permutations")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: <common parent of the runs>/compare-<A>-vs-<B>/)")
    p.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    """``robust-vae compare --a RUN_DIR... --b RUN_DIR...``: write and print the comparison."""
    comparison = compare_runs(args.a, args.b, args.label_a, args.label_b, bootstrap=args.bootstrap,
                              seed=args.seed, permutations=args.permutations)
    out = writable_folder(args.out or default_out([*args.a, *args.b], comparison.label_a, comparison.label_b))
    paths = comparison.save(out)
    for warning in comparison.warnings:
        print(f"robust-vae compare: warning: {warning}", file=sys.stderr)
    print(comparison.to_markdown())
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0
