"""Attack speed: the thesis loop against robust-vae, and batched L-BFGS-B against a SciPy loop.

Run from the repository root (set ``OMP_NUM_THREADS``; the numbers are per process)::

    python -m benchmarks.attack_speed --quick   # about 100 s of CPU time
    python -m benchmarks.attack_speed           # the full measurement (about 12 CPU-minutes)
    python -m benchmarks.attack_speed --device cuda

One run, on the shipped ``jointvae`` (seed 0) and the shipped classifier, on the same
source/target pairs for every measurement (the first ``--per-pair`` sampled pairs of every
ordered class pair, kept as in protocol §4 step 2 — exactly the examples
``robust-vae attack --per-pair N`` attacks):

a) **the thesis loop**, re-implemented as the thesis ran it: per ordered pair, batches of 64,
   ``torch.optim.Adam`` (lr 1e-3) for 1000 steps on λ·Σ‖x − x_s‖₂ + Σ‖φ(x) − φ_t‖₂ from
   clip(x_s + N(0, 0.2²)), projected onto the ε = 0.1 L∞ ball ∩ [0, 1] after every step.
   Its time per example is measured on full batches of 64 of one pair (``--timing-steps``
   steps, extrapolated to 1000); its AS target is measured on all the pairs with the same
   loop code (there batches of 64 are filled across pairs: Adam is elementwise and the loss
   a sum of per-example terms, so every example gets the same arithmetic as alone).
b) robust-vae's ``thesis`` recipe, run unit by unit exactly as ``robust-vae attack`` runs it.
c) a small set of faster robust-vae configurations (early stopping, larger batches, fewer
   steps with a larger step size); the fastest whose AS target is within 1 percentage point
   of (a) on the same pairs is reported.
d) ``latent-lbfgsb`` (Tabacof et al.'s KL objective, one C, m = 25, factr = 10) with the
   vectorised torch L-BFGS-B, batched, against a plain loop calling
   ``scipy.optimize.minimize(method="L-BFGS-B")`` once per example on the same objective
   (float32 model, batch of one). Time per example and the final objectives of both on the
   examples both solved.

Every measurement records wall-clock and CPU (process) time. On a machine shared with other
jobs the wall clock mostly measures the other jobs, so the ratios are given for both and
the JSON notes the load average. Writes ``benchmarks/results/attack_speed.json`` (or
``--out``) and prints a table.
"""


from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

# NumPy/SciPy's OpenBLAS serves only the per-example SciPy loop (d-loop). Its worker threads
# busy-wait between SciPy's many small BLAS calls and take a core from torch: measured here, the
# loop ran 1.2× slower in wall time and spent 2× the CPU with them. One thread is the loop's fair
# setting; it must be set before NumPy loads (export OPENBLAS_NUM_THREADS to override), so every
# import that loads NumPy (robust_vae included) comes after it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import scipy.optimize
import torch
from torch import nn

from robust_vae.attacks import Attack, load_attack, make_attack
from robust_vae.attacks.objectives import posterior_kl, squared_distortion
from robust_vae.core.devices import model_device
from robust_vae.data import Dataset, load_dataset
from robust_vae.evaluation.success_matrix import (
    PairPlan,
    attack_unit,
    clean_predictions,
    group_units,
    library_versions,
    plan_pairs,
)
from robust_vae.models import LatentParams, attackable
from robust_vae.report.tables import markdown_table
from robust_vae.zoo import load_classifier, load_model

RESULTS = Path(__file__).resolve().parent / "results"
DATASET = "mnist"
MODEL = "jointvae"
MODEL_SEED = 0
THESIS_BATCH = 64  # the thesis attacked each pair in batches of 64
TARGETS = {"c_over_a": 30, "d_loop_over_torch": 10}


@dataclass(frozen=True)
class ThesisSettings:
    """The thesis attack's settings (a); ``steps`` is the only one ``--smoke`` changes."""

    epsilon: float = 0.1
    lam: float = 1.0
    lr: float = 1e-3
    steps: int = 1000
    noise_std: float = 0.2


THESIS = ThesisSettings()


@dataclass
class Timing:
    wall: float = 0.0
    cpu: float = 0.0


def _sync() -> None:
    """Wait for queued GPU work, so that a clock read after it counts that work."""
    # is_initialized keeps a CPU run from starting CUDA; torch leaves it unannotated
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        torch.cuda.synchronize()


@contextmanager
def timed() -> Iterator[Timing]:
    record = Timing()
    _sync()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield record
    finally:
        _sync()
        record.wall = time.perf_counter() - wall
        record.cpu = time.process_time() - cpu


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads (None: leave as is)."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Measurement:
    name: str
    what: str
    seconds_per_example_wall: float
    seconds_per_example_cpu: float
    examples_timed: int
    as_target: float | None = None
    as_ignore_target: float | None = None
    examples_scored: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ----------------------------------------------------------------------------- (a)
