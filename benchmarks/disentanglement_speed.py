"""Disentanglement-metric speed: all seven metrics of issue 19 on one synthetic model.

Run from the repository root::

    python -m benchmarks.disentanglement_speed                    # the seven metrics (target: <= 60 s)
    python -m benchmarks.disentanglement_speed --compare-regressors  # also DCI with gradient-boosted trees

The "model" is synthetic, with dSprites' factor grid (shape 3, scale 6, orientation 40, x 32,
y 32) and D = 10 codes: codes 0–4 are the standardised factors mixed by I + 0.2·A (A
Gaussian, fixed seed) plus noise of std 0.1, codes 5–9 are collapsed (std 0.02). The noise
is looked up per factor combination, so the code is a deterministic function of the factors
like an encoder's posterior mean. The fixed-code metrics get 10,000 codes of uniformly drawn
factors; the interventional ones draw their own (disentanglement_lib's sample sizes:
10,000 train and 5,000 eval points of 64 factor vectors each). Every metric runs with its
defaults; wall-clock and CPU (process) time are recorded per metric, with the machine's
load average (the machine is shared with training jobs, so wall time includes theirs).

``--compare-regressors`` also runs DCI with ``regressor="gbt"`` (disentanglement_lib's
``GradientBoostingClassifier``) and with the default random forest on three synthetic codes
(noisy copy with noise dimensions, rotation, duplicated dimensions) at 4,000 / 2,000 points,
and records both regressors' scores and times. Writes
``benchmarks/results/disentanglement_speed.json`` (or ``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import sklearn

from robust_vae.evaluation.disentanglement import METRICS, MetricResult, UniformFactors, dci
from robust_vae.evaluation.disentanglement.base import FloatArray, IntArray

SIZES = (3, 6, 40, 32, 32)     # dSprites without its one-valued colour factor
NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
CODE_DIM = 10
NUM_CODES = 10_000
TARGET_SECONDS = 60.0
RESULTS = Path(__file__).resolve().parent / "results"


def standardized(factors: IntArray) -> FloatArray:
    """Factors ``(n, F)`` scaled to zero mean and unit variance under the uniform distribution."""
    sizes = np.asarray(SIZES, dtype=np.float64)
    out: FloatArray = (factors - (sizes - 1) / 2) / np.sqrt((sizes ** 2 - 1) / 12)
    return out


class SyntheticModel:
    """Codes ``(n, 10)`` as a deterministic function of dSprites-like factors ``(n, 5)``."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        factors = len(SIZES)
        self.mixing = np.eye(factors) + 0.2 * rng.normal(size=(factors, factors))
        self.noise = rng.normal(size=(int(np.prod(SIZES)), CODE_DIM)).astype(np.float32)
        self.scale = np.array([0.1] * factors + [0.02] * (CODE_DIM - factors))

    def __call__(self, factors: IntArray) -> FloatArray:
        noise = self.noise[np.ravel_multi_index(tuple(factors.T), SIZES)] * self.scale
        signal = np.concatenate([standardized(factors) @ self.mixing.T, np.zeros((factors.shape[0], CODE_DIM - len(SIZES)))],
                                axis=1)
        codes: FloatArray = signal + noise
        return codes


