"""A study's runs as tasks on a Dask cluster: local worker processes, an existing scheduler, or
SLURM/PBS jobs through dask-jobqueue.

``robust-vae study STUDY.toml --workers N`` (a :class:`distributed.LocalCluster` of N worker
processes, one thread each), ``--scheduler tcp://HOST:PORT`` (an existing cluster) or
``--jobqueue slurm --workers N`` (N workers as batch jobs, configured in Dask's
``jobqueue.yaml``) make the study's missing runs with :func:`run_on_cluster` instead of one
after another; the tables are then written by the same :func:`robust_vae.analysis.study.report`.

One task is one whole run (:func:`execute_run`): the worker calls the same
:func:`robust_vae.evaluation.runner.run_attack` as a local run, into the same run folder
(a shared filesystem), with the same torch thread count, so a run's files do not depend on
which worker made it. The coordinator only schedules, shows progress and reports:

- Scheduling. The coordinator keeps one run per worker thread on the cluster and submits the
  next one when a run finishes, so a worker that finishes early takes the next run. Submitting
  every run at once let Dask queue runs on a busy worker while another sat idle (runs of
  unknown length are not rebalanced): 1.28x instead of 1.8x with 2 workers, see
  ``benchmarks/study_scaling.py``.
- Faults. A worker that dies (``kill -9``, out of memory, a lost node) takes its task with it;
  the scheduler gives the task to another worker (up to Dask's
  ``distributed.scheduler.allowed-failures`` times, default 3), which takes over the run
  folder's lock (the dead holder's pid and host are reported) and resumes from the units
  already saved. A killed coordinator loses nothing either: rerunning the same command
  finds the finished runs done and resumes the others from their units.
- One writer per folder. Each task holds the folder's lock
  (:func:`robust_vae.evaluation.run_store.run_lock`: pid, host, start time) for the whole run;
  a task that finds a live holder (the same run still finishing on a worker of a killed
  coordinator; an NFS lock whose dead client's lease has not expired yet) waits up to
  ``lock_wait`` seconds for it and then resumes, finding that run's units.
- Identical inputs. Each task carries the run's fingerprint and the library versions as the
  coordinator computed them; a worker that sees other data, weights or versions refuses the
  run with one line instead of writing results made from other inputs.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robust_vae.analysis.study import RunSpec, RunStatus, Study, run_config
from robust_vae.core.errors import ConfigError, RobustVAEError
from robust_vae.evaluation.run_config import RunConfig
from robust_vae.evaluation.run_store import RunLockedError, run_lock
from robust_vae.evaluation.runner import run_attack
from robust_vae.evaluation.success_matrix import library_versions

if TYPE_CHECKING:  # imported when a cluster is used: `robust-vae study` without one does not load Dask
    from distributed import Client, Future

JOBQUEUE_KINDS = ("slurm", "pbs", "sge", "lsf", "oar", "htcondor", "moab")
# Dask's nannies start their workers with MALLOC_TRIM_THRESHOLD_=65536 (besides OMP_NUM_THREADS=1
# and the like); setting it turns off glibc's adaptive mmap threshold, which here doubled a run's
# page faults and its system CPU time (a small thesis-fast run: 4.1 s of system time instead of
# 0.6 s). The local cluster unsets it; for `dask worker`, export this variable (see the README).
WORKER_ENVIRON_VARIABLE = ("DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON", "{'MALLOC_TRIM_THRESHOLD_': None}")
DEFAULT_LOCK_WAIT = 600.0  # seconds a task waits for a run folder locked by a live process


@dataclass(frozen=True)
class ClusterOptions:
    """Where the study's runs go.

    ``workers`` alone: a LocalCluster of that many worker processes on this machine;
    ``scheduler``: the address of a running Dask scheduler (``tcp://HOST:PORT``);
    ``jobqueue`` (e.g. ``"slurm"``) with ``workers``: that many workers started as batch jobs by
    dask-jobqueue from Dask's ``jobqueue`` configuration. ``threads`` is the torch thread count
    of every task (results depend on it: keep it the same as the runs you compare with).
    """

    workers: int | None = None
    scheduler: str | None = None
    jobqueue: str | None = None
    threads: int = 1
    lock_wait: float = DEFAULT_LOCK_WAIT

    def __post_init__(self) -> None:
        if self.scheduler is not None and (self.workers is not None or self.jobqueue is not None):
            raise ConfigError("--scheduler sends the runs to an existing cluster: drop --workers / --jobqueue "
                              "(its workers are started with `dask worker`)")
        if self.jobqueue is not None:
            if self.jobqueue not in JOBQUEUE_KINDS:
                raise ConfigError(f"unknown --jobqueue {self.jobqueue!r}; known: {', '.join(JOBQUEUE_KINDS)}")
            if self.workers is None:
                raise ConfigError(f"--jobqueue {self.jobqueue} needs --workers N (the number of workers to "
                                  "start as batch jobs)")
        if self.scheduler is None and self.workers is None:
            raise ConfigError("a cluster needs --workers N or --scheduler tcp://HOST:PORT")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        if not self.lock_wait >= 0:
            raise ConfigError(f"--lock-wait must be >= 0 seconds, got {self.lock_wait}")

    def describe(self) -> str:
        if self.scheduler is not None:
            return f"the Dask scheduler at {self.scheduler}"
        if self.jobqueue is not None:
            return f"{self.workers} dask-jobqueue {self.jobqueue} worker(s)"
        return f"a local Dask cluster of {self.workers} worker process(es), 1 thread each"


# ----------------------------------------------------------------------------- the task
@dataclass(frozen=True)
class RunTask:
    """Everything a worker needs to make one run, as plain picklable values."""

    key: str                     # the Dask key: the same run gets the same key
    label: str                   # "vae seed 0 / thesis-fast"
    config: RunConfig
    folder: str                  # the run folder as the coordinator names it (relative or absolute)
    folder_absolute: str         # and resolved on the coordinator
    cwd: str                     # the coordinator's working directory
    fingerprint: dict[str, Any]  # what the coordinator expects the worker to compute
    versions: dict[str, str]     # the coordinator's library versions
    threads: int = 1
    lock_wait: float = DEFAULT_LOCK_WAIT


@dataclass(frozen=True)
class TaskResult:
    """What a finished task reports back: where it ran, how long, and the lock messages."""

    key: str
    host: str
    pid: int
    seconds: float
    messages: tuple[str, ...] = ()


def make_task(study: Study, spec: RunSpec, *, threads: int = 1, lock_wait: float = DEFAULT_LOCK_WAIT,
              device: str = "cpu", data_dir: str | None = None) -> RunTask:
    """The task that makes ``spec``'s run (data_dir made absolute: workers may run elsewhere)."""
    if data_dir is not None:
        data_dir = str(Path(data_dir).expanduser().resolve())
    config = run_config(study, spec, device, data_dir)
    fingerprint = config.fingerprint()
    absolute = str(Path(spec.folder).resolve())
    digest = hashlib.sha256(json.dumps([absolute, fingerprint], sort_keys=True).encode()).hexdigest()[:12]
    return RunTask(key=f"robust-vae-run-{spec.name}-seed{spec.seed}-{spec.recipe}-{digest}",
                   label=f"{spec.name} seed {spec.seed} / {spec.recipe}", config=config, folder=str(spec.folder),
                   folder_absolute=absolute, cwd=os.getcwd(), fingerprint=fingerprint, versions=library_versions(),
                   threads=threads, lock_wait=lock_wait)


def _worker_folder(task: RunTask) -> str:
    """The folder as the coordinator named it when it names the same place here (so run.json's
    command is the one a local run records), else the absolute path."""
    if not Path(task.folder).is_absolute() and os.getcwd() != task.cwd:
        return task.folder_absolute
    return task.folder


def execute_run(task: RunTask) -> TaskResult:
    """Make (or resume) one run on a worker, exactly as a local ``robust-vae study`` does."""
    import torch

    started = time.perf_counter()
    torch.set_num_threads(task.threads)
    host = socket.gethostname()
    versions = library_versions()
    if versions != task.versions:
        differs = sorted(k for k in set(versions) | set(task.versions) if versions.get(k) != task.versions.get(k))
        raise ConfigError(f"worker {host} has other library versions than the coordinator ({', '.join(differs)}): "
                          "install the same environment on every worker")
    found = task.config.fingerprint()
    if found != task.fingerprint:
        differs = sorted(k for k in set(found) | set(task.fingerprint) if found.get(k) != task.fingerprint.get(k))
        raise ConfigError(f"worker {host} sees other inputs for {task.label} than the coordinator (differs in: "
                          f"{', '.join(differs)}): give every worker the same data root, zoo and cache")
    folder = Path(_worker_folder(task))
    messages: list[str] = []
    deadline = time.monotonic() + task.lock_wait
    while True:
        try:
            with run_lock(folder, log=messages.append):
                run_attack(task.config, folder, progress=False)
            break
        except RunLockedError as error:
            if time.monotonic() >= deadline:
                raise RunLockedError(f"{error} (waited {task.lock_wait:.0f} s; see --lock-wait)") from None
            if not any(m.startswith("waiting") for m in messages):
                messages.append(f"waiting for the lock of {folder}: {error}")
            time.sleep(min(2.0, max(0.05, deadline - time.monotonic())))
    return TaskResult(task.key, host, os.getpid(), round(time.perf_counter() - started, 2), tuple(messages))


# ----------------------------------------------------------------------------- the cluster
def _quiet_logs() -> None:
    """Dask's own warnings about lost workers are reported by the coordinator in one line."""
    for name in ("distributed", "distributed.nanny", "distributed.scheduler", "distributed.worker",
                 "distributed.core", "distributed.client", "distributed.comm"):
        logging.getLogger(name).setLevel(logging.ERROR)


def jobqueue_cluster(kind: str, **overrides: Any) -> Any:
    """A dask-jobqueue cluster object (``SLURMCluster`` for ``"slurm"``, ...) from Dask's
    ``jobqueue.<kind>`` configuration plus ``overrides``; no job is submitted until it is scaled."""
    if kind not in JOBQUEUE_KINDS:
        raise ConfigError(f"unknown --jobqueue {kind!r}; known: {', '.join(JOBQUEUE_KINDS)}")
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError("--jobqueue needs dask-jobqueue: pip install 'robust-vae[cluster]'") from None
    name = {"slurm": "SLURM", "pbs": "PBS", "sge": "SGE", "lsf": "LSF", "oar": "OAR", "htcondor": "HTCondor",
            "moab": "Moab"}[kind] + "Cluster"
    try:
        return getattr(dask_jobqueue, name)(**overrides)
    except ValueError as error:  # e.g. cores or memory not configured
        raise ConfigError(f"dask-jobqueue {kind}: {error} (set them in ~/.config/dask/jobqueue.yaml; see the README, "
                          "\"Sweeps on a cluster\")") from None


@contextlib.contextmanager
def connect(options: ClusterOptions) -> Iterator[Client]:
    """A Dask client for ``options``; a cluster made here is closed on leaving (its workers end)."""
    import dask
    from distributed import Client, LocalCluster

    _quiet_logs()
    with contextlib.ExitStack() as stack:
        if options.scheduler is not None:
            try:
                client = stack.enter_context(Client(options.scheduler))  # distributed.comm.timeouts.connect
            except (OSError, TimeoutError, ValueError) as error:
                raise ConfigError(f"cannot reach the Dask scheduler at {options.scheduler} ({error}): start one "
                                  "with `dask scheduler` and workers with `dask worker ADDRESS --nthreads 1`, or "
                                  "check the address") from None
        elif options.jobqueue is not None:
            cluster = stack.enter_context(jobqueue_cluster(options.jobqueue))
            cluster.scale(n=options.workers)
            client = stack.enter_context(Client(cluster))
        else:  # the environment holds for the workers the nanny restarts after a crash too
            environ = {**dask.config.get("distributed.nanny.pre-spawn-environ"), "MALLOC_TRIM_THRESHOLD_": None}
            stack.enter_context(dask.config.set({"distributed.nanny.pre-spawn-environ": environ}))
            cluster = stack.enter_context(LocalCluster(
                n_workers=options.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                silence_logs=logging.ERROR))
            client = stack.enter_context(Client(cluster))
        yield client


def dashboard_line(client: Client, timeout: float = 2.0) -> str:
    """Where the Dask dashboard is, or why there is none (its page is asked for once)."""
    import urllib.error
    import urllib.request

    try:
        link = str(client.dashboard_link)
    except Exception:  # no HTTP server on the scheduler
        return "Dask dashboard: none (the scheduler runs without one)"
    try:
        with urllib.request.urlopen(link, timeout=timeout) as response:
            page = response.read(4096).decode(errors="replace")
    except urllib.error.HTTPError:  # the scheduler's HTTP server runs, without the dashboard (--no-dashboard)
        return "Dask dashboard: none (the scheduler runs without one)"
    except (OSError, ValueError):
        return f"Dask dashboard: {link} (not reachable from this machine: forward its port)"
    if "needs bokeh" in page:
        return f"Dask dashboard: none at {link} yet (pip install \"bokeh>=3.1\" where the scheduler runs)"
    return f"Dask dashboard: {link}"


# ----------------------------------------------------------------------------- the coordinator
def _units_saved(folders: Sequence[str]) -> int:
    return sum(len(list((Path(f) / "progress").glob("unit-[0-9][0-9][0-9][0-9][0-9].npz"))) for f in folders)


@dataclass
class _Failure:
    task: RunTask
    message: str
    error: BaseException | None = None  # set for an internal error (a bug), re-raised at the end


def run_on_cluster(study: Study, statuses: Sequence[RunStatus], options: ClusterOptions, *, device: str = "cpu",
                   data_dir: str | None = None, log: Callable[[str], None] = print, progress: bool = True,
                   client: Client | None = None) -> list[RunSpec]:
    """Make every ``new`` or ``partial`` run of ``statuses`` as a task on the cluster ``options``
    describes (or on ``client``); returns the runs made. Blocks until every task has finished;
    a run that fails does not stop the others, and the failures are raised together at the end."""
    todo = [st for st in statuses if st.state in ("new", "partial")]
    if not todo:
        return []
    tasks = [make_task(study, st.spec, threads=options.threads, lock_wait=options.lock_wait, device=device,
                       data_dir=data_dir) for st in todo]
    for i, (st, task) in enumerate(zip(todo, tasks), 1):
        verb = "resume" if st.state == "partial" else "run"
        log(f"[{i}/{len(tasks)}] {verb} {task.label}: {task.config.command(task.folder)}")
    with contextlib.ExitStack() as stack:
        if client is None:
            log(f"starting {options.describe()}" if options.scheduler is None else f"connecting to {options.describe()}")
            client = stack.enter_context(connect(options))
        log(dashboard_line(client))
        return _gather(client, [st.spec for st in todo], tasks, log, progress)


def _gather(client: Client, runs: list[RunSpec], tasks: list[RunTask], log: Callable[[str], None],
            progress: bool) -> list[RunSpec]:
    """Submit ``tasks`` (which make ``runs``), follow them with one bar until all are done,
    report the failures."""
    from distributed import KilledWorker, wait
    from tqdm.auto import tqdm

    specs = {task.key: spec for spec, task in zip(runs, tasks)}
    waiting = collections.deque(tasks)
    pending: dict[Future[TaskResult], RunTask] = {}
    made: list[RunSpec] = []
    failures: list[_Failure] = []
    bar = tqdm(total=len(tasks), desc="study runs", unit="run", dynamic_ncols=True, disable=not progress,
               smoothing=0.0, mininterval=0.5)
    say = bar.write if progress else log
    workers = _follow_workers(client, {}, lambda message: None)
    checked = time.monotonic()
    try:
        while waiting or pending:
            while waiting and len(pending) < _capacity(workers):  # an idle thread takes the next run
                task = waiting.popleft()
                pending[client.submit(execute_run, task, key=task.key, pure=False, retries=0)] = task
            with contextlib.suppress(TimeoutError):
                wait(list(pending), timeout=0.5, return_when="FIRST_COMPLETED")
            for future in [f for f in pending if f.done()]:
                task = pending.pop(future)
                try:
                    result: TaskResult = future.result()
                except KilledWorker as error:
                    failures.append(_Failure(task, f"{task.label}: its task killed every worker that ran it ({error}); "
                                                   "look for memory limits in the worker logs"))
                except RobustVAEError as error:
                    failures.append(_Failure(task, f"{task.label}: {error}"))
                except Exception as error:  # a bug on the worker: reported, then re-raised at the end
                    failures.append(_Failure(task, f"{task.label}: internal error {type(error).__name__}: {error}", error))
                else:
                    for message in result.messages:
                        say(message)
                    say(f"finished {task.label} on {result.host} (pid {result.pid}) in {result.seconds:.1f} s")
                    made.append(specs[task.key])
                bar.update(1)
            now = time.monotonic()
            if now - checked >= 2.0:
                checked = now
                workers = _follow_workers(client, workers, say)
                bar.set_postfix_str(f"{len(workers)} workers, {_units_saved([t.folder_absolute for t in pending.values()])} "
                                    "units saved in unfinished runs")
    finally:
        bar.close()
        if pending:  # interrupted: the workers' units are saved, a rerun resumes
            client.cancel(list(pending))
    for failure in failures:
        log(f"failed: {failure.message}")
    internal = [f.error for f in failures if f.error is not None]
    if internal:
        raise internal[0]
    if failures:
        raise RobustVAEError(f"{len(failures)} of {len(tasks)} runs failed; the first: {failures[0].message}")
    return made


def _capacity(workers: dict[str, int]) -> int:
    """How many runs to keep on the cluster at once: one per worker thread (at least one, so a
    cluster whose workers have not joined yet gets a run to wait for)."""
    return max(1, sum(workers.values()))


def _follow_workers(client: Client, before: dict[str, int], say: Callable[[str], None]) -> dict[str, int]:
    """The cluster's workers now (address -> threads); says which left, which came, and warns
    about workers with several threads (two tasks in one process would share torch's threads)."""
    try:
        now: dict[str, int] = dict(client.nthreads())
    except Exception:  # the scheduler is busy or going away: try again later
        return before
    for address in sorted(set(before) - set(now)):
        say(f"worker {address} left the cluster: its run goes to another worker and resumes from its saved units")
    for address in sorted(set(now) - set(before)):
        if before or now[address] > 1:
            say(f"worker {address} joined ({now[address]} thread(s))" + (
                "; start workers with --nthreads 1: tasks in one process share torch's threads"
                if now[address] > 1 else ""))
    return now