def thesis_loop(model: nn.Module, classifier: nn.Module, images: torch.Tensor,
                batches: list[tuple[np.ndarray, np.ndarray]], steps: int, seed: int,
                settings: ThesisSettings = THESIS) -> np.ndarray:
    """The thesis's attack loop, batch by batch (``batches``: (source, target) test indices).

    Returns the classifier's label of every adversarial's reconstruction, in batch order.
    """
    eps, lam, lr, noise = settings.epsilon, settings.lam, settings.lr, settings.noise_std
    vae = attackable(model)
    torch.manual_seed(seed)
    device = model_device(model)
    predictions = []
    for src, tgt in batches:
        xs, xt = images[src].to(device), images[tgt].to(device)
        with torch.no_grad():
            phi_t = vae.attack_code(xt)
        x = (xs + noise * torch.randn_like(xs)).clamp(0.0, 1.0).requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            optimizer.zero_grad()
            loss = lam * (x - xs).flatten(1).norm(dim=1).sum() + (vae.attack_code(x) - phi_t).norm(dim=1).sum()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, xs + eps), xs - eps).clamp(0.0, 1.0))
        with torch.no_grad():
            predictions.append(classifier(vae.reconstruct(x.detach())).argmax(-1).cpu().numpy())
    return np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)


def batches_of(src: np.ndarray, tgt: np.ndarray, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(src[i:i + size], tgt[i:i + size]) for i in range(0, len(src), size)]


# ----------------------------------------------------------------------------- (b), (c)
def run_units(plans: list[PairPlan], model: nn.Module, classifier: nn.Module, dataset: Dataset,
              attack: Attack, batch_size: int, seed: int,
              device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray, Timing]:
    """What ``robust-vae attack`` does per unit (without writing): (predictions, s, t, time)."""
    preds, sources, targets = [], [], []
    with timed() as clock:
        for unit in group_units(plans, batch_size):
            arrays = attack_unit([plans[i] for i in unit], model, classifier, dataset, attack, seed,
                                 batch_size, device)
            preds.append(arrays["prediction"])
            sources.append(arrays["source"])
            targets.append(arrays["target"])
    return np.concatenate(preds), np.concatenate(sources), np.concatenate(targets), clock


def success(pred: np.ndarray, s: np.ndarray, t: np.ndarray, num_classes: int) -> tuple[float, float]:
    """Overall AS target and AS ignore-target: unweighted means over the cells (protocol §4)."""
    cells_t, cells_i = [], []
    for a in range(num_classes):
        for b in range(num_classes):
            sel = (s == a) & (t == b)
            if a != b and sel.any():
                cells_t.append(float((pred[sel] == b).mean()))
                cells_i.append(float((pred[sel] != a).mean()))
    return float(np.mean(cells_t)), float(np.mean(cells_i))


# ----------------------------------------------------------------------------- (d)
@dataclass
class LoopStats:
    """What the SciPy loop spent: evaluations per example and CPU seconds inside the objective."""

    evaluations: list[int] = field(default_factory=list)
    objective_cpu: float = 0.0
    objective_wall: float = 0.0


def _loop_objective(model: nn.Module, source: torch.Tensor, target: LatentParams, c: float,
                    stats: LoopStats) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """The (d) objective of one example and its gradient as SciPy sees them (float64 NumPy)."""
    device = source.device

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        started, started_wall = time.process_time(), time.perf_counter()
        x = torch.from_numpy(z).to(device, torch.float32).view_as(source).requires_grad_(True)
        loss = posterior_kl(model, x, target) + c * squared_distortion(x, source)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        out = float(loss.detach()[0]), grad.double().cpu().numpy().ravel()
        stats.objective_cpu += time.process_time() - started
        stats.objective_wall += time.perf_counter() - started_wall
        return out

    return fun


def scipy_loop(model: nn.Module, xs: torch.Tensor, xt: torch.Tensor, c: float, *, memory: int,
               factr: float, pgtol: float, max_iter: int) -> tuple[np.ndarray, np.ndarray, Timing, LoopStats]:
    """One plain ``scipy.optimize.minimize(method="L-BFGS-B")`` per example, batch of one.

    The objective runs on ``xs``'s device; SciPy gets float64 NumPy arrays."""
    vae = attackable(model)
    values, iterations, stats = [], [], LoopStats()
    with timed() as clock:
        for i in range(xs.shape[0]):
            source = xs[i:i + 1]
            with torch.no_grad():
                target = vae.encode(xt[i:i + 1])
            result = scipy.optimize.minimize(
                _loop_objective(model, source, target, c, stats), source.double().cpu().numpy().ravel(),
                jac=True, method="L-BFGS-B", bounds=scipy.optimize.Bounds(0.0, 1.0),
                options={"maxcor": memory, "ftol": factr * np.finfo(float).eps, "gtol": pgtol,
                         "maxiter": max_iter})
            values.append(result.fun)
            iterations.append(result.nit)
            stats.evaluations.append(int(result.nfev))
    return np.array(values), np.array(iterations), clock, stats


