"""Study runs on a Dask cluster (issue "Sweeps that outgrow one machine").

One tiny study (vae and jointvae, seed 0, ``thesis-fast`` with 30 steps, one pair per cell,
units of 10 examples: 8–9 units a run) is made once in this process (the reference), then
again by ``--workers 2`` (a LocalCluster) and by ``--scheduler`` on a real loopback topology
(``dask scheduler`` and two ``dask worker`` processes) with one worker killed by SIGKILL in
the middle of its run: every table is the reference's byte for byte (run.json: timings and
the --out path aside). On the same topology a run is made with the coordinator killed and
restarted: its tables are the reference run's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from robust_vae.analysis.distributed import WORKER_ENVIRON_VARIABLE
from robust_vae.cli.app import main

REPO_ROOT = Path(__file__).resolve().parent.parent
STUDY = """\
[study]
name = "tiny distributed study"
dataset = "mnist"
per_pair = 1
seed = 0
batch_size = 10
main_recipe = "thesis-fast"
bootstrap = 50
permutations = 100
[study.set]
steps = 30

[[runs]]
models = {models}
seeds = [0]
recipes = ["thesis-fast"]
"""
COMPARISON = """
[[comparisons]]
a = "jointvae"
b = "vae"
"""
# run.json keys that are measurements of the process that made the run, not results
TIMINGS = {"attack_seconds", "wall_seconds_this_call", "cpu_seconds_this_call", "peak_rss_mb",
           "cpu_seconds_process", "load_average_at_end", "command"}
UNIT = re.compile(r"unit-\d{5}\.npz")


def make_study(base: Path, models: tuple[str, ...] = ("vae", "jointvae")) -> Path:
    """``base/study/study.toml`` (the two models and their comparison, or a study of one model);
    the study is run from ``base`` as ``study/study.toml``."""
    (base / "study").mkdir(parents=True)
    text = STUDY.replace("{models}", json.dumps(list(models))) + (COMPARISON if len(models) == 2 else "")
    (base / "study" / "study.toml").write_text(text)
    return base / "study"


def run_folder(study: Path, model: str) -> Path:
    return study / "runs" / f"{model}-seed0" / "thesis-fast"


def assert_same_tables(reference: Path, other: Path) -> None:
    """Every file of ``reference`` equal in ``other``: bytes, except run.json (timings and the
    command's --out path aside) and samples.npz (its arrays); the units are not compared."""
    def files(root: Path) -> set[Path]:
        return {p.relative_to(root) for p in root.rglob("*")
                if p.is_file() and "progress" not in p.relative_to(root).parts and p.name != ".lock"}

    assert files(reference) == files(other)
    for name in sorted(files(reference)):
        a, b = reference / name, other / name
        if name.name == "run.json":
            want, got = json.loads(a.read_text()), json.loads(b.read_text())
            # the same folder: as the coordinator named it, or absolute where a worker runs elsewhere
            assert got["command"].split(" --out ")[1].endswith(want["command"].split(" --out ")[1]), name
            assert {k: v for k, v in want.items() if k not in TIMINGS} == \
                   {k: v for k, v in got.items() if k not in TIMINGS}, f"{name} differs"
        elif name.name == "samples.npz":
            with np.load(a) as x, np.load(b) as y:
                assert sorted(x.files) == sorted(y.files)
                for key in x.files:
                    np.testing.assert_array_equal(x[key], y[key], err_msg=f"{name} {key}")
        else:
            assert a.read_bytes() == b.read_bytes(), f"{name} differs from the local run's"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study made locally, one run after another, in this process (1 torch thread)."""
    base = tmp_path_factory.mktemp("local")
    study = make_study(base)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(base)
        assert main(["study", "study/study.toml"]) == 0
    return study


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def units(folder: Path) -> int:
    progress = folder / "progress"
    return sum(1 for p in progress.iterdir() if UNIT.fullmatch(p.name)) if progress.is_dir() else 0


def lock_holder(folder: Path) -> int | None:
    """The pid recorded in the run folder's lock (None while there is none)."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        return int(json.loads((folder / ".lock").read_text())["pid"])
    return None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# ----------------------------------------------------------------------------- a local cluster
def test_two_local_workers_write_the_local_tables(reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    study = make_study(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["study", "study/study.toml", "--workers", "2"]) == 0
    out = capsys.readouterr()
    assert "starting a local Dask cluster of 2 worker process(es), 1 thread each" in out.out
    assert re.search(r"Dask dashboard: .*http://127\.0\.0\.1:\d+/status", out.out)
    assert "study runs: 100%" in out.err and "2/2" in out.err   # the one bar over every task
    assert_same_tables(reference, study)


# ----------------------------------------------------------------------------- a real topology
@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``dask scheduler`` and two ``dask worker`` processes (one thread each) on 127.0.0.1, a
    free port chosen by the scheduler; every process is ended afterwards, also on failure."""
    from distributed import Client

    folder = tmp_path_factory.mktemp("loopback")
    scheduler_file = folder / "scheduler.json"
    started: list[subprocess.Popen[bytes]] = []

    # the worker environment the README recommends (Dask's default less MALLOC_TRIM_THRESHOLD_)
    env = dict(os.environ, **dict([WORKER_ENVIRON_VARIABLE]))

    def start(*argv: str, name: str) -> None:
        log = (folder / f"{name}.log").open("wb")
        started.append(subprocess.Popen([sys.executable, "-m", "distributed.cli." + argv[0], *argv[1:]], cwd=folder,
                                        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    try:
        start("dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
              "--scheduler-file", str(scheduler_file), name="scheduler")
        wait_until(scheduler_file.exists, 60, "the scheduler's address file", 0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for i in range(2):
            start("dask_worker", address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
                  "--no-dashboard", "--name", f"worker-{i}", name=f"worker-{i}")
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for process in reversed(started):   # the workers (and their nannies' children), then the scheduler
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(started):
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(20)


def test_loopback_cluster_with_a_worker_killed_mid_run(reference: Path, loopback: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The study through ``--scheduler`` on the loopback topology, with the worker process that
    writes jointvae's run killed by SIGKILL after its second unit: the task goes to a worker
    again, which takes over the run folder's lock (the dead pid is reported) and resumes from
    the saved units; every table equals the uninterrupted local run's byte for byte."""
    study = make_study(tmp_path)
    target = run_folder(study, "jointvae")
    monkeypatch.chdir(tmp_path)
    result: dict[str, Any] = {}
    coordinator = threading.Thread(
        target=lambda: result.setdefault("code", main(["study", "study/study.toml", "--scheduler", loopback])))
    coordinator.start()
    try:
        wait_until(lambda: units(target) >= 2 or not coordinator.is_alive(), 240, "jointvae's second unit")
        victim = lock_holder(target)
        assert victim is not None and victim != os.getpid() and not (target / "cells.csv").exists(), \
            "the run finished before its worker could be killed"
        os.kill(victim, signal.SIGKILL)
    finally:
        coordinator.join(300)
    assert result.get("code") == 0
    out = capsys.readouterr().out
    assert f"connecting to the Dask scheduler at {loopback}" in out
    assert "Dask dashboard: none" in out   # the scheduler runs with --no-dashboard
    assert re.search(rf"taking over the lock of \S*jointvae-seed0/thesis-fast from pid {victim} on ", out), out[-3000:]
    assert "left the cluster" in out
    finished = re.findall(r"finished (\w+) seed 0 / thesis-fast on \S+ \(pid (\d+)\)", out)
    assert sorted(model for model, _ in finished) == ["jointvae", "vae"]
    assert str(victim) not in {pid for _, pid in finished}
    assert_same_tables(reference, study)


def test_coordinator_killed_and_restarted_resumes(reference: Path, loopback: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """kill -9 of the coordinator (``robust-vae study --scheduler``) in the middle of the runs;
    the same command again resumes from what the workers saved (a worker still finishing a
    run of the dead coordinator holds its lock: the new task waits for it, then resumes)."""
    study = make_study(tmp_path, ("vae",))
    first = run_folder(study, "vae")
    coordinator = subprocess.Popen([sys.executable, "-m", "robust_vae", "study", "study/study.toml",
                                    "--scheduler", loopback], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: units(first) >= 2, 240, "the first run's second unit")
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait(30)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.wait(30)
    assert not (first / "cells.csv").exists(), "the run finished before the coordinator could be killed"
    monkeypatch.chdir(tmp_path)
    assert main(["study", "study/study.toml", "--scheduler", loopback]) == 0
    out = capsys.readouterr().out
    assert "resume vae seed 0 / thesis-fast" in out
    assert_same_tables(run_folder(reference, "vae"), first)


# ----------------------------------------------------------------------------- SLURM and options
def readme_jobqueue_config() -> dict[str, Any]:
    """The ``jobqueue.yaml`` example of the README (the block after ``<!-- jobqueue-example -->``)."""
    import yaml

    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"<!-- jobqueue-example -->\s*```yaml\n(.*?)```", text, re.S)
    assert block, "README.md lost its jobqueue.yaml example"
    config: dict[str, Any] = yaml.safe_load(block.group(1))
    return config


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_the_coordinator_keeps_one_run_per_worker_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs are submitted one per worker thread, in order, the next when one finishes: a long run
    on one worker does not hold back runs queued behind it while the other worker idles."""
    from types import SimpleNamespace

    from distributed import Client, LocalCluster

    import robust_vae.analysis.distributed as distributed

    seconds = [2.0, 0.2, 0.2, 0.2, 0.2]
    starts = tmp_path / "starts"  # the task is serialised even in-process: a list would be copied

    def pretend_run(task: Any) -> distributed.TaskResult:
        with starts.open("a") as file:
            file.write(f"{task.index}\n")
        time.sleep(seconds[task.index])
        return distributed.TaskResult(task.key, "here", os.getpid(), seconds[task.index])

    monkeypatch.setattr(distributed, "execute_run", pretend_run)
    tasks = [SimpleNamespace(index=i, key=f"pretend-run-{i}", label=f"run {i}", folder_absolute=str(tmp_path / str(i)))
             for i in range(len(seconds))]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        submitted: list[Any] = []
        peak = 0
        submit = client.submit

        def counted_submit(*args: Any, **kwargs: Any) -> Any:
            nonlocal peak
            future = submit(*args, **kwargs)
            submitted.append(future)
            peak = max(peak, sum(not f.done() for f in submitted))
            return future

        monkeypatch.setattr(client, "submit", counted_submit)
        made = distributed._gather(client, list(range(len(seconds))), tasks, log=lambda message: None,
                                   progress=False)  # type: ignore[arg-type]
    assert sorted(made) == list(range(len(seconds)))
    assert peak == 2, f"{peak} runs were on the cluster at once with 2 worker threads"
    order = [int(line) for line in starts.read_text().split()]
    # the first two start together on the two workers (either may log first); each next one
    # is submitted only when a run finishes, so from then on they start in order
    assert sorted(order[:2]) == [0, 1] and order[2:] == list(range(2, len(seconds)))
    assert made[-1] == 0, "the four short runs finish on one worker while the long one runs on the other"


def test_readme_slurm_configuration_builds_the_cluster() -> None:
    """The README's SLURM example makes a SLURMCluster whose job script starts one
    single-threaded worker per core with the study's environment (no SLURM needed)."""
    import dask

    from robust_vae.analysis.distributed import jobqueue_cluster

    with dask.config.set(flatten(readme_jobqueue_config())):
        cluster = jobqueue_cluster("slurm")
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    assert type(cluster).__name__ == "SLURMCluster"
    assert "#SBATCH --cpus-per-task=8" in script and "#SBATCH -t 08:00:00" in script
    assert "--nthreads 1" in script and "--nworkers 8" in script
    assert "export ROBUST_VAE_DATA=/shared/data" in script and "source /shared/robust-vae/.venv/bin/activate" in script


@pytest.mark.parametrize("argv", [
    ["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"],
    ["--jobqueue", "slurm"],
    ["--lock-wait", "nan", "--workers", "1"],
    ["--scheduler", "tcp://127.0.0.1:1"],   # nothing listens there
    ["--scheduler", "nonsense://x"],
], ids=["workers-and-scheduler", "jobqueue-without-workers", "lock-wait-nan", "no-scheduler", "bad-address"])
def test_bad_cluster_options_are_one_line(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import dask

    study = make_study(tmp_path)
    monkeypatch.chdir(tmp_path)
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        assert main(["study", "study/study.toml", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("robust-vae study: error: ") and "Traceback" not in err[0], err
    assert not (study / "runs").exists()
