"""``robust-vae robustness``: classifier-free robustness report cards of zoo models (issue 21).

One card per model in ``reports/<dataset>/<model>[-seed<S>]/robustness/`` (examples.csv,
summary.csv, per_class.csv, card.json, card.md, card.tex, damage.png, margins.png), resumable
like ``attack``; with several models also ``reports/<dataset>/robustness/`` (models.md,
models.tex, damage.png, margins.png), one row / curve per model.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from robust_vae.cli.options import add_common, positive_float, positive_int
from robust_vae.core.errors import ConfigError
from robust_vae.core.paths import writable_folder
from robust_vae.evaluation.robustness import CARD_FILES, RobustnessCard, RobustnessSettings, save_card, zoo_robustness
from robust_vae.report.robustness import damage_figure, margin_figure, models_latex, models_markdown
from robust_vae.zoo import find_card

DEFAULTS = RobustnessSettings()


def add_parser(sub: Any) -> None:
    """Register the command on the ``robust-vae`` subparsers ``sub``."""
    p = sub.add_parser(
        "robustness", help="classifier-free robustness report card: max damage, margins, MS-SSIM, KL, pullback",
        description="Measure a zoo model's robustness without a classifier or a target on a seeded sample of "
        "test images: the max-damage curve over budgets r, the r-robustness margin (bisection, probability "
        "over the encoder's sampling) against Camuto et al.'s lower bound, MS-SSIM and symmetric KL of the "
        "max-damage and the unsupervised attacks, and the pullback metric's largest eigenvalue and spectral "
        "entropy. Means come with 95 %% bootstrap intervals, per model and per class. Resumable: rerun the "
        "same command after an interruption.")
    add_common(p)
    p.add_argument("--model", nargs="+", required=True, help="zoo name(s): vae, vae-wd, jointvae, ...")
    p.add_argument("--seed-model", type=int, default=0, help="which seed of the model(s) (default: 0)")
    p.add_argument("--examples", type=positive_int, default=DEFAULTS.examples,
                   help=f"test images in the sample (default: {DEFAULTS.examples})")
    p.add_argument("--norm", choices=("l2", "linf"), default=DEFAULTS.norm, help="budget norm (default: l2)")
    p.add_argument("--radii", type=positive_float, nargs="+", default=list(DEFAULTS.radii),
                   help="max-damage budgets r, increasing (default: "
                        f"{' '.join(f'{r:g}' for r in DEFAULTS.radii)})")
    p.add_argument("--metric-radius", type=positive_float, default=DEFAULTS.metric_radius,
                   help=f"the budget (one of --radii) of MS-SSIM and KL (default: {DEFAULTS.metric_radius:g})")
    p.add_argument("--threshold", type=positive_float, default=DEFAULTS.threshold,
                   help=f"r of r-robustness: L2 between stochastic reconstructions (default: {DEFAULTS.threshold:g})")
    p.add_argument("--samples", type=positive_int, default=DEFAULTS.samples,
                   help=f"posterior samples per probability (default: {DEFAULTS.samples})")
    p.add_argument("--max-budget", type=positive_float, default=DEFAULTS.max_budget,
                   help=f"largest budget the margin's bisection tries (default: {DEFAULTS.max_budget:g})")
    p.add_argument("--bisection-steps", type=positive_int, default=DEFAULTS.bisection_steps,
                   help=f"halvings of the margin's interval (default: {DEFAULTS.bisection_steps})")
    p.add_argument("--steps", type=positive_int, default=DEFAULTS.steps,
                   help=f"PGD steps of the max-damage attack (default: {DEFAULTS.steps})")
    p.add_argument("--restarts", type=positive_int, default=DEFAULTS.restarts,
                   help=f"PGD restarts (default: {DEFAULTS.restarts})")
    p.add_argument("--unit-size", type=positive_int, default=DEFAULTS.unit_size,
                   help=f"examples per saved unit (default: {DEFAULTS.unit_size}; changes no number)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and the attacks (default: 0)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder of a single model (default: reports/<dataset>/<model>[-seed<S>]/robustness/)")
    p.add_argument("--no-latent-accuracy", action="store_true",
                   help="leave out the latent-classifier accuracy (clean and under both attacks; the classifier "
                        "is trained on the model's train-split codes on first use and cached)")
    p.add_argument("--restart", action="store_true", help="discard a stored card of another configuration")
    p.add_argument("--json", action="store_true", help="print the summaries as JSON")
    p.set_defaults(handler=cmd_robustness)


def settings_of(args: argparse.Namespace) -> RobustnessSettings:
    return RobustnessSettings(
        examples=args.examples, norm=args.norm, radii=tuple(args.radii), metric_radius=args.metric_radius,
        threshold=args.threshold, samples=args.samples, max_budget=args.max_budget,
        bisection_steps=args.bisection_steps, steps=args.steps, restarts=args.restarts,
        unit_size=args.unit_size, seed=args.seed)


def model_folder(dataset: str, model: str, seed: int) -> Path:
    name = model if seed == 0 else f"{model}-seed{seed}"
    return Path("reports") / dataset / name / "robustness"


def command_line(args: argparse.Namespace, models: list[str]) -> str:
    """The command that reproduces the numbers (options that change none are left out)."""
    parts = ["robust-vae robustness", "--model", *models, "--dataset", args.dataset]
    if args.seed_model:
        parts += ["--seed-model", str(args.seed_model)]
    for option, value, default in (("--examples", args.examples, DEFAULTS.examples),
                                   ("--norm", args.norm, DEFAULTS.norm),
                                   ("--metric-radius", args.metric_radius, DEFAULTS.metric_radius),
                                   ("--threshold", args.threshold, DEFAULTS.threshold),
                                   ("--samples", args.samples, DEFAULTS.samples),
                                   ("--max-budget", args.max_budget, DEFAULTS.max_budget),
                                   ("--bisection-steps", args.bisection_steps, DEFAULTS.bisection_steps),
                                   ("--steps", args.steps, DEFAULTS.steps),
                                   ("--restarts", args.restarts, DEFAULTS.restarts),
                                   ("--seed", args.seed, 0)):
        if value != default:
            parts += [option, f"{value:g}" if isinstance(value, float) else str(value)]
    if tuple(args.radii) != DEFAULTS.radii:
        parts += ["--radii", *[f"{r:g}" for r in args.radii]]
    if args.no_latent_accuracy:
        parts.append("--no-latent-accuracy")
    return " ".join(shlex.quote(p) if p != parts[0] else p for p in parts)


def cmd_robustness(args: argparse.Namespace) -> int:
    settings = settings_of(args)  # every check happens before anything is computed or written
    models = list(dict.fromkeys(args.model))
    if args.out is not None and len(models) > 1:
        raise ConfigError("--out names the folder of one model's card: leave it out with several models")
    for name in models:
        find_card(name, args.dataset, args.seed_model)
    folders = {name: writable_folder(args.out or model_folder(args.dataset, name, args.seed_model)) for name in models}
    cards: dict[str, RobustnessCard] = {}
    for name in models:
        card = zoo_robustness(name, args.dataset, args.seed_model, settings, device=args.device,
                              data_dir=args.data_dir, out=folders[name], restart=args.restart, progress_bar=True,
                              latent_accuracy=not args.no_latent_accuracy)
        save_card(card, folders[name], command_line(args, [name]))
        cards[name] = card
        print(f"wrote {folders[name]}/ ({', '.join(CARD_FILES)})")
    table = {name: (card.summary, card.metadata) for name, card in cards.items()}
    if len(models) > 1:
        together = writable_folder(Path("reports") / args.dataset / "robustness")
        together.mkdir(parents=True, exist_ok=True)
        command = command_line(args, models)
        (together / "models.md").write_text(f"Command: `{command}`\n\n{models_markdown(table)}\n")
        (together / "models.tex").write_text(models_latex(table))
        damage_figure({n: c.summary for n, c in cards.items()}, together / "damage.png", settings.norm)
        margin_figure({n: c.examples for n, c in cards.items()}, together / "margins.png")
        print(f"wrote {together}/ (models.md, models.tex, damage.png, margins.png)")
    if args.json:
        print(json.dumps({n: {row["metric"]: {k: row[k] for k in ("mean", "low", "high", "n")}
                              for _, row in c.summary.iterrows()} for n, c in cards.items()}, indent=2, default=float))
    else:
        print(models_markdown(table))
    return 0
