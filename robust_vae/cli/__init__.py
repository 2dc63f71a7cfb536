"""The ``robust-vae`` command line: argument parsing and one module per command."""

from robust_vae.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
