"""Benchmarks: each module is a command (``python -m benchmarks.NAME``) that writes its
measurements to ``benchmarks/results/`` and prints the README table made from them."""

from __future__ import annotations

import json
import os
import platform
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