def timed(fn: Callable[[], MetricResult]) -> tuple[MetricResult, float, float]:
    """``fn()`` with its wall-clock and process CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def run_metrics(seed: int) -> list[dict[str, Any]]:
    """Every registered metric once on the synthetic model, in registry order."""
    sampler = UniformFactors(SIZES, SyntheticModel(seed))
    factors = sampler.sample_factors(NUM_CODES, np.random.default_rng(seed + 1))
    codes = sampler.represent(factors)
    rows = []
    for name, entry in METRICS.items():
        if entry.interventional:
            result, wall, cpu = timed(partial(entry.fn, sampler, seed=seed))
        else:
            result, wall, cpu = timed(partial(entry.fn, codes, factors, seed=seed))
        rows.append({"metric": name, "interventional": entry.interventional, "wall_s": round(wall, 3),
                     "cpu_s": round(cpu, 3), "scores": result.scores, "settings": result.settings})
        print(f"{name:16s} wall {wall:7.2f} s  cpu {cpu:7.2f} s", file=sys.stderr, flush=True)
    return rows


def comparison_codes(rng: np.random.Generator, n: int) -> tuple[IntArray, dict[str, FloatArray]]:
    """Factors ``(n, 5)`` and three synthetic codes ``(n, 10)`` for the regressor comparison."""
    factors = np.stack([rng.integers(0, s, size=n) for s in SIZES], axis=1).astype(np.int64)
    z = standardized(factors)
    rotation = np.linalg.qr(rng.normal(size=(CODE_DIM, CODE_DIM)))[0]

    def noise() -> FloatArray:
        out: FloatArray = 0.1 * rng.normal(size=(n, CODE_DIM))
        return out

    codes = {"copy_plus_noise_dims": np.concatenate([z, rng.normal(size=z.shape)], axis=1) + noise(),
             "rotation": np.concatenate([z, np.zeros_like(z)], axis=1) @ rotation.T + noise(),
             "duplicated": np.concatenate([z, z], axis=1) + noise()}
    return factors, codes


def compare_regressors(seed: int) -> list[dict[str, Any]]:
    """DCI with the random forest and with disentanglement_lib's boosted trees on the same codes."""
    factors, codes = comparison_codes(np.random.default_rng(seed), 6_000)
    rows = []
    for code_name, code in codes.items():
        for regressor in ("random_forest", "gbt"):
            result, wall, cpu = timed(partial(dci, code, factors, seed=seed, num_train=4_000, num_test=2_000,
                                              regressor=regressor))
            rows.append({"codes": code_name, "regressor": regressor, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                         "scores": result.scores})
            print(f"dci {code_name:22s} {regressor:14s} wall {wall:7.2f} s  "
                  f"D {result.scores['dci_disentanglement']:.3f}  C {result.scores['dci_completeness']:.3f}",
                  file=sys.stderr, flush=True)
    return rows


def machine_info() -> dict[str, Any]:
    """Platform, CPU, thread settings, library versions and the load average."""
    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__},
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["processor"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        info["processor"] = platform.processor()
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def table(rows: list[dict[str, Any]], total_wall: float, total_cpu: float) -> str:
    """The Markdown table of the per-metric times."""
    lines = ["| metric | wall (s) | CPU (s) | main score |", "|---|---:|---:|---:|"]
    for row in rows:
        key, value = next(iter(row["scores"].items()))
        lines.append(f"| {row['metric']} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | {key} = {value:.3f} |")
    lines.append(f"| **all seven** | **{total_wall:.2f}** | **{total_cpu:.2f}** | target ≤ {TARGET_SECONDS:.0f} s |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.disentanglement_speed",
                                     description="Time the seven disentanglement metrics on a synthetic model.")
    parser.add_argument("--out", type=Path, default=RESULTS / "disentanglement_speed.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-regressors", action="store_true",
                        help="also run DCI with disentanglement_lib's gradient-boosted trees (minutes)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    machine = machine_info()
    rows = run_metrics(args.seed)
    total_wall = sum(r["wall_s"] for r in rows)
    total_cpu = sum(r["cpu_s"] for r in rows)
    if hasattr(os, "getloadavg"):
        machine["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    report: dict[str, Any] = {
        "benchmark": "disentanglement_speed", "seed": args.seed, "machine": machine,
        "model": {"factor_names": list(NAMES), "factor_sizes": list(SIZES), "code_dim": CODE_DIM,
                  "num_codes": NUM_CODES, "codes": "5 mixed factors (I + 0.2 A) + noise 0.1, 5 collapsed dims (std 0.02)"},
        "metrics": rows, "total_wall_s": round(total_wall, 3), "total_cpu_s": round(total_cpu, 3),
        "target_s": TARGET_SECONDS, "within_target": total_wall <= TARGET_SECONDS,
    }
    if args.compare_regressors:
        report["dci_regressor_comparison"] = compare_regressors(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(rows, total_wall, total_cpu))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
