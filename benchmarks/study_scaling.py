"""Study scaling on a Dask cluster: the same grid of runs with 1 and with 2 local workers.

Run from the repository root::

    python -m benchmarks.study_scaling                  # 2 models x 2 seeds x thesis-fast, 30 pairs per cell
    python -m benchmarks.study_scaling --per-pair 10    # a quicker look

The grid (``vae`` and ``jointvae``, model seeds 0 and 1, ``thesis-fast``, sampling seed 0) is
written as a study file in a fresh folder for each worker count and made with
:func:`robust_vae.analysis.distributed.run_on_cluster` on a ``LocalCluster`` of N worker
processes with one thread each (what ``robust-vae study STUDY.toml --workers N`` does), then
reported with :func:`robust_vae.analysis.study.report`. Two times are recorded per worker
count: the makespan of the runs once the workers are up and have imported the package
(``runs_seconds``: what scales) and the whole command including the cluster's start, the
workers' imports and the study's report (``total_seconds``). The speed-up is
``runs_seconds(1) / runs_seconds(2)`` (goal: at least 1.8 on 2 cores).

The machine may be shared: for each measurement the JSON records the load average and the CPU
time that processes outside the benchmark used during it (read from ``/proc``), i.e. how many
of the cores other work took. It also checks that both worker counts wrote the same tables.
Writes ``benchmarks/results/study_scaling.json`` (or ``--out``) and prints the README table.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from robust_vae.analysis.distributed import ClusterOptions, connect, run_on_cluster
from robust_vae.analysis.study import read_study, report, study_status
from robust_vae.evaluation.success_matrix import library_versions
from robust_vae.report.tables import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("vae", "jointvae")
SEEDS = (0, 1)
RECIPE = "thesis-fast"
GOAL = 1.8


def study_text(per_pair: int) -> str:
    return f"""[study]
name = "study scaling benchmark"
dataset = "mnist"
per_pair = {per_pair}
seed = 0
main_recipe = "{RECIPE}"
bootstrap = 200
permutations = 1000

[[runs]]
models = {json.dumps(list(MODELS))}
seeds = {json.dumps(list(SEEDS))}
recipes = ["{RECIPE}"]
"""


# ----------------------------------------------------------------------------- the machine's other work
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds so far) of every process (Linux /proc; empty elsewhere)."""
    found: dict[int, tuple[int, float]] = {}
    if not Path("/proc/self/stat").exists():
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        found[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK)
    return found


def _cpu_totals() -> dict[str, float]:
    """Machine-wide CPU seconds so far by kind (``/proc/stat``: busy, idle, steal)."""
    try:
        values = [int(v) / _TICK for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return {}
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0.0] * 8)[:8]
    return {"busy": user + nice + system + irq + softirq, "idle": idle + iowait, "steal": steal}


