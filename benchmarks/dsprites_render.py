"""dSprites rendering against one training step of the thesis VAE, on CPU with one thread.

Run from the repository root::

    python -m benchmarks.dsprites_render            # about half a minute
    python -m benchmarks.dsprites_render --repeats 20 --out /tmp/r.json

Measures, each ``--repeats`` times after ``--warmup`` untimed runs, on a batch of 64 random
dSprites factor combinations (a fresh seeded batch every repeat):

* ``render_64``: :func:`robust_vae.data.dsprites.render` at 64×64 (binary, dSprites' size);
* ``render_32``: the same at 32×32 (the 64×64 render averaged over 2×2 blocks);
* ``vae_step``: one training step of the thesis VAE (``get_family("vae")(VAEConfig())``, the
  32×32 network) at batch 64 on a rendered 32×32 batch: ``loss_terms`` + ``objective`` +
  backward + Adam step. No 64×64 network exists yet, so both renders are compared with
  this 32×32 step.

The goal is rendering < 10 % of a step, so a training loop can render its batches on the
fly. Each measurement records wall-clock and thread CPU time (median and minimum); on a
machine shared with other jobs the wall clock also measures the other jobs, so the ratios
are given for both and the JSON notes the load average. Writes
``benchmarks/results/dsprites_render.json`` (or ``--out``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from robust_vae.data.dsprites import NUM_IMAGES, factors_of, render
from robust_vae.models import VAEConfig, get_family
from robust_vae.report.tables import markdown_table

RESULTS = Path(__file__).resolve().parent / "results" / "dsprites_render.json"
BATCH = 64
TARGET_FRACTION = 0.10


def random_factors(generator: torch.Generator) -> torch.Tensor:
    """A batch of (BATCH, 5) random factor indices."""
    return factors_of(torch.randint(0, NUM_IMAGES, (BATCH,), generator=generator))


def measure(run: Callable[[int], object], repeats: int, warmup: int) -> dict[str, float]:
    """Wall and thread-CPU seconds of ``run(i)`` for i >= warmup (the first ``warmup`` calls are
    untimed): median and minimum over ``repeats`` calls."""
    wall, cpu = [], []
    for i in range(warmup + repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        run(i)
        if i >= warmup:
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
    return {"wall_median_s": statistics.median(wall), "wall_min_s": min(wall),
            "cpu_median_s": statistics.median(cpu), "cpu_min_s": min(cpu)}


def vae_step_runner(seed: int) -> Callable[[int], object]:
    """One thesis-VAE training step per call, on a 32×32 dSprites batch rendered beforehand."""
    torch.manual_seed(seed)
    model = get_family("vae")(VAEConfig())
    model.train()
    optimizer = model.optimizer()
    batch = render(random_factors(torch.Generator().manual_seed(seed)), 32)

    def step(i: int) -> object:
        terms = model.loss_terms(batch)
        loss = model.objective(terms, i, 100_000)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)  # loss.backward(), typed
        optimizer.step()
        return loss

    return step


def render_runner(size: int, seed: int, calls: int) -> Callable[[int], object]:
    """Call i renders the i-th of ``calls`` seeded batches (all drawn here, outside the timing)."""
    generator = torch.Generator().manual_seed(seed + 1)
    batches = [random_factors(generator) for _ in range(calls)]
    return lambda i: render(batches[i], size)


def run_benchmark(repeats: int, warmup: int, seed: int) -> dict[str, Any]:
    """All three measurements and their ratios, as the JSON report."""
    torch.set_num_threads(1)
    load = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    rows = {f"render_{size}": measure(render_runner(size, seed, warmup + repeats), repeats, warmup)
            for size in (64, 32)}
    rows["vae_step"] = measure(vae_step_runner(seed), repeats, warmup)
    step = rows["vae_step"]
    ratios = {f"{name}_over_step_{kind}": rows[name][f"{kind}_median_s"] / step[f"{kind}_median_s"]
              for name in ("render_64", "render_32") for kind in ("wall", "cpu")}
    return {
        "benchmark": "dsprites_render", "batch": BATCH, "repeats": repeats, "warmup": warmup, "seed": seed,
        "device": "cpu", "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load_average_at_start": load},
        "network": "thesis VAE, 32×32 input (VAEConfig()); no 64×64 network exists yet",
        "measurements": rows, "ratios": ratios, "target_fraction": TARGET_FRACTION,
        "meets_target": all(ratio < TARGET_FRACTION for key, ratio in ratios.items() if key.endswith("cpu")),
    }


def table(report: dict[str, Any]) -> str:
    """The report as a Markdown table (milliseconds; ratios against the step)."""
    rows = report["measurements"]
    step = rows["vae_step"]
    body = []
    for name, what in (("render_64", "render 64 images at 64×64"), ("render_32", "render 64 images at 32×32"),
                       ("vae_step", "thesis VAE training step, batch 64 (32×32)")):
        row = rows[name]
        share = "–" if name == "vae_step" else (f"{row['cpu_median_s'] / step['cpu_median_s']:.1%} / "
                                                f"{row['wall_median_s'] / step['wall_median_s']:.1%}")
        body.append([what, f"{row['cpu_median_s'] * 1e3:.2f}", f"{row['wall_median_s'] * 1e3:.2f}",
                     f"{row['wall_min_s'] * 1e3:.2f}", share])
    header = ["measurement (CPU, 1 thread)", "CPU ms (median)", "wall ms (median)", "wall ms (min)",
              f"of a step, CPU / wall (target < {report['target_fraction']:.0%})"]
    return markdown_table(header, body, align="lrrrr")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per measurement (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON report (default {RESULTS})")
    args = parser.parse_args(argv)
    report = run_benchmark(args.repeats, args.warmup, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
