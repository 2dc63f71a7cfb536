"""Benchmarks: each module is a command (``python -m benchmarks.NAME``) that writes its
measurements to ``benchmarks/results/`` and prints the README table made from them."""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """Where a measurement ran: platform, processor, CPU count, load average, library versions."""
    from robust_vae.evaluation.success_matrix import library_versions

    return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "versions": library_versions()}


def write_report(report: dict[str, Any], out: Path, table: str) -> None:
    """``report`` as JSON at ``out``, then the README ``table`` and where it went."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(table)
    print(f"wrote {out}")


def results_parser(doc: str | None, default_out: Path) -> argparse.ArgumentParser:
    """A benchmark's parser with its two common options: ``--out`` (the JSON report) and
    ``--render`` (print the README table of ``--out`` and stop, measuring nothing)."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--render", action="store_true", help="print the README table of --out and stop")
    return parser


def rendered(args: argparse.Namespace, table: Callable[[dict[str, Any]], str]) -> bool:
    """With ``--render``, print ``table`` of the committed report at ``args.out``; True if it did."""
    if args.render:
        print(table(json.loads(Path(args.out).read_text())))
    return bool(args.render)
