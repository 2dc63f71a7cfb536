"""``robust-vae datasets``: every registered dataset with its sizes, image shape, classes and factors.

The listing reads no image: a dataset whose files are missing gets "files not found" in its
``files`` column instead of an error.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from robust_vae.data import DATASETS, dataset_source
from robust_vae.report.tables import markdown_table

HEADER = ["dataset", "train", "test", "image (C×H×W)", "classes", "factors", "options", "files"]


def add_parser(sub: Any) -> None:
    """Register the command on the ``robust-vae`` subparsers ``sub``."""
    p = sub.add_parser("datasets", help="list the datasets, their sizes, classes and factors")
    p.add_argument("--data-dir", default=None,
                   help="data root holding one folder per dataset (else $ROBUST_VAE_DATA)")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(handler=cmd_datasets)


def dataset_rows(data_dir: str | None = None) -> list[dict[str, Any]]:
    """One ``DatasetSource.info`` dict per registered dataset, in registry order."""
    return [dataset_source(name).info(data_dir) for name in DATASETS.names()]


def cmd_datasets(args: argparse.Namespace) -> int:
    rows = dataset_rows(args.data_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(datasets_markdown(rows))
    return 0


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _cells(row: dict[str, Any]) -> list[str]:
    """The Markdown cells of one ``info`` row."""
    sizes = row["split_sizes"] or {}
    shape = row["image_shape"]
    factors = ", ".join(f"{n} ({s})" for n, s in zip(row["factor_names"], row["factor_sizes"])) or "–"
    options = ", ".join(f"{k}={'auto' if v is None else v}" for k, v in row["options"].items()) or "–"
    return [f"`{row['name']}`", _count(sizes.get("train")), _count(sizes.get("test")),
            "×".join(map(str, shape)) if shape else "from files", _count(row["num_classes"]), factors, options,
            row["files"]]


def datasets_markdown(rows: list[dict[str, Any]]) -> str:
    """The listing as a Markdown table, each dataset's description below it."""
    table = markdown_table(HEADER, [_cells(row) for row in rows], align="lrrlrlll")
    notes = "\n".join(f"- `{row['name']}`: {row['description']}" for row in rows)
    return f"{table}\n\n{notes}"
