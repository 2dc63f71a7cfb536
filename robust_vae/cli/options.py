"""What every command shares: the one-line-error parser and the common options."""

from __future__ import annotations

import argparse
from typing import NoReturn

from robust_vae.attacks import parse_overrides
from robust_vae.core.devices import check_device
from robust_vae.core.errors import ConfigError
from robust_vae.evaluation.run_config import DEFAULT_BATCH_SIZE, DEFAULT_PER_PAIR

__all__ = ["OneLineParser", "positive_int", "positive_float", "add_common", "add_dataset_options", "add_sampling_arguments",
           "dataset_options", "setup_torch",
           "parse_overrides", "DEFAULT_PER_PAIR"]


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr with exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (budgets, thresholds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_common(parser: argparse.ArgumentParser, dataset: bool = True) -> None:
    """``--dataset``, ``--data-dir``, ``--device`` and ``--threads``."""
    if dataset:
        parser.add_argument("--dataset", default="mnist", help="dataset name (default: mnist)")
    parser.add_argument("--data-dir", default=None,
                        help="data root holding one folder per dataset (else $ROBUST_VAE_DATA, else download)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's choice)")


def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    """``--image-size`` and ``--data-option KEY=VALUE``: the dataset's load options (training)."""
    parser.add_argument("--image-size", type=positive_int, default=None,
                        help="load the images at this size (dsprites, imagefolder); the network follows it")
    parser.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                        help="another load option of the dataset, e.g. samples=100000 for dsprites (repeatable)")


def dataset_options(args: argparse.Namespace) -> dict[str, int | None]:
    """The load options named by :func:`add_dataset_options` (whole numbers), or a one-line error."""
    options: dict[str, int | None] = {}
    for item in args.data_option:
        key, sep, text = item.partition("=")
        try:
            value = int(text)
        except ValueError:
            value = None
        if not sep or not key or value is None:
            raise ConfigError(f"--data-option takes KEY=WHOLE_NUMBER (e.g. samples=100000), got {item!r}")
        options[key.strip().replace("-", "_")] = value
    if args.image_size is not None:
        options["image_size"] = args.image_size
    return options


def add_sampling_arguments(p: argparse.ArgumentParser, set_example: str) -> None:
    """The class-pair sample and recipe options shared by ``attack`` and ``classifier-robustness``."""
    size = p.add_mutually_exclusive_group()
    size.add_argument("--per-pair", type=positive_int, default=DEFAULT_PER_PAIR,
                      help=f"pairs sampled per cell (default: {DEFAULT_PER_PAIR}, minutes on a 2-core CPU)")
    size.add_argument("--full", action="store_true", help="every test pair (86,908 for MNIST)")
    p.add_argument("--seed", type=int, default=0, help="sampling and attack seed (default: 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override one recipe value, e.g. --set {set_example} (repeatable)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, help="examples attacked at once")


def setup_torch(args: argparse.Namespace) -> None:
    """Apply ``--threads`` and check that ``--device cuda`` can be honoured."""
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    check_device(getattr(args, "device", "cpu"))
