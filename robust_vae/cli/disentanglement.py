"""``robust-vae disentanglement``: the seven disentanglement metrics of a zoo model on a dataset with
ground-truth factors, written as ``disentanglement.{json,md,tex}`` and recorded in the model's card."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from robust_vae.cli.options import add_common, positive_int
from robust_vae.core.errors import ZooError
from robust_vae.core.paths import writable_folder
from robust_vae.evaluation.disentanglement import CODES, card_record, zoo_disentanglement
from robust_vae.evaluation.disentanglement.common import NUM_TEST, NUM_TRAIN
from robust_vae.evaluation.disentanglement.dci import REGRESSORS
from robust_vae.evaluation.disentanglement.model import DEFAULT_BATCH_SIZE, ENCODE_CHUNK, factor_source
from robust_vae.report.disentanglement import HEADER, disentanglement_latex, disentanglement_markdown, score_rows
from robust_vae.report.tables import markdown_table
from robust_vae.zoo import find_card, update_card

FILES = ("disentanglement.json", "disentanglement.md", "disentanglement.tex")


def group_size(text: str) -> int:
    """argparse type: a whole number >= 2."""
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2, got {value}")
    return value


def add_parser(sub: Any) -> None:
    """Register the command on the ``robust-vae`` subparsers ``sub``."""
    p = sub.add_parser(
        "disentanglement", help="β-VAE, FactorVAE, MIG, SAP, DCI, modularity and explicitness of a model",
        description="Measure a zoo model's disentanglement on a dataset with ground-truth factors (dsprites): "
        "the β-VAE and FactorVAE scores, MIG, SAP, DCI, modularity and explicitness of its posterior means, "
        "with disentanglement_lib's sample sizes by default. Writes disentanglement.json, disentanglement.md "
        "and disentanglement.tex and records the scores in the model's card (under 'disentanglement').")
    add_common(p, dataset=False)
    p.add_argument("--dataset", default="dsprites",
                   help="a dataset with ground-truth factors (default: dsprites), or one with classes only (mnist, "
                        "fashion-mnist): the class is then the one factor of MIG, SAP, DCI completeness and "
                        "informativeness and explicitness")
    p.add_argument("--model", required=True, help="zoo name: vae, jointvae, betavae, ...")
    p.add_argument("--seed-model", type=int, default=0, help="which seed of the model (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the factor samples and the metrics (default: 0)")
    p.add_argument("--code", choices=tuple(CODES), default="mean",
                   help="mean: Gaussian means plus the categorical's softmax probabilities (default); "
                        "gaussian: Gaussian means only; variables: Gaussian means plus the categorical's most "
                        "probable value as one dimension (one dimension per latent variable)")
    p.add_argument("--num-train", type=positive_int, default=NUM_TRAIN,
                   help=f"train points of every metric (default: {NUM_TRAIN:,}, disentanglement_lib's)")
    p.add_argument("--num-test", type=positive_int, default=NUM_TEST,
                   help=f"test / eval points of every metric (default: {NUM_TEST:,}, disentanglement_lib's)")
    p.add_argument("--group-size", type=group_size, default=None,
                   help="factor vectors per β-VAE / FactorVAE point (default: 64, disentanglement_lib's)")
    p.add_argument("--dci-regressor", choices=tuple(REGRESSORS), default="random_forest",
                   help="DCI's classifier (default: random_forest; gbt: disentanglement_lib's boosted trees, slower)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                   help=f"images rendered at once, a multiple of {ENCODE_CHUNK} (default: {DEFAULT_BATCH_SIZE}; "
                        "changes no number)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: reports/<dataset>/<model>[-seed<S>]/disentanglement/)")
    p.add_argument("--no-card", action="store_true", help="do not record the scores in the model's card")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_disentanglement)


def default_out(args: argparse.Namespace) -> Path:
    """``reports/<dataset>/<model>[-seed<S>]/disentanglement/`` under the working directory (as ``attack``)."""
    folder = str(args.model) if args.seed_model == 0 else f"{args.model}-seed{args.seed_model}"
    return Path("reports") / str(args.dataset) / folder / "disentanglement"


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces the numbers (options that change no number are left out)."""
    parts = ["robust-vae disentanglement", f"--model {args.model}", f"--dataset {args.dataset}",
             f"--seed-model {args.seed_model}", f"--seed {args.seed}"]
    if args.code != "mean":
        parts.append(f"--code {args.code}")
    if args.num_train != NUM_TRAIN:
        parts.append(f"--num-train {args.num_train}")
    if args.num_test != NUM_TEST:
        parts.append(f"--num-test {args.num_test}")
    if args.group_size is not None:
        parts.append(f"--group-size {args.group_size}")
    if args.dci_regressor != "random_forest":
        parts.append(f"--dci-regressor {args.dci_regressor}")
    return " ".join(parts)


def check_card_writable(path: Path) -> None:
    """The card file and its folder must be writable (the card is replaced atomically)."""
    if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        raise ZooError(f"cannot record the scores in the model card {path} (not writable): pass --no-card, or set "
                       "ROBUST_VAE_MODELS to a writable copy of the zoo")


def cmd_disentanglement(args: argparse.Namespace) -> int:
    # every check happens before anything is computed or written
    source = factor_source(args.dataset, class_factor=True)
    card = find_card(args.model, source.name, args.seed_model)
    out = writable_folder(args.out or default_out(args))
    if not args.no_card:
        check_card_writable(card.path)
    command = command_line(args)
    result = zoo_disentanglement(
        args.model, source.name, args.seed_model, device=args.device, seed=args.seed, code=args.code,
        num_train=args.num_train, num_test=args.num_test, group_size=args.group_size,
        options={"dci": {"regressor": args.dci_regressor}}, batch_size=args.batch_size, progress=True,
        data_dir=getattr(args, "data_dir", None))
    result["command"] = command
    out.mkdir(parents=True, exist_ok=True)
    (out / "disentanglement.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "disentanglement.md").write_text(disentanglement_markdown(result, command))
    (out / "disentanglement.tex").write_text(disentanglement_latex(result))
    recorded = "" if args.no_card else f"; scores recorded in {card.path}"
    if not args.no_card:
        update_card(card, disentanglement=card_record(result, command))
    wrote = f"wrote {out}/ ({', '.join(FILES)}){recorded}"
    if args.json:
        print(json.dumps(result, indent=2))
        print(wrote, file=sys.stderr)
        return 0
    print(markdown_table(HEADER, score_rows(result), align="llrl"))
    print(f"\n{wrote}")
    return 0