def loop_measurement(name: str, what: str, values: np.ndarray, iterations: np.ndarray, clock: Timing,
                     threads: int, **extra: Any) -> Measurement:
    """A ``scipy_loop`` result as a row: per-example seconds, median objective and iterations."""
    n = len(values)
    return Measurement(name, what, clock.wall / n, clock.cpu / n, n,
                       extra={"median_objective": float(np.median(values)),
                              "median_iterations": float(np.median(iterations)), **extra,
                              "torch_threads": threads})


def thread_label(threads: int) -> str:
    return f"{threads} torch thread{'s' if threads > 1 else ''}"


def batched_objective_cost(model: nn.Module, xs: torch.Tensor, xt: torch.Tensor, c: float,
                           repeats: int = 5) -> Timing:
    """CPU and wall seconds of one evaluation of the (d) objective and its gradient, per
    example, when all of ``xs`` (N, C, H, W) are evaluated in one batch: the least a batched
    solver can spend per evaluation however cheap its own arithmetic is."""
    with torch.no_grad():
        target = attackable(model).encode(xt)
    x = xs.clone().requires_grad_(True)
    loss = posterior_kl(model, x, target) + c * squared_distortion(x, xs)   # warm-up, untimed
    torch.autograd.grad(loss.sum(), x)
    with timed() as clock:
        for _ in range(repeats):
            loss = posterior_kl(model, x, target) + c * squared_distortion(x, xs)
            torch.autograd.grad(loss.sum(), x)
    scale = 1.0 / (repeats * xs.shape[0])
    return Timing(clock.wall * scale, clock.cpu * scale)


# ----------------------------------------------------------------------------- machine
def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(), "processor": _cpu_name(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
        "versions": library_versions(), "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    info["other_busy_processes"] = _other_processes()
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _other_processes() -> list[str]:
    """Command lines of the other robust-vae / python jobs running now (Linux only)."""
    found = []
    mine = {os.getpid(), os.getppid()}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int(proc.name) in mine:
                continue
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError):
            continue
        if "python" in cmd and ("robust-vae" in cmd or "pytest" in cmd or "benchmarks" in cmd):
            found.append(" ".join(Path(p).name if i == 0 else p for i, p in enumerate(cmd.split()))[:160])
    return sorted(found)


def load_average() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


# ----------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attack_speed",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a few CPU-minutes")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes to check the script runs (numbers meaningless)")
    parser.add_argument("--per-pair", type=int, default=None, help="sampled pairs per ordered class pair")
    parser.add_argument("--timing-steps", type=int, default=None, help="Adam steps timed for (a), extrapolated to 1000")
    parser.add_argument("--lbfgsb-loop", type=int, default=None, help="examples of the per-example SciPy loop (d)")
    parser.add_argument("--lbfgsb-batch", type=int, default=None, help="examples of the batched L-BFGS-B run (d)")
    parser.add_argument("--lbfgsb-iter", type=int, default=None, help="max_iter of both L-BFGS-B runs (d)")
    parser.add_argument("--c", type=float, default=2.0 ** -6, help="C of (d) (default 2^-6)")
    parser.add_argument("--loop-threads", type=int, default=1,
                        help="torch threads of the per-example SciPy loop (d-loop); default 1, its fastest "
                             "setting on CPU (a batch of one gains no wall time from a second thread and "
                             "spends twice the CPU); 0 keeps the run's threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where models and attacks run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="measure nothing: print the README tables of a results JSON written earlier")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON file (default benchmarks/results/attack_speed[_quick|_smoke][_cuda].json: "
                             "a --quick run does not overwrite the full run's results)")
    return parser


@dataclass(frozen=True)
class Sizes:
    """How much each measurement runs, from the flags and --quick / --smoke."""

    quick: bool
    smoke: bool
    per_pair: int
    timing_steps: int
    n_loop: int
    n_batch: int
    lbfgsb_iter: int
    thesis: ThesisSettings = THESIS


def resolve_sizes(args: argparse.Namespace) -> Sizes:
    quick = bool(args.quick or args.smoke)
    thesis, timing_steps = THESIS, args.timing_steps
    n_loop, n_batch, lbfgsb_iter = args.lbfgsb_loop, args.lbfgsb_batch, args.lbfgsb_iter
    if args.smoke:
        thesis = replace(THESIS, steps=10)
        timing_steps = timing_steps or 5
        n_loop, n_batch, lbfgsb_iter = 2, 4, 3
    return Sizes(quick=quick, smoke=bool(args.smoke), per_pair=args.per_pair or (1 if quick else 10),
                 timing_steps=timing_steps or (100 if quick else 1000), n_loop=n_loop or (8 if quick else 32),
                 n_batch=n_batch or (256 if quick else 512), lbfgsb_iter=lbfgsb_iter or (100 if quick else 500),
                 thesis=thesis)


def default_out(args: argparse.Namespace, device: torch.device) -> Path:
    """benchmarks/results/attack_speed[_quick|_smoke][_cuda].json."""
    size = "_smoke" if args.smoke else "_quick" if args.quick else ""
    return RESULTS / f"attack_speed{size}{'' if device.type == 'cpu' else '_' + device.type}.json"


