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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# NumPy/SciPy's OpenBLAS serves only the per-example SciPy loop (d-loop). Its worker threads
# busy-wait between SciPy's many small BLAS calls and take a core from torch: measured here, the
# loop ran 1.2× slower in wall time and spent 2× the CPU with them. One thread is the loop's fair
# setting; it must be set before NumPy loads (export OPENBLAS_NUM_THREADS to override).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402
import torch  # noqa: E402

from robust_vae.core.devices import model_device

RESULTS = Path(__file__).resolve().parent / "results"
THESIS = dict(epsilon=0.1, lam=1.0, lr=1e-3, steps=1000, noise_std=0.2)


@dataclass
class Timing:
    wall: float = 0.0
    cpu: float = 0.0


def _sync() -> None:
    """Wait for queued GPU work, so that a clock read after it counts that work."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
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
        return {k: v for k, v in self.__dict__.items()}


# ----------------------------------------------------------------------------- (a)
def thesis_loop(model: torch.nn.Module, classifier: torch.nn.Module, images: torch.Tensor,
                batches: list[tuple[np.ndarray, np.ndarray]], steps: int, seed: int) -> np.ndarray:
    """The thesis's attack loop, batch by batch (``batches``: (source, target) test indices).

    Returns the classifier's label of every adversarial's reconstruction, in batch order.
    """
    eps, lam, lr, noise = THESIS["epsilon"], THESIS["lam"], THESIS["lr"], THESIS["noise_std"]
    torch.manual_seed(seed)
    device = model_device(model)
    predictions = []
    for src, tgt in batches:
        xs, xt = images[src].to(device), images[tgt].to(device)
        with torch.no_grad():
            phi_t = model.attack_code(xt)
        x = (xs + noise * torch.randn_like(xs)).clamp(0.0, 1.0).requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            optimizer.zero_grad()
            loss = lam * (x - xs).flatten(1).norm(dim=1).sum() + (model.attack_code(x) - phi_t).norm(dim=1).sum()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, xs + eps), xs - eps).clamp(0.0, 1.0))
        with torch.no_grad():
            predictions.append(classifier(model.reconstruct(x.detach())).argmax(-1).cpu().numpy())
    return np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)


def batches_of(src: np.ndarray, tgt: np.ndarray, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(src[i:i + size], tgt[i:i + size]) for i in range(0, len(src), size)]


# ----------------------------------------------------------------------------- (b), (c)
def run_units(plans: list, model: torch.nn.Module, classifier: torch.nn.Module, dataset: Any,
              attack: Any, batch_size: int, seed: int,
              device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray, Timing]:
    """What ``robust-vae attack`` does per unit (without writing): (predictions, s, t, time)."""
    from robust_vae.evaluation.success_matrix import _attack_unit, group_units

    preds, sources, targets = [], [], []
    with timed() as clock:
        for unit in group_units(plans, batch_size):
            arrays = _attack_unit([plans[i] for i in unit], model, classifier, dataset, attack, seed,
                                  batch_size, device)
            preds.append(arrays["prediction"])
            sources.append(arrays["source"])
            targets.append(arrays["target"])
    return np.concatenate(preds), np.concatenate(sources), np.concatenate(targets), clock


def success(pred: np.ndarray, s: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Overall AS target and AS ignore-target: unweighted means over the cells (protocol §4)."""
    cells_t, cells_i = [], []
    for a in range(10):
        for b in range(10):
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