def _command(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return " ".join(w.decode(errors="replace") for w in words if w)[:160]


def _descendants(table: dict[int, tuple[int, float]], root: int) -> set[int]:
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, (parent, _) in table.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return tree


class OtherWork:
    """CPU used by processes outside this benchmark (and its workers) between start and stop."""

    def __init__(self) -> None:
        self.before = _processes()
        self.totals = _cpu_totals()
        self.started = time.perf_counter()
        self.load_start = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None

    def stop(self) -> dict[str, Any]:
        after = _processes()
        totals = _cpu_totals()
        wall = time.perf_counter() - self.started
        ours = _descendants(after, os.getpid()) | _descendants(self.before, os.getpid())
        used = {pid: cpu - self.before.get(pid, (0, 0.0))[1] for pid, (_, cpu) in after.items() if pid not in ours}
        top = sorted(((cpu, pid) for pid, cpu in used.items() if cpu > 0.05 * wall), reverse=True)[:6]
        total = sum(max(0.0, cpu) for cpu in used.values())
        return {
            "load_average_at_start": self.load_start,
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "other_processes_cpu_seconds": round(total, 2),
            "other_processes_cores": round(total / wall, 2) if wall > 0 else None,
            "other_processes": [{"cores": round(cpu / wall, 2), "command": _command(pid)} for cpu, pid in top],
            # the whole machine (every process, including ones that started and ended meanwhile)
            "machine_cores": {kind: round((totals[kind] - self.totals.get(kind, 0.0)) / wall, 2)
                              for kind in totals} if totals and wall > 0 else {},
        }


# ----------------------------------------------------------------------------- one measurement
def _warm_up() -> None:
    import robust_vae.analysis.distributed  # noqa: F401  (torch, the attacks, the report code)
    import robust_vae.evaluation.runner  # noqa: F401


def measure(workers: int, base: Path, per_pair: int) -> dict[str, Any]:
    """The grid made with ``workers`` local workers (one thread each) in ``base``."""
    (base / "study").mkdir(parents=True)
    path = base / "study" / "study.toml"
    path.write_text(study_text(per_pair))
    study = read_study(path)
    study.command = "python -m benchmarks.study_scaling"  # results.md names it: the same for both counts
    options = ClusterOptions(workers=workers, threads=1)
    started = time.perf_counter()
    other = OtherWork()
    with connect(options) as client:
        client.wait_for_workers(workers, timeout=300)
        client.run(_warm_up)  # every worker imports torch and the package before the clock starts
        up = time.perf_counter()
        made = run_on_cluster(study, study_status(study), options, client=client, progress=False,
                              log=lambda message: None)
        runs_seconds = time.perf_counter() - up
    statuses = study_status(study)
    report(study, statuses, log=lambda message: None)
    total = time.perf_counter() - started
    runs = []
    for spec in study.runs:
        meta = json.loads((spec.folder / "run.json").read_text())
        runs.append({"model": spec.model, "seed": spec.seed, "examples_attacked": meta["examples_attacked"],
                     "wall_seconds": meta["wall_seconds_this_call"], "attack_seconds": meta["attack_seconds"],
                     "cpu_seconds": meta["cpu_seconds_this_call"], "threads": meta["threads"]})
    return {"workers": workers, "threads_per_worker": 1, "runs_made": len(made),
            "cluster_start_seconds": round(up - started, 2), "runs_seconds": round(runs_seconds, 2),
            "total_seconds": round(total, 2), "runs": runs, "machine_during": other.stop(),
            "study": str(study.out_dir)}


def same_tables(a: Path, b: Path) -> bool:
    """Whether the two study folders hold the same tables (the study's and each run's CSVs and .tex)."""
    names = [p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.suffix in (".csv", ".tex", ".md")
             and "progress" not in p.parts]
    return bool(names) and all((b / n).is_file() and filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def table(results: dict[str, Any]) -> str:
    rows = []
    for m in results["measurements"]:
        during = m["machine_during"]
        cpu = sum(r["cpu_seconds"] for r in m["runs"])
        rows.append([str(m["workers"]), f"{m['runs_seconds']:.1f}", f"{m['total_seconds']:.1f}", f"{cpu:.1f}",
                     f"{cpu / m['runs_seconds']:.2f}", f"{during['other_processes_cores']}",
                     f"{during['machine_cores'].get('idle', '?')}",
                     f"{during['load_average_at_end'][0]}" if during["load_average_at_end"] else "?"])
    lines = [markdown_table(["workers (1 thread each)", "runs makespan (s)", "with cluster start (s)",
                             "CPU of the runs (s)", "cores the runs got", "cores other processes took",
                             "cores idle", "load (1 min) at end"], rows, align="rrrrrrrr"),
             "",
             f"{len(MODELS)} models × {len(SEEDS)} seeds × `{RECIPE}`, {results['per_pair']} pairs per cell "
             f"({results['examples_attacked']} attacked examples in all), {results['cpu_count']} cores. "
             f"Speed-up of the runs with 2 workers: **{results['speedup']:.2f}×** (goal ≥ {GOAL}×); "
             f"tables identical for 1 and 2 workers: {results['same_tables']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-pair", type=int, default=30, help="pairs per cell of every run (default: 30)")
    parser.add_argument("--out", type=Path, default=RESULTS / "study_scaling.json")
    parser.add_argument("--keep", action="store_true", help="keep the study folders (printed)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="study-scaling-"))
    try:
        measurements = [measure(workers, work / f"workers-{workers}", args.per_pair) for workers in (1, 2)]
        one, two = measurements
        results = {
            "benchmark": "study_scaling", "grid": {"models": list(MODELS), "seeds": list(SEEDS), "recipe": RECIPE},
            "per_pair": args.per_pair, "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "examples_attacked": sum(r["examples_attacked"] for r in one["runs"]),
            "measurements": measurements,
            "speedup": round(one["runs_seconds"] / two["runs_seconds"], 3),
            "speedup_with_cluster_start": round(one["total_seconds"] / two["total_seconds"], 3),
            "goal": GOAL,
            "same_tables": same_tables(Path(one["study"]), Path(two["study"])),
            "versions": library_versions(),
        }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"study folders kept in {work}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