# ----------------------------------------------------------------------------- setup
@dataclass
class Bench:
    """The shared inputs of every measurement: models, test set and the attacked pairs."""

    device: torch.device
    seed: int
    dataset: Dataset
    model: nn.Module
    classifier: nn.Module
    clean: np.ndarray
    plans: list[PairPlan]
    src: np.ndarray
    tgt: np.ndarray
    s_cls: np.ndarray
    t_cls: np.ndarray


def frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def load_bench(device: torch.device, per_pair: int, seed: int) -> Bench:
    dataset = load_dataset(DATASET, "test")
    model = frozen(load_model(MODEL, DATASET, seed=MODEL_SEED).to(device))
    classifier = frozen(load_classifier(DATASET).to(device))
    clean = clean_predictions(model, classifier, dataset.images)
    plans = plan_pairs(dataset.labels, clean, dataset.num_classes, per_pair, seed)
    return Bench(device, seed, dataset, model, classifier, clean, plans,
                 src=np.concatenate([p.source_index[p.kept] for p in plans]),
                 tgt=np.concatenate([p.target_index[p.kept] for p in plans]),
                 s_cls=np.concatenate([np.full(p.n, p.source) for p in plans]),
                 t_cls=np.concatenate([np.full(p.n, p.target) for p in plans]))


# ----------------------------------------------------------------------------- (a), (b)
def measure_a(bench: Bench, sizes: Sizes) -> Measurement:
    """(a) the thesis loop: time on a full batch of 64 of one pair, AS on all pairs."""
    images, steps, thesis = bench.dataset.images, sizes.timing_steps, sizes.thesis
    full_plans = plan_pairs(bench.dataset.labels, bench.clean, bench.dataset.num_classes, None, bench.seed)
    timing_plan = next(p for p in full_plans if p.n >= THESIS_BATCH)
    t_src = timing_plan.source_index[timing_plan.kept][:THESIS_BATCH]
    t_tgt = timing_plan.target_index[timing_plan.kept][:THESIS_BATCH]
    thesis_loop(bench.model, bench.classifier, images, [(t_src, t_tgt)], 3, bench.seed, thesis)   # warm-up, untimed
    with timed() as clock:
        thesis_loop(bench.model, bench.classifier, images, [(t_src, t_tgt)], steps, bench.seed, thesis)
    scale = thesis.steps / steps / len(t_src)
    print(f"(a) timing: 64 examples × {steps} steps: {clock.wall:.1f} s wall, {clock.cpu:.1f} s CPU", flush=True)
    with timed() as run_clock:
        pred_a = thesis_loop(bench.model, bench.classifier, images, batches_of(bench.src, bench.tgt, THESIS_BATCH),
                             thesis.steps, bench.seed, thesis)
    as_a, asi_a = success(pred_a, bench.s_cls, bench.t_cls, bench.dataset.num_classes)
    n = len(bench.src)
    print(f"(a) AS target {100 * as_a:.2f}% on {n} examples ({run_clock.cpu:.1f} s CPU)", flush=True)
    return Measurement(
        "a", "thesis loop (per pair, batches of 64, torch.optim.Adam, 1000 steps)",
        clock.wall * scale, clock.cpu * scale, len(t_src), as_a, asi_a, n,
        {"timed": f"pair {timing_plan.source}->{timing_plan.target}, one batch of 64, {steps} steps, "
                  "extrapolated to 1000 steps",
         "as_run_seconds_per_example_wall": run_clock.wall / n,
         "as_run_seconds_per_example_cpu": run_clock.cpu / n})


def measure_units(bench: Bench, attack: Attack, batch_size: int) -> tuple[float, float, int, Timing]:
    """A robust-vae attack run unit by unit on the pairs: (AS target, AS ignore-target, examples, time)."""
    pred, s, t, clock = run_units(bench.plans, bench.model, bench.classifier, bench.dataset, attack, batch_size,
                                  bench.seed, bench.device)
    as_t, as_i = success(pred, s, t, bench.dataset.num_classes)
    return as_t, as_i, len(pred), clock


def measure_b(bench: Bench, sizes: Sizes) -> Measurement:
    """(b) robust-vae's thesis recipe, as `robust-vae attack` runs it (batch 512)."""
    as_b, asi_b, n, clock = measure_units(bench, load_attack("thesis", steps=sizes.thesis.steps), 512)
    print(f"(b) AS target {100 * as_b:.2f}%: {clock.cpu / n * 1e3:.1f} ms CPU per example", flush=True)
    return Measurement("b", "robust-vae `thesis` recipe (units of 512, per-example seeds)",
                       clock.wall / n, clock.cpu / n, n, as_b, asi_b, n)


