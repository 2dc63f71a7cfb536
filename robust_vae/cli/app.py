"""The ``robust-vae`` parser and entry point: each command lives in its own module here.

Errors caused by input, data or files print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from robust_vae.cli import (
    attack,
    classifier_robustness,
    compare,
    convergence,
    datasets,
    disentanglement,
    evaluate,
    models,
    report,
    robustness,
    study,
    train,
    traverse,
)
from robust_vae.cli.options import OneLineParser, setup_torch
from robust_vae.core.errors import RobustVAEError
from robust_vae.core.paths import default_cache_dir

# in the order of `robust-vae --help`
COMMANDS: tuple[Any, ...] = (models, datasets, train, evaluate, disentanglement, convergence, traverse, attack, robustness, report,
                             compare, study, classifier_robustness)


def build_parser() -> argparse.ArgumentParser:
    """The ``robust-vae`` parser with every command's subparser."""
    parser = OneLineParser(
        prog="robust-vae",
        description="Train, load and attack VAEs; write thesis-style adversarial success tables.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _save_traceback() -> Path | None:
    """Write the current exception's traceback under the cache; return the file (None if that fails)."""
    folder = default_cache_dir() / "errors"
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = folder / f"{stamp}-{os.getpid()}.txt"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(" ".join(["robust-vae", *sys.argv[1:]]) + "\n\n" + traceback.format_exc())
    except OSError:
        return None
    return path


def main(argv: list[str] | None = None) -> int:
    """``robust-vae``: 0 on success, 2 with one line on stderr for bad input, data or files,
    1 with one line (and the traceback written to a file) for an internal error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    prefix = f"robust-vae {args.command}"
    try:
        setup_torch(args)
        code: int = args.handler(args)
        return code
    except RobustVAEError as error:
        print(f"{prefix}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # the file system said no: a disk, permission or path problem
        where = f" ({error.filename})" if error.filename else ""
        print(f"{prefix}: error: {error.strerror or error}{where}: check the path, its permissions and the free "
              "disk space", file=sys.stderr)
        return 2
    except Exception as error:  # a bug: one line, the traceback in a file
        saved = _save_traceback()
        where = f"; traceback in {saved}" if saved else ""
        print(f"{prefix}: internal error: {type(error).__name__}: {error}{where} (please report it)",
              file=sys.stderr)
        return 1