def scipy_loop(model: torch.nn.Module, xs: torch.Tensor, xt: torch.Tensor, c: float, *, memory: int,
               factr: float, pgtol: float, max_iter: int) -> tuple[np.ndarray, np.ndarray, Timing, LoopStats]:
    """One plain ``scipy.optimize.minimize(method="L-BFGS-B")`` per example, batch of one.

    The objective runs on ``xs``'s device; SciPy gets float64 NumPy arrays."""
    from robust_vae.attacks.objectives import posterior_kl, squared_distortion

    values, iterations, stats = [], [], LoopStats()
    device = xs.device
    with timed() as clock:
        for i in range(xs.shape[0]):
            source = xs[i:i + 1]
            with torch.no_grad():
                target = model.encode(xt[i:i + 1])

            def fun(z: np.ndarray, source: torch.Tensor = source,
                    target: Any = target) -> tuple[float, np.ndarray]:
                started, started_wall = time.process_time(), time.perf_counter()
                x = torch.from_numpy(z).to(device, torch.float32).view_as(source).requires_grad_(True)
                loss = posterior_kl(model, x, target) + c * squared_distortion(x, source)
                (grad,) = torch.autograd.grad(loss.sum(), x)
                out = float(loss.detach()[0]), grad.double().cpu().numpy().ravel()
                stats.objective_cpu += time.process_time() - started
                stats.objective_wall += time.perf_counter() - started_wall
                return out

            result = scipy.optimize.minimize(
                fun, source.double().cpu().numpy().ravel(), jac=True, method="L-BFGS-B",
                bounds=scipy.optimize.Bounds(0.0, 1.0),
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


def batched_objective_cost(model: torch.nn.Module, xs: torch.Tensor, xt: torch.Tensor, c: float,
                           repeats: int = 5) -> Timing:
    """CPU and wall seconds of one evaluation of the (d) objective and its gradient, per
    example, when all of ``xs`` (N, 1, 32, 32) are evaluated in one batch: the least a batched
    solver can spend per evaluation however cheap its own arithmetic is."""
    from robust_vae.attacks.objectives import posterior_kl, squared_distortion

    with torch.no_grad():
        target = model.encode(xt)
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
    from robust_vae.evaluation.success_matrix import library_versions

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


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attack_speed", description=__doc__.split("\n\n")[0])
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
    args = parser.parse_args(argv)
    if args.render is not None:
        report = json.loads(args.render.read_text())
        print(render_table(report) + "\n\n" + render_candidates(report))
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    quick = args.quick or args.smoke
    if args.out is None:
        size = "_smoke" if args.smoke else "_quick" if args.quick else ""
        args.out = RESULTS / f"attack_speed{size}{'' if device.type == 'cpu' else '_' + device.type}.json"
    if args.smoke:
        THESIS["steps"] = 10
        args.timing_steps = args.timing_steps or 5
        args.lbfgsb_loop, args.lbfgsb_batch, args.lbfgsb_iter = 2, 4, 3
    per_pair = args.per_pair or (1 if quick else 10)
    timing_steps = args.timing_steps or (100 if quick else 1000)
    n_loop = args.lbfgsb_loop or (8 if quick else 32)
    n_batch = args.lbfgsb_batch or (256 if quick else 512)
    lbfgsb_iter = args.lbfgsb_iter or (100 if quick else 500)
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)

    from robust_vae.attacks import load_attack, make_attack
    from robust_vae.data.mnist import load_dataset
    from robust_vae.evaluation.success_matrix import clean_predictions, plan_pairs
    from robust_vae.zoo import load_classifier, load_model

    started = time.perf_counter()
    machine = machine_info()
    dataset = load_dataset("mnist", "test")
    model = load_model("jointvae", "mnist", seed=0).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    classifier = load_classifier("mnist").to(device)
    for p in classifier.parameters():
        p.requires_grad_(False)
    clean = clean_predictions(model, classifier, dataset.images)
    plans = plan_pairs(dataset.labels, clean, dataset.num_classes, per_pair, args.seed)
    src = np.concatenate([p.source_index[p.kept] for p in plans])
    tgt = np.concatenate([p.target_index[p.kept] for p in plans])
    s_cls = np.concatenate([np.full(p.n, p.source) for p in plans])
    t_cls = np.concatenate([np.full(p.n, p.target) for p in plans])
    print(f"jointvae seed 0, {len(src)} kept pairs ({per_pair} sampled per ordered class pair); device {device}; "
          f"threads {torch.get_num_threads()}; load {machine.get('load_average_at_start')}", flush=True)
    rows: list[Measurement] = []

    # (a) the thesis loop: time on full batches of 64 of one pair, AS on all pairs
    full_plans = plan_pairs(dataset.labels, clean, dataset.num_classes, None, args.seed)
    timing_plan = next(p for p in full_plans if p.n >= 64)
    t_src, t_tgt = timing_plan.source_index[timing_plan.kept][:64], timing_plan.target_index[timing_plan.kept][:64]
    thesis_loop(model, classifier, dataset.images, [(t_src, t_tgt)], 3, args.seed)   # warm-up, untimed
    with timed() as clock:
        thesis_loop(model, classifier, dataset.images, [(t_src, t_tgt)], timing_steps, args.seed)
    scale = THESIS["steps"] / timing_steps / len(t_src)
    print(f"(a) timing: 64 examples × {timing_steps} steps: {clock.wall:.1f} s wall, {clock.cpu:.1f} s CPU", flush=True)
    with timed() as run_clock:
        pred_a = thesis_loop(model, classifier, dataset.images, batches_of(src, tgt, 64), THESIS["steps"], args.seed)
    as_a, asi_a = success(pred_a, s_cls, t_cls)
    rows.append(Measurement(
        "a", "thesis loop (per pair, batches of 64, torch.optim.Adam, 1000 steps)",
        clock.wall * scale, clock.cpu * scale, len(t_src), as_a, asi_a, len(src),
        {"timed": f"pair {timing_plan.source}->{timing_plan.target}, one batch of 64, {timing_steps} steps, "
                  "extrapolated to 1000 steps",
         "as_run_seconds_per_example_wall": run_clock.wall / len(src),
         "as_run_seconds_per_example_cpu": run_clock.cpu / len(src)}))
    print(f"(a) AS target {100 * as_a:.2f}% on {len(src)} examples ({run_clock.cpu:.1f} s CPU)", flush=True)

    # (b) robust-vae thesis recipe, as `robust-vae attack` runs it (batch 512)
    thesis = load_attack("thesis", steps=THESIS["steps"])
    pred, s_b, t_b, clock = run_units(plans, model, classifier, dataset, thesis, 512, args.seed, device)
    as_b, asi_b = success(pred, s_b, t_b)
    rows.append(Measurement("b", "robust-vae `thesis` recipe (units of 512, per-example seeds)",
                            clock.wall / len(pred), clock.cpu / len(pred), len(pred), as_b, asi_b, len(pred)))
    print(f"(b) AS target {100 * as_b:.2f}%: {clock.cpu / len(pred) * 1e3:.1f} ms CPU per example", flush=True)

    # (c) faster configurations of robust-vae's latent-adam
    candidates = [
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
    if args.smoke:
        candidates = [(label, recipe, {**overrides, "steps": 10}, size)
                      for label, recipe, overrides, size in candidates[:2]]
    results_c = []
    for label, recipe, overrides, batch_size in candidates:
        attack = load_attack(recipe, **overrides)
        pred, s_c, t_c, clock = run_units(plans, model, classifier, dataset, attack, batch_size, args.seed,
                                          device)
        as_c, asi_c = success(pred, s_c, t_c)
        entry = Measurement("c", label, clock.wall / len(pred), clock.cpu / len(pred), len(pred), as_c, asi_c,
                            len(pred), {"recipe": recipe, "overrides": overrides, "batch_size": batch_size,
                                        "within_1pp_of_a": abs(as_c - as_a) <= 0.01})
        results_c.append(entry)
        print(f"(c) {label}: AS target {100 * as_c:.2f}% ({100 * (as_c - as_a):+.2f} pp), "
              f"{clock.cpu / len(pred) * 1e3:.2f} ms CPU per example", flush=True)
    eligible = [r for r in results_c if r.extra["within_1pp_of_a"]]
    # on CPU the scarce resource is CPU time; on a GPU it is the wall clock
    cost = (lambda r: r.seconds_per_example_cpu) if device.type == "cpu" else (lambda r: r.seconds_per_example_wall)
    chosen = min(eligible, key=cost) if eligible else None
    if chosen is not None:
        rows.append(chosen)
    recipe_row = next((r for r in results_c if r.extra["recipe"] == "thesis-fast"), None)
    if recipe_row is not None and recipe_row is not chosen:
        rows.append(Measurement("c-recipe", recipe_row.what, recipe_row.seconds_per_example_wall,
                                recipe_row.seconds_per_example_cpu, recipe_row.examples_timed,
                                recipe_row.as_target, recipe_row.as_ignore_target, recipe_row.examples_scored,
                                recipe_row.extra))

    # (d) batched torch L-BFGS-B vs a per-example SciPy loop, same C and settings; the examples:
    # the kept pairs of the same shuffled cells, more per cell if the batch needs them
    settings = dict(memory=25, factr=10.0, pgtol=1e-5, max_iter=lbfgsb_iter)
    per_pair_d = max(per_pair, math.ceil(n_batch / (0.8 * len(plans))))
    plans_d = plan_pairs(dataset.labels, clean, dataset.num_classes, per_pair_d, args.seed)
    src_d = np.concatenate([p.source_index[p.kept] for p in plans_d])[:n_batch]
    tgt_d = np.concatenate([p.target_index[p.kept] for p in plans_d])[:n_batch]
    xs_d, xt_d = dataset.images[src_d].to(device), dataset.images[tgt_d].to(device)
    n_batch = xs_d.shape[0]
    n_loop = min(n_loop, n_batch)
    with torch_threads(args.loop_threads if device.type == "cpu" else None):
        loop_threads = torch.get_num_threads()
        loop_values, loop_iters, loop_clock, loop_stats = scipy_loop(model, xs_d[:n_loop], xt_d[:n_loop], args.c,
                                                                     **settings)
    print(f"(d) SciPy loop: {n_loop} examples, {loop_clock.cpu / n_loop:.2f} s CPU, "
          f"{loop_clock.wall / n_loop:.2f} s wall per example ({loop_threads} torch threads)", flush=True)
    attack = make_attack("latent-lbfgsb", divergence="kl", c=args.c, solver="torch", batch=n_batch, **settings)
    with timed() as clock:
        result = attack(model, xs_d, xt_d)
    ours = result.objective[0].double().cpu().numpy()
    rel = (ours[:n_loop] - loop_values) / np.abs(loop_values)
    median_ok = bool(np.median(rel) <= 1e-3)
    d_torch = Measurement(
        "d", f"latent-lbfgsb, torch solver, {n_batch} examples in one batch",
        clock.wall / n_batch, clock.cpu / n_batch, n_batch,
        extra={"median_objective_first_n_loop": float(np.median(ours[:n_loop])),
               "median_iterations": float(np.median(result.iterations[0].cpu().numpy())),
               "torch_threads": torch.get_num_threads()})
    # the floor of (d): however cheap the batched solver, it evaluates the objective as often as
    # the loop does (same algorithm), and one batched evaluation costs at least this much
    objective_batched = batched_objective_cost(model, xs_d, xt_d, args.c)
    evaluations = float(np.mean(loop_stats.evaluations))
    d_loop = loop_measurement(
        "d-loop", "plain scipy.optimize.minimize(L-BFGS-B) loop, one example at a time"
                  + (f" ({thread_label(loop_threads)})" if device.type == "cpu" else ""),
        loop_values, loop_iters, loop_clock, loop_threads,
        mean_evaluations=evaluations,
        objective_cpu_per_evaluation_batch_of_one=loop_stats.objective_cpu / max(1, sum(loop_stats.evaluations)),
        objective_wall_per_evaluation_batch_of_one=loop_stats.objective_wall / max(1, sum(loop_stats.evaluations)),
        objective_share_of_loop_cpu=loop_stats.objective_cpu / max(loop_clock.cpu, 1e-12),
        objective_cpu_per_evaluation_in_batch=objective_batched.cpu,
        objective_wall_per_evaluation_in_batch=objective_batched.wall,
        batch_for_objective=n_batch)
    rows += [d_torch, d_loop]
    print(f"(d) torch batched: {clock.cpu / n_batch:.3f} s CPU, {clock.wall / n_batch:.4f} s wall per example; "
          f"median relative objective difference {np.median(rel):+.2e}", flush=True)
    loops = [d_loop]
    if device.type != "cpu":
        # the loop may be faster on the host CPU than launching tiny GPU kernels: time it there too
        with torch_threads(args.loop_threads):
            cpu_threads = torch.get_num_threads()
            cpu_values, cpu_iters, cpu_clock, _ = scipy_loop(copy.deepcopy(model).cpu(), xs_d[:n_loop].cpu(),
                                                             xt_d[:n_loop].cpu(), args.c, **settings)
        loops.append(loop_measurement("d-loop-cpu", f"the same loop on the host CPU ({thread_label(cpu_threads)})",
                                      cpu_values, cpu_iters, cpu_clock, cpu_threads))
        rows.append(loops[-1])
        print(f"(d) SciPy loop on the host CPU: {cpu_clock.wall / n_loop:.2f} s wall per example", flush=True)
    fastest_loop = min(loops, key=lambda r: r.seconds_per_example_wall)

    a_row = rows[0]
    ratios = {
        "c_over_a_cpu": a_row.seconds_per_example_cpu / chosen.seconds_per_example_cpu if chosen else None,
        "c_over_a_wall": a_row.seconds_per_example_wall / chosen.seconds_per_example_wall if chosen else None,
        "thesis_fast_over_a_cpu": (a_row.seconds_per_example_cpu / recipe_row.seconds_per_example_cpu
                                   if recipe_row else None),
        "thesis_fast_over_a_wall": (a_row.seconds_per_example_wall / recipe_row.seconds_per_example_wall
                                    if recipe_row else None),
        "b_over_a_cpu": a_row.seconds_per_example_cpu / rows[1].seconds_per_example_cpu,
        "b_over_a_wall": a_row.seconds_per_example_wall / rows[1].seconds_per_example_wall,
        "d_loop_over_torch_cpu": d_loop.seconds_per_example_cpu / d_torch.seconds_per_example_cpu,
        "d_loop_over_torch_wall": d_loop.seconds_per_example_wall / d_torch.seconds_per_example_wall,
        "d_fastest_loop": fastest_loop.name,
        "d_fastest_loop_over_torch_wall": fastest_loop.seconds_per_example_wall / d_torch.seconds_per_example_wall,
        # the largest (d) ratio any batched solver could reach here: the loop's CPU per example
        # over the batched objective's CPU for the loop's number of evaluations (solver cost 0)
        "d_bound_solver_free_cpu": d_loop.seconds_per_example_cpu / (objective_batched.cpu * evaluations),
        "d_bound_solver_free_wall": d_loop.seconds_per_example_wall / (objective_batched.wall * evaluations),
    }
    load_end = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    cores = os.cpu_count() or 1
    # the load at the end is mostly this benchmark's own threads: judge other jobs by the load at
    # the start and by the robust-vae / pytest processes seen then
    loaded = bool(machine.get("other_busy_processes")) or machine.get("load_average_at_start", [0])[0] > 0.75
    notes = [
        "(a) time per example: one batch of 64 of one pair timed for the stated steps and extrapolated to "
        "1000 steps; (a) AS target: the same loop over all pairs, batches of 64 filled across pairs.",
        "(c) candidates are robust-vae latent-adam configurations run unit by unit like `robust-vae attack`; "
        f"the chosen one is the fastest ({'CPU' if device.type == 'cpu' else 'wall clock'}) with |AS target − AS target of (a)| ≤ 1 pp on these pairs. "
        f"With {len(src)} examples one example changes the overall AS target by about {100 / max(1, len(src)):.2f} "
        "pp, so at small sizes the 1 pp criterion is only indicative.",
        "(d) objectives: relative difference (ours − loop) / |loop| per example on the examples both solved; "
        "the median example must be ≤ 1e-3.",
        "(d) bound: ratios.d_bound_solver_free_cpu is the loop's CPU per example divided by the CPU of its "
        "number of objective evaluations done in one batch: the (d) ratio of a batched solver whose own "
        "arithmetic cost nothing. Where it is below 10, the 10× target cannot be reached on this machine "
        "by any batched L-BFGS-B with the same iterates.",
    ]
    if device.type == "cpu":
        notes.append(f"(d-loop) runs with {loop_threads} torch thread(s) (--loop-threads) and "
                     f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')} for SciPy: a batch of one "
                     "gains no wall time from a second thread and spends about twice the CPU, and idle-spinning "
                     "threads inflate its time; 1 and 1 are the loop's fair (fastest) settings.")
    else:
        notes.append(f"On {device}: CPU seconds count every thread of the process (the host thread that launches "
                     "and waits for GPU work, and idle-spinning OpenMP/BLAS threads); the wall-clock ratios "
                     "are the meaningful ones.")
    if loaded:
        notes.append(f"The machine was loaded by other jobs (load average {machine.get('load_average_at_start')} at "
                     f"start, {load_end} at end on {cores} cores; the jobs seen at the start are in "
                     "machine.other_busy_processes): times are inflated and noisy.")
    report = {
        "benchmark": "attack_speed", "device": str(device), "quick": quick, "smoke": args.smoke, "model": "jointvae (seed 0)", "classifier": "shipped",
        "pairs": {"per_pair_sampled": per_pair, "examples": int(len(src)), "seed": args.seed},
        "settings": {"thesis": THESIS, "a_timing_steps": timing_steps,
                     "lbfgsb": {"divergence": "kl", "c": args.c, **settings, "loop_examples": n_loop,
                                "batched_examples": n_batch, "per_pair_sampled": per_pair_d,
                                "examples": "the loop's examples are the first of the batched run's"}},
        "measurements": [r.to_json() for r in rows],
        "c_candidates": [r.to_json() for r in results_c],
        "c_chosen": chosen.what if chosen else None,
        "d_objectives": {"relative_difference_median": float(np.median(rel)),
                         "relative_difference_per_example": [float(v) for v in rel],
                         "ours_le_loop_on_median_within_1e-3": median_ok},
        "ratios": ratios,
        "targets": {"c_over_a": 30, "d_loop_over_torch": 10},
        "machine": machine | {"load_average_at_end": load_end},
        "total_wall_seconds": round(time.perf_counter() - started, 1),
        "total_cpu_seconds": round(time.process_time(), 1),
        "notes": notes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(render_table(report) + "\n\n" + render_candidates(report))
    print(f"\nwrote {args.out}")
    return 0


def render_table(report: dict[str, Any]) -> str:
    """The markdown table the README shows."""
    lines = ["| | configuration | s/example (CPU) | s/example (wall) | AS target | AS ignore-target |",
             "|---|---|---:|---:|---:|---:|"]
    for r in report["measurements"]:
        as_t = f"{100 * r['as_target']:.2f}%" if r.get("as_target") is not None else "–"
        as_i = f"{100 * r['as_ignore_target']:.2f}%" if r.get("as_ignore_target") is not None else "–"
        lines.append(f"| {r['name']} | {r['what']} | {r['seconds_per_example_cpu']:.4g} | "
                     f"{r['seconds_per_example_wall']:.4g} | {as_t} | {as_i} |")
    ratios = report["ratios"]

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}×"

    lines.append("")
    lines.append(f"(c) vs (a): {fmt(ratios['c_over_a_cpu'])} CPU, {fmt(ratios['c_over_a_wall'])} wall (target 30×); "
                 f"`thesis-fast` vs (a): {fmt(ratios.get('thesis_fast_over_a_cpu'))} CPU, "
                 f"{fmt(ratios.get('thesis_fast_over_a_wall'))} wall; (b) vs (a): {fmt(ratios['b_over_a_cpu'])} CPU")
    lines.append(f"(d) SciPy loop vs batched torch L-BFGS-B: {fmt(ratios['d_loop_over_torch_cpu'])} CPU, "
                 f"{fmt(ratios['d_loop_over_torch_wall'])} wall (target 10×); median relative objective "
                 f"difference {report['d_objectives']['relative_difference_median']:+.2e} "
                 f"({'ok' if report['d_objectives']['ours_le_loop_on_median_within_1e-3'] else 'NOT ok'}: ≤ 1e-3); "
                 f"bound with a free solver (the objective alone, batched): {fmt(ratios.get('d_bound_solver_free_cpu'))} CPU")
    if ratios.get("d_fastest_loop", "d-loop") != "d-loop":
        lines.append(f"(d) against the faster loop ({ratios['d_fastest_loop']}): "
                     f"{fmt(ratios['d_fastest_loop_over_torch_wall'])} wall")
    return "\n".join(lines)


def render_candidates(report: dict[str, Any]) -> str:
    """The (c) candidates against (a): time, speed-up and AS target difference, as a markdown table."""
    a_row = report["measurements"][0]
    on_cpu = report.get("device", "cpu") == "cpu"
    unit = "CPU" if on_cpu else "wall"
    key = "seconds_per_example_cpu" if on_cpu else "seconds_per_example_wall"
    lines = [f"| configuration ({a_row['examples_scored']} pairs) | {unit} ms/example | × vs (a) | AS target | "
             "Δ vs (a) | AS ignore-target |", "|---|---:|---:|---:|---:|---:|"]
    rows = [dict(a_row, what=f"a: {a_row['what']}")] + report["c_candidates"]
    for r in rows:
        delta = 100 * (r["as_target"] - a_row["as_target"])
        lines.append(f"| {r['what']} | {1e3 * r[key]:.3g} | {a_row[key] / r[key]:.1f}× | "
                     f"{100 * r['as_target']:.2f}% | {delta:+.2f} pp | {100 * r['as_ignore_target']:.2f}% |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
