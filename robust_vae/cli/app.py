"""The ``robust-vae`` parser and entry point: each command lives in its own module here.

Errors caused by input, data or files print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from robust_vae.cli import (
    attack,
    classifier_robustness,
    compare,
    evaluate,
    models,
    report,
    study,
    train,
    traverse,
)
from robust_vae.cli.options import OneLineParser, setup_torch
from robust_vae.core.errors import RobustVAEError

# in the order of `robust-vae --help`
COMMANDS: tuple[Any, ...] = (models, train, evaluate, traverse, attack, report, compare, study, classifier_robustness)


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        setup_torch(args)
        code: int = args.handler(args)
        return code
    except RobustVAEError as error:
        print(f"robust-vae {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robust-vae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