# ----------------------------------------------------------------------------- (c)
Candidate = tuple[str, str, dict[str, Any], int]   # label, recipe, overrides, batch size
CANDIDATES: list[Candidate] = [
    ("thesis, early stop (check 50 steps, tol 1e-3), batch 1024", "thesis",
     dict(early_stop=True, check_every=50, tolerance=1e-3), 1024),
    ("lr 5e-3, 200 steps, batch 1024", "thesis", dict(lr=5e-3, steps=200), 1024),
    ("lr 1e-2, 100 steps, batch 1024", "thesis", dict(lr=1e-2, steps=100), 1024),
    ("lr 1e-2, 50 steps, batch 1024", "thesis", dict(lr=1e-2, steps=50), 1024),
    ("lr 2e-2, 30 steps, batch 1024", "thesis", dict(lr=2e-2, steps=30), 1024),
    ("lr 2e-2, 20 steps, batch 1024", "thesis", dict(lr=2e-2, steps=20), 1024),
    ("lr 3e-2, 20 steps, batch 1024", "thesis", dict(lr=3e-2, steps=20), 1024),
    ("`thesis-fast` recipe (lr 5e-2, 15 steps), batch 1024", "thesis-fast", {}, 1024),
    ("lr 5e-2, 10 steps, batch 1024", "thesis", dict(lr=5e-2, steps=10), 1024),
]


def candidates_for(sizes: Sizes) -> list[Candidate]:
    """All candidates; --smoke: the first two, with 10 steps."""
    if sizes.smoke:
        return [(label, recipe, {**overrides, "steps": 10}, size) for label, recipe, overrides, size in CANDIDATES[:2]]
    return list(CANDIDATES)


@dataclass
class CResult:
    """(c): every candidate, the fastest within 1 pp of (a) and the `thesis-fast` recipe's row."""

    candidates: list[Measurement]
    chosen: Measurement | None
    recipe: Measurement | None

    def rows(self) -> list[Measurement]:
        """The rows of the main table: the chosen one, and `thesis-fast` as c-recipe if another was chosen."""
        rows = [self.chosen] if self.chosen is not None else []
        if self.recipe is not None and self.recipe is not self.chosen:
            rows.append(replace(self.recipe, name="c-recipe"))
        return rows


def measure_c(bench: Bench, sizes: Sizes, as_a: float) -> CResult:
    """(c) faster configurations of robust-vae's latent-adam."""
    results = []
    for label, recipe, overrides, batch_size in candidates_for(sizes):
        as_c, asi_c, n, clock = measure_units(bench, load_attack(recipe, **overrides), batch_size)
        results.append(Measurement("c", label, clock.wall / n, clock.cpu / n, n, as_c, asi_c, n,
                                   {"recipe": recipe, "overrides": overrides, "batch_size": batch_size,
                                    "within_1pp_of_a": abs(as_c - as_a) <= 0.01}))
        print(f"(c) {label}: AS target {100 * as_c:.2f}% ({100 * (as_c - as_a):+.2f} pp), "
              f"{clock.cpu / n * 1e3:.2f} ms CPU per example", flush=True)
    eligible = [r for r in results if r.extra["within_1pp_of_a"]]
    # on CPU the scarce resource is CPU time; on a GPU it is the wall clock
    cost: Callable[[Measurement], float] = (
        (lambda r: r.seconds_per_example_cpu) if bench.device.type == "cpu" else (lambda r: r.seconds_per_example_wall))
    chosen = min(eligible, key=cost) if eligible else None
    recipe_row = next((r for r in results if r.extra["recipe"] == "thesis-fast"), None)
    return CResult(results, chosen, recipe_row)


# ----------------------------------------------------------------------------- (d)
@dataclass
class DResult:
    """(d): the batched torch L-BFGS-B, the SciPy loop(s) and how their objectives compare."""

    settings: dict[str, Any]
    per_pair: int
    n_loop: int
    n_batch: int
    loop_threads: int
    torch_row: Measurement
    loops: list[Measurement]   # d-loop first, then d-loop-cpu on a GPU run
    relative_difference: np.ndarray
    objective_batched: Timing
    evaluations: float

    @property
    def loop_row(self) -> Measurement:
        return self.loops[0]

    @property
    def median_ok(self) -> bool:
        return bool(np.median(self.relative_difference) <= 1e-3)


