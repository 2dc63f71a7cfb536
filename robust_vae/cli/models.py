"""``robust-vae models``: the shipped zoo with its card metrics (``--markdown``: the README table)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from robust_vae.core.errors import ConfigError
from robust_vae.report.tables import markdown_table
from robust_vae.zoo import Card, add_note, find_card, list_cards


def add_parser(sub: Any) -> None:
    """Register the command on the ``robust-vae`` subparsers ``sub``."""
    p = sub.add_parser("models", help="list shipped models and their metrics")
    p.add_argument("--dataset", default=None, help="only this dataset")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (the README's zoo table)")
    p.add_argument("--note", nargs=3, metavar=("MODEL", "SEED", "TEXT"), default=None,
                   help="record a one-line note in the card of MODEL (seed SEED) of --dataset, e.g. why it misses "
                        "its reconstruction floor; listed with the model")
    p.set_defaults(handler=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    if args.note is not None:
        return note_model(args.dataset, *args.note)
    cards = list_cards(args.dataset)
    if args.json:
        print(json.dumps([card.summary() for card in cards], indent=2))
        return 0
    if not cards:
        print("no shipped models" + (f" for {args.dataset}" if args.dataset else ""))
        return 0
    if args.markdown:
        print(models_markdown(cards))
        return 0
    print(f"{'name':<18}{'dataset':<15}{'seed':<6}{'metrics'}")
    for card in cards:
        s = card.summary()
        metrics = ", ".join(
            f"{k}={v:.4f}" for k, v in [*s["metrics"].items(), *disentanglement_listing(card)] if isinstance(v, float)
        )
        seed = "-" if s["seed"] is None else str(s["seed"])
        mark = f"  {BELOW_FLOOR_MARK} below its recon-accuracy floor" if card.below_floor else ""
        print(f"{s['name']:<18}{s['dataset']:<15}{seed:<6}{metrics}{mark}")
    return 0


def note_model(dataset: str | None, name: str, seed: str, text: str) -> int:
    """``--note``: append ``text`` to the card of ``name`` (seed ``seed``) of ``dataset`` (an unknown
    dataset is named as such by :func:`find_card`)."""
    if dataset is None:
        raise ConfigError("--note needs --dataset (the dataset of the model whose card gets the note)")
    try:
        model_seed = int(seed)
    except ValueError:
        raise ConfigError(f"--note: the seed must be an integer, got {seed!r}") from None
    card = add_note(find_card(name, dataset, model_seed), text)
    print(f"{card.path}: {len(card.notes)} note(s)")
    return 0


BELOW_FLOOR_MARK = "†"

MARKDOWN_METRICS = (("recon_accuracy", "recon acc."), ("recon_bce", "recon BCE"),
                    ("kl_gaussian", "KL Gaussian"), ("kl_categorical", "KL categorical"),
                    ("elbo", "ELBO"), ("test_accuracy", "test acc."))


# the disentanglement scores `robust-vae disentanglement` records in a card, by what they measure against
# (ground-truth factors, or the class as the only factor): columns only when a card has them
DISENTANGLEMENT_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "ground truth": (("mig", "MIG"), ("dci_disentanglement", "DCI-D"), ("betavae_score", "β-VAE"),
                     ("factorvae_score", "FactorVAE")),
    "class": (("mig", "class MIG"), ("dci_completeness", "class DCI-C"), ("explicitness_test", "class explicitness")),
}


def disentanglement_listing(card: Card) -> list[tuple[str, float]]:
    """The card's recorded disentanglement scores that the zoo listings show (none if not measured;
    class-factor scores named ``class_<score>``)."""
    kind, scores = card.disentanglement_factors, card.disentanglement_scores
    if kind is None:
        return []
    prefix = "class_" if kind == "class" else ""
    return [(prefix + key, scores[key]) for key, _ in DISENTANGLEMENT_COLUMNS.get(kind, ()) if key in scores]


def models_markdown(cards: list[Card]) -> str:
    """The zoo as a Markdown table (what the README's zoo table is pasted from). The
    disentanglement columns appear when some card has scores (``robust-vae disentanglement``)."""
    kinds = {card.disentanglement_factors for card in cards} - {None}
    columns = [(kind, key, title) for kind, group in DISENTANGLEMENT_COLUMNS.items() if kind in kinds
               for key, title in group]
    header = ["model", "dataset", "seed", "steps", *(t for _, t in MARKDOWN_METRICS), *(t for _, _, t in columns)]
    rows = []
    for card in cards:
        s = card.summary()
        values = [f"{s['metrics'][k]:.4f}" if isinstance(s["metrics"].get(k), float) else "–"
                  for k, _ in MARKDOWN_METRICS]
        if card.below_floor:
            values[0] += BELOW_FLOOR_MARK
        scores = card.disentanglement_scores
        values += [f"{scores[k]:.4f}" if k in scores and card.disentanglement_factors == kind else "–"
                   for kind, k, _ in columns]
        seed = "–" if s["seed"] is None else str(s["seed"])
        steps = card.data.get("steps") or card.data.get("training", {}).get("steps", "–")
        rows.append([f"`{s['name']}`", s["dataset"], seed, str(steps), *values])
    table = markdown_table(header, rows, align="llrr" + "r" * (len(MARKDOWN_METRICS) + len(columns)))
    return table + "".join(f"\n\n{line}" for line in floor_footnotes(cards))


def floor_footnotes(cards: list[Card]) -> list[str]:
    """One line per card below its reconstruction floor: the floor and the card's notes."""
    lines = []
    for card in cards:
        if card.below_floor:
            seed = "" if card.seed is None else f" seed {card.seed}"
            reason = " ".join(card.notes) or "no note recorded in its card"
            lines.append(f"{BELOW_FLOOR_MARK} `{card.name}`{seed} is below its recon-accuracy floor of "
                         f"{card.recon_floor}: {reason}")
    return lines


