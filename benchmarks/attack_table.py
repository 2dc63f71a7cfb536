"""The README's "Which attack to use" table: AS target of the thesis, e2e and Kos attacks on the
shipped ``vae`` and ``jointvae`` at ε = 0.1, on a fixed small sample of class pairs.

Run from the repository root::

    python -m benchmarks.attack_table                 # --per-pair 5: about 10 min on 1 CPU core
    python -m benchmarks.attack_table --per-pair 10   # twice the sample, twice the time

It runs each (model, recipe) through the public API (``success_matrix``, exactly what
``robust-vae attack --model M --attack R --per-pair N`` runs), keeps the resumable runs in
``<cache>/benchmarks/attack-table/`` (``ROBUST_VAE_CACHE``), and writes
``benchmarks/results/attack_table.json`` (every number, the configuration, timings, versions)
and ``benchmarks/results/attack_table.md`` (the table pasted into the README).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import robust_vae as rv
from robust_vae.attacks import read_recipe
from robust_vae.core.paths import default_cache_dir
from robust_vae.evaluation.success_matrix import library_versions
from robust_vae.zoo.cards import find_card

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("vae", "jointvae")
RECIPES = ("thesis", "e2e-linf", "kos-classifier-linf")
WHAT = {
    "thesis": "latent code of x* onto the target's code (Adam, 1000 steps)",
    "e2e-linf": "evaluation classifier ∘ x̂ towards the target class (foolbox L∞ PGD, 100 steps)",
    "kos-classifier-linf": "a classifier on the latent codes towards the target class (foolbox L∞ PGD, 100 steps)",
}


def run_table(per_pair: int, seed: int, models: list[str], recipes: list[str], work: Path) -> dict:
    test = rv.load_dataset("mnist", "test")
    classifier = rv.load_classifier("mnist")
    classifier_sha = find_card("classifier", "mnist", None).data["sha256"]
    rows = []
    for name in models:
        model = rv.load_model(name, "mnist", seed=0)
        card = find_card(name, "mnist", 0)
        for recipe in recipes:
            attack = rv.load_attack(recipe)
            started = time.perf_counter()
            cpu = time.process_time()
            metadata = {"label": name, "model": name, "model_seed": 0, "weights_sha256": card.data["sha256"],
                        "classifier_sha256": classifier_sha, "recipe": recipe}
            result = rv.success_matrix(model, classifier, test, attack, per_pair=per_pair, seed=seed,
                                       out_dir=work / name / recipe, metadata=metadata)
            overall = result.marginals().query("kind == 'overall'").iloc[0]
            cells = result.cells
            rows.append({
                "model": name, "recipe": recipe, "attack": attack.name,
                "epsilon": getattr(attack, "epsilon", None), "budget_norm": attack.budget_norm,
                "as_target": float(overall["as_target"]), "as_ignore_target": float(overall["as_ignore_target"]),
                "hits_target": int(cells["hits_target"].sum()), "n": int(cells["n"].sum()),
                "mean_linf": float(overall["mean_linf"]), "mean_l2": float(overall["mean_l2"]),
                "attack_seconds": result.metadata["attack_seconds"],
                "wall_seconds_this_call": round(time.perf_counter() - started, 1),
                "cpu_seconds_this_call": round(time.process_time() - cpu, 1),
            })
            print(f"{name:>9} {recipe:<20} AS target {100 * rows[-1]['as_target']:6.2f}%  "
                  f"AS ignore-target {100 * rows[-1]['as_ignore_target']:6.2f}%  (n = {rows[-1]['n']})",
                  flush=True)
    return {
        "command": "python -m benchmarks.attack_table " + " ".join(sys.argv[1:]),
        "dataset": "mnist", "split": "test", "per_pair": per_pair, "seed": seed, "model_seed": 0,
        "models": models, "recipes": {r: read_recipe(r)["params"] for r in recipes},
        "threads": torch.get_num_threads(), "versions": library_versions(), "rows": rows,
        "note": "AS target / AS ignore-target are unweighted means over the 90 ordered class pairs "
                "(protocol §4); n = attacked examples (sources whose clean reconstruction is "
                "labelled correctly).",
    }


def markdown(table: dict) -> str:
    rows = {(r["model"], r["recipe"]): r for r in table["rows"]}
    models, recipes = table["models"], list(table["recipes"])
    header = "| attack (recipe) | optimises | " + " | ".join(f"`{m}` AS target (ignore-target)" for m in models) + " |"
    lines = [header, "|---|---|" + "---:|" * len(models)]
    for recipe in recipes:
        cells = []
        for model in models:
            r = rows.get((model, recipe))
            cells.append("–" if r is None else
                         f"**{100 * r['as_target']:.1f}%** ({100 * r['as_ignore_target']:.1f}%)")
        lines.append(f"| `{recipe}` | {WHAT.get(recipe, '')} | " + " | ".join(cells) + " |")
    n = ", ".join(f"`{m}` {sum(r['n'] for r in table['rows'] if r['model'] == m and r['recipe'] == recipes[0])}"
                  for m in models)
    caption = (f"MNIST test set, seed-0 models, ε = 0.1 (L∞), {table['per_pair']} sampled pairs per "
               f"(source, target) cell (sampling seed {table['seed']}; attacked examples with "
               f"`{recipes[0]}`: {n}), so each number is a mean over 90 cells of ≤ {table['per_pair']} "
               f"examples: differences of a few points are noise. Generated by `{table['command'].strip()}`.")
    return "\n".join(lines) + "\n\n" + caption + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attack_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-pair", type=int, default=5, help="pairs sampled per cell (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for attack_table.{json,md}")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = default_cache_dir() / "benchmarks" / "attack-table" / f"per-pair-{args.per_pair}-seed-{args.seed}"
    table = run_table(args.per_pair, args.seed, args.models, args.recipes, work)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "attack_table.json").write_text(json.dumps(table, indent=2, default=str) + "\n")
    text = markdown(table)
    (args.out / "attack_table.md").write_text(text)
    print("\n" + text)
    print(f"wrote {args.out / 'attack_table.json'} and {args.out / 'attack_table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