def d_examples(bench: Bench, sizes: Sizes) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The (d) examples: the kept pairs of the same shuffled cells, more per cell if the batch
    needs them (about 80% of the sampled sources are kept). Returns (sources, targets, per_pair)."""
    per_pair = max(sizes.per_pair, math.ceil(sizes.n_batch / (0.8 * len(bench.plans))))
    plans = plan_pairs(bench.dataset.labels, bench.clean, bench.dataset.num_classes, per_pair, bench.seed)
    src = np.concatenate([p.source_index[p.kept] for p in plans])[:sizes.n_batch]
    tgt = np.concatenate([p.target_index[p.kept] for p in plans])[:sizes.n_batch]
    return bench.dataset.images[src].to(bench.device), bench.dataset.images[tgt].to(bench.device), per_pair


def measure_lbfgsb_batched(bench: Bench, xs: torch.Tensor, xt: torch.Tensor, c: float, settings: dict[str, Any],
                           n_loop: int) -> tuple[Measurement, np.ndarray]:
    """(d) the batched torch L-BFGS-B on all of ``xs``: its row and its final objectives (the
    loop's ``n_loop`` examples are the first)."""
    n_batch = xs.shape[0]
    attack = make_attack("latent-lbfgsb", divergence="kl", c=c, solver="torch", batch=n_batch, **settings)
    with timed() as clock:
        result = attack(bench.model, xs, xt)
    ours = result.objective[0].double().cpu().numpy()
    row = Measurement(
        "d", f"latent-lbfgsb, torch solver, {n_batch} examples in one batch",
        clock.wall / n_batch, clock.cpu / n_batch, n_batch,
        extra={"median_objective_first_n_loop": float(np.median(ours[:n_loop])),
               "median_iterations": float(np.median(result.iterations[0].cpu().numpy())),
               "torch_threads": torch.get_num_threads()})
    return row, ours


def measure_loop_on_host(bench: Bench, xs: torch.Tensor, xt: torch.Tensor, c: float, settings: dict[str, Any],
                         threads: int) -> Measurement:
    """On a GPU run the loop may be faster on the host CPU than launching tiny GPU kernels: time it there too."""
    with torch_threads(threads):
        cpu_threads = torch.get_num_threads()
        values, iters, clock, _ = scipy_loop(copy.deepcopy(bench.model).cpu(), xs.cpu(), xt.cpu(), c, **settings)
    print(f"(d) SciPy loop on the host CPU: {clock.wall / len(values):.2f} s wall per example", flush=True)
    return loop_measurement("d-loop-cpu", f"the same loop on the host CPU ({thread_label(cpu_threads)})",
                            values, iters, clock, cpu_threads)


def measure_d(bench: Bench, sizes: Sizes, c: float, loop_threads_arg: int) -> DResult:
    """(d) batched torch L-BFGS-B vs a per-example SciPy loop, same C and settings."""
    on_cpu = bench.device.type == "cpu"
    settings: dict[str, Any] = dict(memory=25, factr=10.0, pgtol=1e-5, max_iter=sizes.lbfgsb_iter)
    xs, xt, per_pair = d_examples(bench, sizes)
    n_batch = xs.shape[0]
    n_loop = min(sizes.n_loop, n_batch)
    with torch_threads(loop_threads_arg if on_cpu else None):
        loop_threads = torch.get_num_threads()
        values, iters, loop_clock, stats = scipy_loop(bench.model, xs[:n_loop], xt[:n_loop], c, **settings)
    print(f"(d) SciPy loop: {n_loop} examples, {loop_clock.cpu / n_loop:.2f} s CPU, "
          f"{loop_clock.wall / n_loop:.2f} s wall per example ({loop_threads} torch threads)", flush=True)
    torch_row, ours = measure_lbfgsb_batched(bench, xs, xt, c, settings, n_loop)
    rel = (ours[:n_loop] - values) / np.abs(values)
    # the floor of (d): however cheap the batched solver, it evaluates the objective as often as
    # the loop does (same algorithm), and one batched evaluation costs at least this much
    objective_batched = batched_objective_cost(bench.model, xs, xt, c)
    evaluations = float(np.mean(stats.evaluations))
    total_evaluations = max(1, sum(stats.evaluations))
    loop_row = loop_measurement(
        "d-loop", "plain scipy.optimize.minimize(L-BFGS-B) loop, one example at a time"
                  + (f" ({thread_label(loop_threads)})" if on_cpu else ""),
        values, iters, loop_clock, loop_threads,
        mean_evaluations=evaluations,
        objective_cpu_per_evaluation_batch_of_one=stats.objective_cpu / total_evaluations,
        objective_wall_per_evaluation_batch_of_one=stats.objective_wall / total_evaluations,
        objective_share_of_loop_cpu=stats.objective_cpu / max(loop_clock.cpu, 1e-12),
        objective_cpu_per_evaluation_in_batch=objective_batched.cpu,
        objective_wall_per_evaluation_in_batch=objective_batched.wall,
        batch_for_objective=n_batch)
    print(f"(d) torch batched: {torch_row.seconds_per_example_cpu:.3f} s CPU, "
          f"{torch_row.seconds_per_example_wall:.4f} s wall per example; "
          f"median relative objective difference {np.median(rel):+.2e}", flush=True)
    loops = [loop_row]
    if not on_cpu:
        loops.append(measure_loop_on_host(bench, xs[:n_loop], xt[:n_loop], c, settings, loop_threads_arg))
    return DResult(settings, per_pair, n_loop, n_batch, loop_threads, torch_row, loops, rel,
                   objective_batched, evaluations)


# ----------------------------------------------------------------------------- ratios, notes, report
def per_example(row: Measurement, clock: str) -> float:
    """Seconds per example of ``row`` by ``clock`` ("cpu" or "wall")."""
    return row.seconds_per_example_cpu if clock == "cpu" else row.seconds_per_example_wall


def speedup(slow: Measurement, fast: Measurement | None, clock: str) -> float | None:
    """How many times less ``fast`` spends per example than ``slow`` (None without ``fast``)."""
    return None if fast is None else per_example(slow, clock) / per_example(fast, clock)


def compute_ratios(a: Measurement, b: Measurement, c: CResult, d: DResult) -> dict[str, Any]:
    """Every ratio the README quotes: (c), `thesis-fast` and (b) against (a); the SciPy loop
    against the batched torch L-BFGS-B, and the bound of a solver that cost nothing."""
    fastest_loop = min(d.loops, key=lambda r: r.seconds_per_example_wall)
    return {
        "c_over_a_cpu": speedup(a, c.chosen, "cpu"),
        "c_over_a_wall": speedup(a, c.chosen, "wall"),
        "thesis_fast_over_a_cpu": speedup(a, c.recipe, "cpu"),
        "thesis_fast_over_a_wall": speedup(a, c.recipe, "wall"),
        "b_over_a_cpu": speedup(a, b, "cpu"),
        "b_over_a_wall": speedup(a, b, "wall"),
        "d_loop_over_torch_cpu": speedup(d.loop_row, d.torch_row, "cpu"),
        "d_loop_over_torch_wall": speedup(d.loop_row, d.torch_row, "wall"),
        "d_fastest_loop": fastest_loop.name,
        "d_fastest_loop_over_torch_wall": speedup(fastest_loop, d.torch_row, "wall"),
        # the largest (d) ratio any batched solver could reach here: the loop's CPU per example
        # over the batched objective's CPU for the loop's number of evaluations (solver cost 0)
        "d_bound_solver_free_cpu": d.loop_row.seconds_per_example_cpu / (d.objective_batched.cpu * d.evaluations),
        "d_bound_solver_free_wall": d.loop_row.seconds_per_example_wall / (d.objective_batched.wall * d.evaluations),
    }


def build_notes(device: torch.device, examples: int, loop_threads: int, machine: dict[str, Any],
                load_end: list[float] | None) -> list[str]:
    """The notes of the JSON: how each number was measured, and whether the machine was loaded."""
    on_cpu = device.type == "cpu"
    notes = [
        "(a) time per example: one batch of 64 of one pair timed for the stated steps and extrapolated to "
        "1000 steps; (a) AS target: the same loop over all pairs, batches of 64 filled across pairs.",
        "(c) candidates are robust-vae latent-adam configurations run unit by unit like `robust-vae attack`; "
        f"the chosen one is the fastest ({'CPU' if on_cpu else 'wall clock'}) with |AS target − AS target of (a)| ≤ 1 pp on these pairs. "
        f"With {examples} examples one example changes the overall AS target by about {100 / max(1, examples):.2f} "
        "pp, so at small sizes the 1 pp criterion is only indicative.",
        "(d) objectives: relative difference (ours − loop) / |loop| per example on the examples both solved; "
        "the median example must be ≤ 1e-3.",
        "(d) bound: ratios.d_bound_solver_free_cpu is the loop's CPU per example divided by the CPU of its "
        "number of objective evaluations done in one batch: the (d) ratio of a batched solver whose own "
        "arithmetic cost nothing. Where it is below 10, the 10× target cannot be reached on this machine "
        "by any batched L-BFGS-B with the same iterates.",
    ]
    if on_cpu:
        notes.append(f"(d-loop) runs with {loop_threads} torch thread(s) (--loop-threads) and "
                     f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')} for SciPy: a batch of one "
                     "gains no wall time from a second thread and spends about twice the CPU, and idle-spinning "
                     "threads inflate its time; 1 and 1 are the loop's fair (fastest) settings.")
    else:
        notes.append(f"On {device}: CPU seconds count every thread of the process (the host thread that launches "
                     "and waits for GPU work, and idle-spinning OpenMP/BLAS threads); the wall-clock ratios "
                     "are the meaningful ones.")
    # the load at the end is mostly this benchmark's own threads: judge other jobs by the load at
    # the start and by the robust-vae / pytest processes seen then
    if bool(machine.get("other_busy_processes")) or machine.get("load_average_at_start", [0])[0] > 0.75:
        notes.append(f"The machine was loaded by other jobs (load average {machine.get('load_average_at_start')} at "
                     f"start, {load_end} at end on {os.cpu_count() or 1} cores; the jobs seen at the start are in "
                     "machine.other_busy_processes): times are inflated and noisy.")
    return notes


def measure(args: argparse.Namespace, sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """Every measurement, (a) to (d), and the report the JSON holds."""
    started = time.perf_counter()
    machine = machine_info()
    bench = load_bench(device, sizes.per_pair, args.seed)
    examples = len(bench.src)
    print(f"{MODEL} seed {MODEL_SEED}, {examples} kept pairs ({sizes.per_pair} sampled per ordered class pair); "
          f"device {device}; threads {torch.get_num_threads()}; load {machine.get('load_average_at_start')}",
          flush=True)
    a, b = measure_a(bench, sizes), measure_b(bench, sizes)
    c = measure_c(bench, sizes, a.as_target or 0.0)
    d = measure_d(bench, sizes, args.c, args.loop_threads)
    rows = [a, b, *c.rows(), d.torch_row, *d.loops]
    load_end = load_average()
    return {
        "benchmark": "attack_speed", "device": str(device), "quick": sizes.quick, "smoke": sizes.smoke,
        "model": f"{MODEL} (seed {MODEL_SEED})", "classifier": "shipped",
        "pairs": {"per_pair_sampled": sizes.per_pair, "examples": examples, "seed": args.seed},
        "settings": {"thesis": asdict(sizes.thesis), "a_timing_steps": sizes.timing_steps,
                     "lbfgsb": {"divergence": "kl", "c": args.c, **d.settings, "loop_examples": d.n_loop,
                                "batched_examples": d.n_batch, "per_pair_sampled": d.per_pair,
                                "examples": "the loop's examples are the first of the batched run's"}},
        "measurements": [r.to_json() for r in rows],
        "c_candidates": [r.to_json() for r in c.candidates],
        "c_chosen": c.chosen.what if c.chosen is not None else None,
        "d_objectives": {"relative_difference_median": float(np.median(d.relative_difference)),
                         "relative_difference_per_example": [float(v) for v in d.relative_difference],
                         "ours_le_loop_on_median_within_1e-3": d.median_ok},
        "ratios": compute_ratios(a, b, c, d),
        "targets": dict(TARGETS),
        "machine": machine | {"load_average_at_end": load_end},
        "total_wall_seconds": round(time.perf_counter() - started, 1),
        "total_cpu_seconds": round(time.process_time(), 1),
        "notes": build_notes(device, examples, d.loop_threads, machine, load_end),
    }


# ----------------------------------------------------------------------------- rendering
def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}×"


def render_table(report: dict[str, Any]) -> str:
    """The markdown table the README shows, and the ratios under it."""
    header = ["", "configuration", "s/example (CPU)", "s/example (wall)", "AS target", "AS ignore-target"]
    rows = [[r["name"], r["what"], f"{r['seconds_per_example_cpu']:.4g}", f"{r['seconds_per_example_wall']:.4g}",
             _percent(r.get("as_target")), _percent(r.get("as_ignore_target"))] for r in report["measurements"]]
    ratios, objectives, targets = report["ratios"], report["d_objectives"], report["targets"]
    lines = [markdown_table(header, rows, "llrrrr"), ""]
    lines.append(f"(c) vs (a): {_times(ratios['c_over_a_cpu'])} CPU, {_times(ratios['c_over_a_wall'])} wall "
                 f"(target {targets['c_over_a']}×); "
                 f"`thesis-fast` vs (a): {_times(ratios.get('thesis_fast_over_a_cpu'))} CPU, "
                 f"{_times(ratios.get('thesis_fast_over_a_wall'))} wall; (b) vs (a): {_times(ratios['b_over_a_cpu'])} CPU")
    lines.append(f"(d) SciPy loop vs batched torch L-BFGS-B: {_times(ratios['d_loop_over_torch_cpu'])} CPU, "
                 f"{_times(ratios['d_loop_over_torch_wall'])} wall (target {targets['d_loop_over_torch']}×); "
                 f"median relative objective difference {objectives['relative_difference_median']:+.2e} "
                 f"({'ok' if objectives['ours_le_loop_on_median_within_1e-3'] else 'NOT ok'}: ≤ 1e-3); "
                 f"bound with a free solver (the objective alone, batched): "
                 f"{_times(ratios.get('d_bound_solver_free_cpu'))} CPU")
    if ratios.get("d_fastest_loop", "d-loop") != "d-loop":
        lines.append(f"(d) against the faster loop ({ratios['d_fastest_loop']}): "
                     f"{_times(ratios['d_fastest_loop_over_torch_wall'])} wall")
    return "\n".join(lines)


def render_candidates(report: dict[str, Any]) -> str:
    """The (c) candidates against (a): time, speed-up and AS target difference, as a markdown table."""
    a_row = report["measurements"][0]
    on_cpu = report.get("device", "cpu") == "cpu"
    key = "seconds_per_example_cpu" if on_cpu else "seconds_per_example_wall"
    header = [f"configuration ({a_row['examples_scored']} pairs)", f"{'CPU' if on_cpu else 'wall'} ms/example",
              "× vs (a)", "AS target", "Δ vs (a)", "AS ignore-target"]
    rows = [[r["what"], f"{1e3 * r[key]:.3g}", f"{a_row[key] / r[key]:.1f}×", _percent(r["as_target"]),
             f"{100 * (r['as_target'] - a_row['as_target']):+.2f} pp", _percent(r["as_ignore_target"])]
            for r in [dict(a_row, what=f"a: {a_row['what']}"), *report["c_candidates"]]]
    return markdown_table(header, rows, "lrrrrr")


def render(report: dict[str, Any]) -> str:
    """Both README tables of a report."""
    return render_table(report) + "\n\n" + render_candidates(report)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.render is not None:
        print(render(json.loads(args.render.read_text())))
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    sizes = resolve_sizes(args)
    out: Path = args.out or default_out(args, device)
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    report = measure(args, sizes, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(render(report))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
