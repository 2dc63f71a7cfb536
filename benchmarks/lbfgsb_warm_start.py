"""Warm-started C sweeps of the Tabacof L-BFGS-B attack against the cold-start sweep.

Run from the repository root::

    python -m benchmarks.lbfgsb_warm_start                         # 200 MNIST pairs, 41 C (issue goal)
    python -m benchmarks.lbfgsb_warm_start --pairs 8 --out /tmp/w.json   # a quick look

The attack is the ``tabacof`` recipe (KL divergence, C = 2^k, k = −20..20, m = 25, factr = 10,
500 iterations) on the shipped ``vae`` seed 0, for the first ``--pairs`` (source, target) test
pairs of :func:`robust_vae.data.class_pairs`-style sampling (source i, target i + 5000 of the
test split, different classes). Each mode (``none`` = cold start, ``descending`` and
``ascending`` continuation in C) solves the same sweep with :meth:`LatentLBFGSB.run`; per mode
the JSON records the wall and CPU time, the total objective/gradient evaluations and, per C,
the median relative difference of the final objective from the cold start's
((warm − cold) / |cold|: negative is better). The goal of issue "L-BFGS-B" is at least 5× fewer
evaluations at a median objective no worse than cold start's within 1e-3. Writes
``benchmarks/results/lbfgsb_warm_start.json`` (or ``--out``) and prints the README tables
(``--render``: the table of the committed results; ``--render --per-c``: where the evaluations
go, per C).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import machine, rendered, results_parser, write_report
from robust_vae import load_attack, load_dataset, load_model
from robust_vae.attacks import parse_overrides
from robust_vae.attacks.base import as_attackable
from robust_vae.report.tables import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("none", "descending", "ascending")
GOAL_RATIO, GOAL_OBJECTIVE = 5.0, 1e-3


def pairs(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` (source, target) test images of different classes: (count, 1, 32, 32) each."""
    test = load_dataset("mnist", "test")
    sources, targets = [], []
    i = 0
    while len(sources) < count:
        j = 5000 + i
        if int(test.labels[i]) != int(test.labels[j]):
            sources.append(i)
            targets.append(j)
        i += 1
    return test.images[sources], test.images[targets]


