"""``robust-vae study``: make a study's missing runs and report cards, then write its tables and figures.

The runs go one after another in this process, or with ``--workers`` / ``--scheduler`` /
``--jobqueue`` as tasks on a Dask cluster; the ``[robustness]`` report cards are always made
here, one after another, after the runs (each with its progress bar)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robust_vae.analysis.distributed import DEFAULT_LOCK_WAIT, JOBQUEUE_KINDS, ClusterOptions, run_on_cluster
from robust_vae.analysis.study import (
    format_status,
    make_cards,
    read_study,
    readme_draft,
    report,
    robustness_status,
    run_missing,
    study_status,
    write_text,
)
from robust_vae.analysis.study_eta import eta_groups, format_eta
from robust_vae.analysis.study_robustness import format_cards
from robust_vae.attacks import parse_overrides
from robust_vae.cli.options import add_common, positive_int
from robust_vae.core.errors import ConfigError
from robust_vae.core.paths import relative_path


def add_parser(sub: Any) -> None:
    """Register the command on the ``robust-vae`` subparsers ``sub``."""
    p = sub.add_parser(
        "study", help="run a study file's missing runs, then write its tables, comparisons and figures",
        description="Make every missing run of a study file (resuming partial ones, skipping models and "
        "recipes that do not exist yet) into <study folder>/runs/<model>-seed<S>/<recipe>/ and, with a [robustness] "
        "table, every missing classifier-free report card into <study folder>/robustness/<model>-seed<S>/ (made "
        "here, after the runs), then write the marginals, per-seed, comparison and attack-strength tables, figures "
        "and results.md next to it; with an [analysis] table also analysis/: does disentanglement predict "
        "robustness across its models?")
    add_common(p, dataset=False)
    add_arguments(p)
    p.set_defaults(handler=cmd_study)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``robust-vae study`` options ."""
    parser.add_argument("study", type=Path, metavar="STUDY_TOML", help="the study file, e.g. reports/mnist/study/study.toml")
    parser.add_argument("--per-pair", type=positive_int, default=None,
                        help="pairs per cell for every run, replacing the study file's per_pair")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one value of every recipe, e.g. --set steps=200 (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="study folder (default: the study file's folder)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the runs and report cards and whether each is done; make nothing")
    parser.add_argument("--report-only", action="store_true",
                        help="write the tables from the finished runs and cards without making the missing ones")
    parser.add_argument("--draft-readme", action="store_true",
                        help="also write README.draft.md: one sentence per comparison, to edit into README.md")
    cluster = parser.add_argument_group(
        "cluster", "make the missing runs as tasks on a Dask cluster (one task per run; the tables are the same "
        "as a local run's; the [robustness] report cards are still made locally; see the README, "
        "\"Sweeps on a cluster\")")
    cluster.add_argument("--workers", type=positive_int, default=None, metavar="N",
                         help="a local Dask cluster of N worker processes, one thread each (with --jobqueue: "
                         "N workers started as batch jobs)")
    cluster.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                         help="send the runs to an existing Dask scheduler (workers: `dask worker ADDRESS --nthreads 1`)")
    cluster.add_argument("--jobqueue", default=None, choices=JOBQUEUE_KINDS,
                         help="start the --workers as batch jobs with dask-jobqueue (configured in Dask's jobqueue.yaml)")
    cluster.add_argument("--lock-wait", type=float, default=DEFAULT_LOCK_WAIT, metavar="SECONDS",
                         help=f"how long a task waits for a run folder another live process holds "
                         f"(default: {DEFAULT_LOCK_WAIT:.0f})")


def cluster_options(args: argparse.Namespace) -> ClusterOptions | None:
    """The cluster the runs go to (None: one after another in this process)."""
    if args.workers is None and args.scheduler is None and args.jobqueue is None:
        return None
    return ClusterOptions(workers=args.workers, scheduler=args.scheduler, jobqueue=args.jobqueue,
                          threads=getattr(args, "threads", None) or 1, lock_wait=args.lock_wait)


def cmd_study(args: argparse.Namespace) -> int:
    """List, make (runs, then report cards) and report the study; nothing is made when a run or
    card folder holds another configuration."""
    cluster = cluster_options(args)  # checked before anything is read or run
    study = read_study(args.study, per_pair=args.per_pair, overrides=parse_overrides(args.set), out_dir=args.out)
    study.command = " ".join(["robust-vae study", str(args.study)]
                             + ([f"--per-pair {args.per_pair}"] if args.per_pair else [])
                             + [f"--set {item}" for item in args.set]
                             + ([f"--out {args.out}"] if args.out else []))
    device, data_dir = getattr(args, "device", "cpu"), getattr(args, "data_dir", None)
    statuses = study_status(study)
    cards = robustness_status(study, data_dir)
    conflicts = [st.reason for st in statuses if st.state == "conflict"] + \
        [card.reason for card in cards if card.state == "conflict"]
    if conflicts and not args.dry_run:
        raise ConfigError(f"{conflicts[0]}: nothing was run; delete that folder or run the study with "
                          "the configuration it was made with (see --dry-run)")
    print(f"study {study.path}: {len(study.runs)} runs, "
          f"{'full test set' if study.per_pair is None else f'per_pair {study.per_pair}'} unless a runs table sets its own"
          + (f"; {len(cards)} robustness report card(s)" if study.robustness is not None else ""))
    print(format_status(statuses, study.out_dir))
    if study.robustness is not None:
        print()
        print(format_cards(cards, study.out_dir))
    if not args.report_only:
        waiting = sum(st.state == "skipped" for st in statuses) + sum(card.state == "skipped" for card in cards)
        print(format_eta(eta_groups(statuses, cards), waiting))
    if args.dry_run:
        return 0
    if not args.report_only:
        if cluster is None:
            made = run_missing(study, statuses, device=device, data_dir=data_dir)
        else:
            made = run_on_cluster(study, statuses, cluster, device=device, data_dir=data_dir)
        if made:
            statuses = study_status(study)
        else:
            print("every available run is already done: nothing to run")
        if study.robustness is not None:
            if make_cards(study, cards, device=device, data_dir=data_dir):
                cards = robustness_status(study, data_dir)
            else:
                print("every available robustness report card is already done: nothing to make")
    parts = report(study, statuses, cards=cards)
    if args.draft_readme:
        parts["written"].append(write_text(study.out_dir, "README.draft.md", readme_draft(study, parts)))
    skipped = [st for st in statuses if st.state == "skipped"]
    for st in skipped:
        print(f"skipped {st.spec.name} seed {st.spec.seed} / {st.spec.recipe}: {st.reason}")
    for card in cards:
        if card.state == "skipped":
            print(f"skipped the robustness card of {card.spec.model} seed {card.spec.seed}: {card.reason}")
    print()
    print(parts["results_md"])
    print("wrote " + ", ".join(relative_path(p, study.out_dir) for p in parts["written"]) + f" in {study.out_dir}/")
    return 0
