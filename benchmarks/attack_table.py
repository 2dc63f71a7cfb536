"""The README's "Which attack to use" table: AS target of the thesis, e2e and Kos attacks on the
shipped ``vae`` and ``jointvae`` at ε = 0.1, on a fixed small sample of class pairs.

Run from the repository root::

    python -m benchmarks.attack_table                 # --per-pair 5: about 10 min on 1 CPU core
    python -m benchmarks.attack_table --per-pair 10   # twice the sample, twice the time

It builds each (model, recipe) run as a :class:`~robust_vae.evaluation.run_config.RunConfig`
and makes it with :func:`~robust_vae.evaluation.runner.run_attack` (exactly what
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
from typing import Any

import torch

from robust_vae.attacks import read_recipe
from robust_vae.core.paths import default_cache_dir
from robust_vae.evaluation.run_config import RunConfig
from robust_vae.evaluation.runner import run_attack
from robust_vae.evaluation.success_matrix import library_versions
from robust_vae.report.tables import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"
DATASET = "mnist"
MODEL_SEED = 0
MODELS = ("vae", "jointvae")
RECIPES = ("thesis", "e2e-linf", "kos-classifier-linf")
WHAT = {
    "thesis": "latent code of x* onto the target's code (Adam, 1000 steps)",
    "e2e-linf": "evaluation classifier ∘ x̂ towards the target class (foolbox L∞ PGD, 100 steps)",
    "kos-classifier-linf": "a classifier on the latent codes towards the target class (foolbox L∞ PGD, 100 steps)",
}


def run_row(config: RunConfig, out_dir: Path) -> dict[str, Any]:
    """Make (or resume) one run in ``out_dir`` and return its row of the table."""
    attack = config.attack()
    started, cpu = time.perf_counter(), time.process_time()
    result = run_attack(config, out_dir)
    overall = result.marginals().query("kind == 'overall'").iloc[0]
    cells = result.cells
    return {
        "model": config.model, "recipe": config.recipe, "attack": attack.name,
        "epsilon": getattr(attack, "epsilon", None), "budget_norm": attack.budget_norm,
        "as_target": float(overall["as_target"]), "as_ignore_target": float(overall["as_ignore_target"]),
        "hits_target": int(cells["hits_target"].sum()), "n": int(cells["n"].sum()), "cells": len(cells),
        "mean_linf": float(overall["mean_linf"]), "mean_l2": float(overall["mean_l2"]),
        "attack_seconds": result.metadata["attack_seconds"],
        "wall_seconds_this_call": round(time.perf_counter() - started, 1),
        "cpu_seconds_this_call": round(time.process_time() - cpu, 1),
        "command": config.command(),
    }


def cell_count(rows: list[dict[str, Any]]) -> str:
    """The number of cells (ordered class pairs) the rows' means run over: "90", or "72 or 90"."""
    return " or ".join(str(n) for n in sorted({int(r["cells"]) for r in rows}))


def run_table(per_pair: int, seed: int, models: list[str], recipes: list[str], work: Path) -> dict[str, Any]:
    rows = []
    for name in models:
        for recipe in recipes:
            config = RunConfig.create(name, dataset=DATASET, model_seed=MODEL_SEED, recipe=recipe,
                                      per_pair=per_pair, seed=seed)
            rows.append(run_row(config, work / name / recipe))
            print(f"{name:>9} {recipe:<20} AS target {100 * rows[-1]['as_target']:6.2f}%  "
                  f"AS ignore-target {100 * rows[-1]['as_ignore_target']:6.2f}%  (n = {rows[-1]['n']})",
                  flush=True)
    return {
        "command": "python -m benchmarks.attack_table " + " ".join(sys.argv[1:]),
        "dataset": DATASET, "split": "test", "per_pair": per_pair, "seed": seed, "model_seed": MODEL_SEED,
        "models": models, "recipes": {r: read_recipe(r)["params"] for r in recipes},
        "threads": torch.get_num_threads(), "versions": library_versions(), "rows": rows,
        "note": f"AS target / AS ignore-target are unweighted means over the {cell_count(rows)} ordered class "
                "pairs (protocol §4); n = attacked examples (sources whose clean reconstruction is "
                "labelled correctly).",
    }


def markdown(table: dict[str, Any]) -> str:
    rows = {(r["model"], r["recipe"]): r for r in table["rows"]}
    models, recipes = table["models"], list(table["recipes"])
    header = ["attack (recipe)", "optimises", *(f"`{m}` AS target (ignore-target)" for m in models)]
    body = []
    for recipe in recipes:
        cells = []
        for model in models:
            r = rows.get((model, recipe))
            cells.append("–" if r is None else
                         f"**{100 * r['as_target']:.1f}%** ({100 * r['as_ignore_target']:.1f}%)")
        body.append([f"`{recipe}`", WHAT.get(recipe, ""), *cells])
    n = ", ".join(f"`{m}` {sum(r['n'] for r in table['rows'] if r['model'] == m and r['recipe'] == recipes[0])}"
                  for m in models)
    caption = (f"MNIST test set, seed-0 models, ε = 0.1 (L∞), {table['per_pair']} sampled pairs per "
               f"(source, target) cell (sampling seed {table['seed']}; attacked examples with "
               f"`{recipes[0]}`: {n}), so each number is a mean over {cell_count(table['rows'])} cells of "
               f"≤ {table['per_pair']} examples: differences of a few points are noise. "
               f"Generated by `{table['command'].strip()}`.")
    return markdown_table(header, body, "ll" + "r" * len(models)) + "\n\n" + caption + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attack_table",
                                     description=(__doc__ or "").split("\n\n")[0])
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
