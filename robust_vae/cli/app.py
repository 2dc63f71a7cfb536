"""The ``robust-vae`` command line. Each subcommand is a small function over the Python API.

Errors caused by input, data or files print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

from robust_vae.core.errors import RobustVAEError

Handler = Callable[[argparse.Namespace], int]
DEFAULT_PER_PAIR = 20  # 1,800 attacked pairs: the thesis recipe finishes in minutes on 2 CPU cores


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_common(parser: argparse.ArgumentParser, dataset: bool = True) -> None:
    if dataset:
        parser.add_argument("--dataset", default="mnist", help="dataset name (default: mnist)")
    parser.add_argument("--data-dir", default=None,
                        help="data root holding one folder per dataset (else $ROBUST_VAE_DATA, else download)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="torch CPU threads (default: torch's choice)")


def _setup_torch(args: argparse.Namespace) -> None:
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    device = getattr(args, "device", "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RobustVAEError(f"--device {device} requested but CUDA is not available: use --device cpu")


# ----------------------------------------------------------------- models / training
def cmd_models(args: argparse.Namespace) -> int:
    from robust_vae.zoo import list_cards

    cards = list_cards(args.dataset)
    if args.json:
        print(json.dumps([card.summary() for card in cards], indent=2))
        return 0
    if not cards:
        print("no shipped models" + (f" for {args.dataset}" if args.dataset else ""))
        return 0
    if args.markdown:
        print(_models_markdown(cards))
        return 0
    print(f"{'name':<18}{'dataset':<9}{'seed':<6}{'metrics'}")
    for card in cards:
        s = card.summary()
        metrics = ", ".join(
            f"{k}={v:.4f}" for k, v in s["metrics"].items() if isinstance(v, float)
        )
        seed = "-" if s["seed"] is None else str(s["seed"])
        print(f"{s['name']:<18}{s['dataset']:<9}{seed:<6}{metrics}")
    return 0


MARKDOWN_METRICS = (("recon_accuracy", "recon acc."), ("recon_bce", "recon BCE"),
                    ("kl_gaussian", "KL Gaussian"), ("kl_categorical", "KL categorical"),
                    ("elbo", "ELBO"), ("test_accuracy", "test acc."))


def _models_markdown(cards: list) -> str:  # type: ignore[type-arg]
    """The zoo as a Markdown table (what the README's zoo table is pasted from)."""
    lines = ["| model | dataset | seed | steps | " + " | ".join(t for _, t in MARKDOWN_METRICS) + " |",
             "|---|---|---|---|" + "---|" * len(MARKDOWN_METRICS)]
    for card in cards:
        s = card.summary()
        values = [f"{s['metrics'][k]:.4f}" if isinstance(s["metrics"].get(k), float) else "–"
                  for k, _ in MARKDOWN_METRICS]
        seed = "–" if s["seed"] is None else str(s["seed"])
        steps = card.data.get("steps") or card.data.get("training", {}).get("steps", "–")
        lines.append(f"| `{s['name']}` | {s['dataset']} | {seed} | {steps} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from robust_vae.training.classifier import ClassifierConfig, train_classifier

    config = ClassifierConfig(epochs=args.epochs, lr=args.lr, seed=args.seed)
    card = train_classifier(args.dataset, config, out_dir=args.out, device=args.device,
                            data_dir=args.data_dir)
    print(f"wrote {card.weights_path}: test accuracy {card.data['metrics']['test_accuracy']:.4f}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from robust_vae.training.vae import train_vae

    overrides = {}
    if args.weight_decay is not None:
        overrides["weight_decay"] = args.weight_decay
    result = train_vae(args.model, args.dataset, seed=args.seed, steps=args.steps, out_dir=args.out,
                       device=args.device, data_dir=args.data_dir,
                       checkpoint_every=args.checkpoint_every, overrides=overrides)
    assert result is not None
    metrics = result.card.data["metrics"]
    print(json.dumps({"weights": str(result.card.weights_path), "metrics": metrics}, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from robust_vae.data.mnist import load_dataset
    from robust_vae.training.vae import evaluate_vae
    from robust_vae.zoo import find_card, load_classifier, load_model

    model = load_model(args.model, args.dataset, seed=args.seed, device=args.device)
    card = find_card(args.model, args.dataset, args.seed)
    classifier = load_classifier(args.dataset, device=args.device)
    test = load_dataset(args.dataset, "test", args.data_dir)
    metrics = evaluate_vae(model, test, classifier, step=card.data.get("steps"))
    if args.json:
        print(json.dumps({"name": args.model, "seed": args.seed, "metrics": metrics,
                          "card_metrics": card.data.get("metrics", {})}, indent=2))
        return 0
    stored = card.data.get("metrics", {})
    print(f"{'metric':<18}{'recomputed':>14}{'card':>14}")
    for key, value in metrics.items():
        if isinstance(value, float):
            old = stored.get(key)
            old_text = f"{old:14.4f}" if isinstance(old, float) else f"{'-':>14}"
            print(f"{key:<18}{value:14.4f}{old_text}")
    return 0


def cmd_traverse(args: argparse.Namespace) -> int:
    from robust_vae.data.mnist import load_dataset
    from robust_vae.evaluation.traversal import plot_traversal
    from robust_vae.zoo import load_model

    model = load_model(args.model, args.dataset, seed=args.seed, device=args.device)
    test = load_dataset(args.dataset, "test", args.data_dir)
    default = Path("reports") / args.dataset / args.model / (
        "traversal.png" if args.seed == 0 else f"traversal-seed{args.seed}.png")
    out = _writable(args.out or default)
    plot_traversal(model, test.images[args.image], out, span=args.span, steps=args.steps,
                   title=f"{args.model} (seed {args.seed}) latent traversal")
    print(f"wrote {out}")
    return 0


def _writable(path: Path) -> Path:
    """Return ``path`` if its folder exists or can be made and is writable, else a one-line error."""
    path = Path(path)
    folder = path if not path.suffix else path.parent
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK) or (probe.exists() and not probe.is_dir()):
        raise RobustVAEError(f"cannot write to {folder} ({probe} is not a writable folder): choose another --out")
    return path


def _parse_overrides(pairs: list[str]) -> dict[str, object]:
    import tomllib

    overrides: dict[str, object] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise RobustVAEError(f"--set expects KEY=VALUE, got {pair!r} (e.g. --set steps=200)")
        try:
            overrides[key.strip()] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key.strip()] = text  # a bare word: keep it as a string
    return overrides


def _resource_usage() -> dict[str, object]:
    """Peak resident memory and CPU time of this process (and the machine's load), for run.json."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_bytes = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # KiB on Linux
    info: dict[str, object] = {"peak_rss_mb": round(peak_bytes / 2**20, 1),
                               "cpu_seconds_process": round(usage.ru_utime + usage.ru_stime, 2)}
    if hasattr(os, "getloadavg"):
        info["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    return info


def _print_marginals(result) -> None:  # type: ignore[no-untyped-def]
    marginals = result.marginals()
    rows = marginals[marginals["kind"] == "source"]
    overall = marginals[marginals["kind"] == "overall"].iloc[0]
    print(f"\nMarginal attack success per source ({result.metadata.get('label', '')}):")
    print(f"{'source':>7}  {'AS target':>10}  {'AS ignore-target':>16}")
    for _, row in rows.iterrows():
        print(f"{int(row['cls']):>7}  {100 * row['as_target']:9.2f}%  {100 * row['as_ignore_target']:15.2f}%")
    print(f"{'mean':>7}  {100 * overall['as_target']:9.2f}%  {100 * overall['as_ignore_target']:15.2f}%")


def cmd_attack(args: argparse.Namespace) -> int:
    from robust_vae.attacks import load_attack, read_recipe
    from robust_vae.data.mnist import load_dataset
    from robust_vae.evaluation.success_matrix import success_matrix
    from robust_vae.zoo import find_card, load_classifier, load_model

    # every check happens before anything is written
    test = load_dataset(args.dataset, "test", args.data_dir)
    model = load_model(args.model, args.dataset, seed=args.seed_model, device=args.device)
    card = find_card(args.model, args.dataset, args.seed_model)
    classifier = load_classifier(args.dataset, device=args.device)
    classifier_card = find_card("classifier", args.dataset, None)
    recipe = read_recipe(args.attack)
    attack = load_attack(args.attack, **_parse_overrides(args.set)).bind(data_dir=args.data_dir)
    per_pair = None if args.full else args.per_pair
    model_folder = args.model if args.seed_model == 0 else f"{args.model}-seed{args.seed_model}"
    out = _writable(args.out or Path("reports") / args.dataset / model_folder / recipe["name"])
    label = args.label or (args.model if args.seed_model == 0 else f"{args.model} (seed {args.seed_model})")
    metadata = {
        "label": label, "model": args.model, "model_seed": args.seed_model,
        "model_family": card.data.get("family"), "weights_sha256": card.data["sha256"],
        "classifier_sha256": classifier_card.data["sha256"], "recipe": recipe["name"],
        "recipe_description": recipe.get("description", ""), "command": "robust-vae " + " ".join(sys.argv[1:]),
    }
    import time

    started, cpu_started = time.perf_counter(), time.process_time()
    result = success_matrix(model, classifier, test, attack, per_pair=per_pair, seed=args.seed,
                            batch_size=args.batch_size, out_dir=out, metadata=metadata,
                            restart=args.restart)
    result.metadata["wall_seconds_this_call"] = round(time.perf_counter() - started, 2)
    # this call's CPU; cpu_seconds_process and peak_rss_mb cover the whole process, which in
    # `robust-vae study` holds every run made so far
    result.metadata["cpu_seconds_this_call"] = round(time.process_time() - cpu_started, 2)
    result.metadata.update(_resource_usage())
    result.save(out)
    _print_marginals(result)
    print(f"\nwrote {out}/ (cells.csv, matrix.csv, marginals.csv, matrix.tex, marginals.tex, "
          "summary.md, heatmaps.png, examples.png, run.json)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from robust_vae.evaluation.success_matrix import SuccessMatrix
    from robust_vae.report.success import marginals_csv_frame, marginals_latex, marginals_markdown

    runs = [SuccessMatrix.load(path) for path in args.runs]
    names = [Path(p).name for p in args.runs]
    if len(set(names)) < len(names):  # e.g. reports/mnist/vae/thesis and reports/mnist/jointvae/thesis
        common = os.path.commonpath([str(Path(p).resolve()) for p in args.runs])
        names = [str(Path(p).resolve().relative_to(common)) for p in args.runs]
    for path, name, run in zip(args.runs, names, runs):
        target = Path(args.out) / name if args.out and len(runs) > 1 else Path(args.out or path)
        _writable(target)
        run.save(target)
        print(f"re-rendered {path} -> {target}")
    if len(runs) > 1:
        recipes = {run.metadata.get("recipe") for run in runs}
        labels = [run.metadata.get("label", str(p)) + ("" if len(recipes) == 1 else f" / {run.metadata.get('recipe')}")
                  for p, run in zip(args.runs, runs)]
        if len(set(labels)) < len(labels):
            labels = [str(p) for p in args.runs]
        by_run = {label: run.marginals() for label, run in zip(labels, runs)}
        out = Path(args.out) if args.out else Path(os.path.commonpath([str(Path(p).resolve()) for p in args.runs])) / "comparison"
        _writable(out).mkdir(parents=True, exist_ok=True)
        marginals_csv_frame(by_run).to_csv(out / "marginals.csv", index=False)
        (out / "marginals.tex").write_text(marginals_latex(
            by_run, caption="Marginal attack success rates per source digit.", label="tab:marginals"))
        (out / "marginals.md").write_text(marginals_markdown(by_run))
        print(marginals_markdown(by_run))
        print(f"wrote {out}/marginals.csv, marginals.tex, marginals.md")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from robust_vae.analysis.comparison import main_compare

    return main_compare(args)


def cmd_study(args: argparse.Namespace) -> int:
    from robust_vae.analysis.study import main_study

    return main_study(args)


# ----------------------------------------------------------------- parser
def _add_sampling_arguments(p: argparse.ArgumentParser, set_example: str) -> None:
    """The class-pair sample and recipe options shared by ``attack`` and ``classifier-robustness``."""
    size = p.add_mutually_exclusive_group()
    size.add_argument("--per-pair", type=_positive_int, default=DEFAULT_PER_PAIR,
                      help=f"pairs sampled per cell (default: {DEFAULT_PER_PAIR}, minutes on a 2-core CPU)")
    size.add_argument("--full", action="store_true", help="every test pair (86,908 for MNIST)")
    p.add_argument("--seed", type=int, default=0, help="sampling and attack seed (default: 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override one recipe value, e.g. --set {set_example} (repeatable)")
    p.add_argument("--batch-size", type=_positive_int, default=512, help="examples attacked at once")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="robust-vae",
        description="Train, load and attack VAEs; write thesis-style adversarial success tables.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)

    p = sub.add_parser("models", help="list shipped models and their metrics")
    p.add_argument("--dataset", default=None, help="only this dataset")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (the README's zoo table)")
    p.set_defaults(handler=cmd_models)

    p = sub.add_parser("train-classifier", help="train the evaluation classifier (protocol §3)")
    _add_common(p)
    p.add_argument("--epochs", type=_positive_int, default=20)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: models/<dataset>/)")
    p.set_defaults(handler=cmd_train_classifier)

    p = sub.add_parser("train", help="train a VAE family; rerun the same command to resume")
    _add_common(p)
    p.add_argument("--model", required=True, help="family: vae, vae-wd, jointvae, betavae, betavae-capacity")
    p.add_argument("--steps", type=_positive_int, default=None, help="training steps (default: 100000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weight-decay", type=float, default=None, help="override Adam weight decay")
    p.add_argument("--checkpoint-every", type=_positive_int, default=2000)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: models/<dataset>/)")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("evaluate", help="recompute a shipped model's card metrics")
    _add_common(p)
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, default=0, help="model seed (default: 0)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("traverse", help="latent-traversal figure of a shipped model")
    _add_common(p)
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, default=0, help="model seed (default: 0)")
    p.add_argument("--image", type=int, default=0, help="test image whose code is traversed")
    p.add_argument("--span", type=float, default=3.0, help="Gaussian latents go from -span to +span")
    p.add_argument("--steps", type=_positive_int, default=10, help="columns per Gaussian latent")
    p.add_argument("--out", type=Path, default=None,
                   help="PNG path (default: reports/<dataset>/<model>/traversal.png)")
    p.set_defaults(handler=cmd_traverse)

    p = sub.add_parser(
        "attack", help="attack a shipped model on every class pair; write thesis tables and figures",
        description="Attack every ordered class pair of the test set and write cells.csv, matrix.csv, "
        "marginals.csv, matrix.tex, marginals.tex, summary.md, heatmaps.png, examples.png and run.json. "
        f"By default {DEFAULT_PER_PAIR} pairs per cell are sampled (1,800 pairs), which with the thesis "
        "recipe finishes within 10 minutes on a 2-core CPU; --full attacks every test pair. "
        "Rerunning the same command after an interruption resumes.")
    _add_common(p)
    p.add_argument("--model", required=True, help="zoo name: vae, vae-wd, jointvae, betavae, ...")
    p.add_argument("--seed-model", type=int, default=0, help="which shipped seed of the model (default: 0)")
    p.add_argument("--attack", default="thesis", help="recipe name in attacks/ or a .toml path (default: thesis)")
    _add_sampling_arguments(p, set_example="steps=200")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: reports/<dataset>/<model>/<recipe>/)")
    p.add_argument("--label", default=None, help="name of the model in tables (default: the model name)")
    p.add_argument("--restart", action="store_true",
                   help="discard a run of a different configuration found in --out")
    p.set_defaults(handler=cmd_attack)

    p = sub.add_parser("report", help="re-render tables and figures from saved runs; compare several")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: in place; several runs: their common parent/comparison)")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser(
        "compare", help="group A minus group B of runs: mean AS with bootstrap intervals and paired tests",
        description="Compare two groups of finished runs (e.g. the seeds of two models): A − B in mean AS "
        "target and AS ignore-target (per run the unweighted mean over cells, averaged over the group's runs), "
        "95% intervals from a hierarchical bootstrap (seeds, then examples within cells), and paired tests "
        "over the cells (Wilcoxon signed-rank, sign-flip permutation). Writes comparison.csv, .tex and .md and "
        "prints the Markdown. Example: robust-vae compare --a runs/jointvae-seed*/thesis --b runs/vae-seed*/thesis")
    p.add_argument("--a", nargs="+", type=Path, required=True, metavar="RUN_DIR", help="group A's run folders")
    p.add_argument("--b", nargs="+", type=Path, required=True, metavar="RUN_DIR", help="group B's run folders")
    p.add_argument("--label-a", default=None, help="name of group A (default: its model, plus recipe if not thesis)")
    p.add_argument("--label-b", default=None, help="name of group B")
    p.add_argument("--bootstrap", type=_positive_int, default=2000, help="bootstrap replicates (default: 2000)")
    p.add_argument("--permutations", type=_positive_int, default=10_000, help="sign flips (default: 10000)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap and permutations")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: <common parent of the runs>/compare-<A>-vs-<B>/)")
    p.set_defaults(handler=cmd_compare)

    from robust_vae.analysis.study import add_arguments as add_study_arguments

    p = sub.add_parser(
        "study", help="run a study file's missing runs, then write its tables, comparisons and figures",
        description="Make every missing run of a study file (resuming partial ones, skipping models and "
        "recipes that do not exist yet) into <study folder>/runs/<model>-seed<S>/<recipe>/, then write the "
        "marginals, per-seed, comparison and attack-strength tables, figures and results.md next to it.")
    _add_common(p, dataset=False)
    add_study_arguments(p)
    p.set_defaults(handler=cmd_study)

    from robust_vae.cli.classifier_robustness import add_parser as add_classifier_robustness

    add_classifier_robustness(sub)  # robust-vae classifier-robustness
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        _setup_torch(args)
        return args.handler(args)
    except RobustVAEError as error:
        print(f"robust-vae {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robust-vae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