def measure(mode: str, count: int, precision: str, solver: str, max_iter: int | None,
            warm_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """One sweep in ``mode``; ``warm_overrides`` (recipe values such as a looser ``factr``) apply
    to the warm-started modes only, the cold start keeps the recipe's."""
    model = load_model("vae", "mnist", seed=0)
    overrides: dict[str, Any] = {"warm_start": mode, "precision": precision, "solver": solver}
    if max_iter is not None:
        overrides["max_iter"] = max_iter
    if mode != "none":
        overrides.update(warm_overrides or {})
    attack = load_attack("tabacof", **overrides)
    xs, xt = pairs(count)
    problem = attack._flatten_batch(as_attackable(model), torch.device("cpu"), xs, xt, None, None)
    wall, cpu = time.perf_counter(), time.process_time()
    out = attack.run(model, problem)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    k = attack.sweep_size()
    assert out.evaluations is not None
    return {"mode": mode, "overrides": {k: v for k, v in overrides.items() if k != "warm_start"}, "wall_seconds": wall, "cpu_seconds": cpu,
            "evaluations": int(out.evaluations.sum()), "iterations": int(out.iterations.sum()),
            "evaluations_per_c": out.evaluations.view(k, count).sum(dim=1).tolist(),
            "objective": out.objective.double().view(k, count).tolist(), "c": attack.sweep_values()}


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    cold = np.asarray(results["none"]["objective"])
    summary = {}
    for mode, result in results.items():
        objective = np.asarray(result["objective"])
        relative = (objective - cold) / np.maximum(np.abs(cold), 1e-12)
        per_c = np.median(relative, axis=1)
        summary[mode] = {
            "evaluation_ratio": results["none"]["evaluations"] / result["evaluations"],
            "time_ratio": results["none"]["wall_seconds"] / result["wall_seconds"],
            "median_relative_objective_per_c": per_c.tolist(),
            "worst_median_relative_objective": float(per_c.max()),
            "median_relative_objective": float(np.median(relative)),
            "meets_goal": bool(results["none"]["evaluations"] / result["evaluations"] >= GOAL_RATIO
                               and per_c.max() <= GOAL_OBJECTIVE),
        }
    return summary


def table(report: dict[str, Any]) -> str:
    rows = []
    for mode in MODES:
        if mode not in report["modes"]:
            continue
        r, s = report["modes"][mode], report["summary"][mode]
        warm = report.get("warm_overrides") or {} if mode != "none" else {}
        changed = ", ".join(f"{key}={value}" for key, value in warm.items()) or "recipe"
        rows.append([f"`{mode}`", changed, f"{r['evaluations']:,}", f"{s['evaluation_ratio']:.2f}×", f"{r['wall_seconds']:.0f}",
                     f"{s['time_ratio']:.2f}×", f"{s['median_relative_objective']:+.2e}",
                     f"{s['worst_median_relative_objective']:+.2e}"])
    header = ["warm_start", "values", "evaluations", "fewer than cold", "wall s", "faster", "median rel. objective",
              "worst per-C median"]
    return markdown_table(header, rows, align="llrrrrrr")


def per_c_table(report: dict[str, Any], every: int = 4) -> str:
    """Where the evaluations go: per C (every ``every``-th of the sweep) each mode's mean
    evaluations per pair and its median relative objective against the cold start."""
    present = [m for m in MODES if m in report["modes"]]
    if any("evaluations_per_c" not in report["modes"][m] for m in present):
        raise SystemExit(f"{report['command']}: this report has no per-C evaluations (measured before they were recorded)")
    pairs, c = report["pairs"], report["modes"]["none"]["c"]
    header = ["C", *[f"`{m}` evaluations" for m in present], *[f"`{m}` median rel. objective" for m in present if m != "none"]]
    rows = []
    for j in range(0, len(c), every):
        rows.append([f"2^{round(np.log2(c[j]))}",
                     *[f"{report['modes'][m]['evaluations_per_c'][j] / pairs:.0f}" for m in present],
                     *[f"{report['summary'][m]['median_relative_objective_per_c'][j]:+.1e}" for m in present if m != "none"]])
    return markdown_table(header, rows, align="l" + "r" * (len(header) - 1))


def main() -> None:
    parser = results_parser(__doc__, RESULTS / "lbfgsb_warm_start.json")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--precision", default="float32", choices=["float32", "float64"])
    parser.add_argument("--solver", default="scipy", choices=["scipy", "torch"])
    parser.add_argument("--max-iter", type=int, default=None, help="override the recipe's 500 (quick looks only)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warm-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe value for the warm-started modes only, e.g. factr=1e7 (repeatable)")
    parser.add_argument("--per-c", action="store_true", help="with --render: the per-C evaluations and objectives")
    args = parser.parse_args()
    warm_overrides = parse_overrides(args.warm_set)
    if rendered(args, per_c_table if args.per_c else table):
        return
    torch.set_num_threads(args.threads)
    modes = ["none", *[m for m in args.modes if m != "none"]]
    results = {}
    for mode in modes:
        results[mode] = measure(mode, args.pairs, args.precision, args.solver, args.max_iter, warm_overrides)
        print(f"{mode}: {results[mode]['evaluations']} evaluations, {results[mode]['wall_seconds']:.1f} s", flush=True)
    report = {
        "command": "python -m benchmarks.lbfgsb_warm_start " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in (("pairs", args.pairs), ("precision", args.precision),
                                                      ("solver", args.solver)) )
        + "".join(f" --warm-set {item}" for item in args.warm_set)
        + (f" --max-iter {args.max_iter}" if args.max_iter is not None else ""),
        "pairs": args.pairs, "precision": args.precision, "solver": args.solver, "max_iter": args.max_iter,
        "warm_overrides": warm_overrides, "threads": args.threads, **machine(), "modes": results, "summary": summarise(results),
    }
    write_report(report, args.out, table(report) + "\n\n" + per_c_table(report))


if __name__ == "__main__":
    main()
