"""``robust-vae report``: re-render saved runs; several runs side by side; ``--html``: one page per folder."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from robust_vae.core.errors import ConfigError
from robust_vae.core.paths import writable
from robust_vae.evaluation import SuccessMatrix
from robust_vae.report.classes import shared_classes
from robust_vae.report.success import (
    auddc_csv_frame,
    auddc_markdown,
    marginals_csv_frame,
    marginals_latex,
    marginals_markdown,
)


def add_parser(sub: Any) -> None:
    """Register the command on the ``robust-vae`` subparsers ``sub``."""
    p = sub.add_parser("report", help="re-render tables and figures from saved runs; compare several; "
                       "--html: a self-contained web page of a run, comparison or study")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="run folders (with --html: run, comparison or study folders)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: in place; several runs: their common parent/comparison); "
                   "with --html the page's file (default: <folder>/index.html; a folder: <folder>/index.html)")
    p.add_argument("--html", action="store_true",
                   help="write one static, self-contained HTML page per folder (tables, figures, commands) "
                   "instead of re-rendering; open it in any browser, no server needed")
    p.set_defaults(handler=cmd_report)


def cmd_html(folders: list[Path], out: Path | None) -> int:
    """``robust-vae report --html FOLDER... [--out FILE]``: write and name each page."""
    from robust_vae.report.html import PAGE_NAME, write_html  # here: other commands need no Markdown library

    if out is not None and len(folders) > 1:
        raise ConfigError(f"--out names one page but {len(folders)} folders were given: "
                          f"drop --out (each page goes to <folder>/{PAGE_NAME}) or give one folder")
    for folder in folders:
        target = out if out is not None else folder / PAGE_NAME
        path = write_html(folder, writable(target if target.suffix else target / PAGE_NAME))
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``robust-vae report RUN_DIR...``: re-render runs; several side by side; ``--html``: web pages."""
    if args.html:
        return cmd_html(list(args.runs), args.out)
    runs = [SuccessMatrix.load(path) for path in args.runs]
    names = [Path(p).name for p in args.runs]
    if len(set(names)) < len(names):  # e.g. reports/mnist/vae/thesis and reports/mnist/jointvae/thesis
        common = os.path.commonpath([str(Path(p).resolve()) for p in args.runs])
        names = [str(Path(p).resolve().relative_to(common)) for p in args.runs]
    for path, name, run in zip(args.runs, names, runs):
        target = Path(args.out) / name if args.out and len(runs) > 1 else Path(args.out or path)
        writable(target)
        run.save(target)
        print(f"re-rendered {path} -> {target}")
    if len(runs) > 1:
        recipes = {run.metadata.get("recipe") for run in runs}
        labels = [run.metadata.get("label", str(p)) + ("" if len(recipes) == 1 else f" / {run.metadata.get('recipe')}")
                  for p, run in zip(args.runs, runs)]
        if len(set(labels)) < len(labels):
            labels = [str(p) for p in args.runs]
        by_run = {label: run.marginals() for label, run in zip(labels, runs)}
        classes = shared_classes(run.classes for run in runs)  # "class", unnamed, when the runs' datasets differ
        out = Path(args.out) if args.out else Path(os.path.commonpath([str(Path(p).resolve()) for p in args.runs])) / "comparison"
        writable(out).mkdir(parents=True, exist_ok=True)
        marginals_csv_frame(by_run).to_csv(out / "marginals.csv", index=False)
        (out / "marginals.tex").write_text(marginals_latex(
            by_run, caption=f"Marginal attack success rates per source {classes.noun}.", label="tab:marginals",
            classes=classes))
        (out / "marginals.md").write_text(marginals_markdown(by_run, classes))
        print(marginals_markdown(by_run, classes))
        print(f"wrote {out}/marginals.csv, marginals.tex, marginals.md")
        swept = {label: table for label, run in zip(labels, runs) if (table := run.auddc()) is not None}
        if swept:  # the runs that are targeted sweeps: their AUDDC side by side
            auddc_csv_frame(swept).to_csv(out / "auddc.csv", index=False)
            (out / "auddc.md").write_text(auddc_markdown(swept, classes) + "\n")
            print(auddc_markdown(swept, classes))
            print(f"wrote {out}/auddc.csv, auddc.md")
    return 0


