"""Many independent box-constrained L-BFGS-B problems solved in lock-step.

Each problem is a real ``scipy.optimize.minimize(method="L-BFGS-B")`` run in its own worker
thread; whenever every busy worker is waiting for a function value, the coordinator
evaluates all requested points in one batched torch call. Each problem therefore follows
exactly the iterates it would follow alone (its result does not depend on the others),
while the expensive gradients are computed in batches.

After every batched evaluation the coordinator reports progress
(:func:`robust_vae.core.progress.step`): the iterations done out of ``max_iter`` per problem,
a finished problem counting ``max_iter`` (each worker counts its problem's iterations with
SciPy's ``callback``, which does not change the iterates), so the bar moves until the last
problem ends, also when there are more problems than workers.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.optimize

from robust_vae.core import progress

# (indices of the problems, points (B, n) float64) -> (values (B,), gradients (B, n)) float64
BatchedObjective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
Answer = tuple[float, np.ndarray] | BaseException  # a value and gradient, or the error evaluating them


@dataclass
class LBFGSBResult:
    """x: (M, n) solutions; fun: (M,) final values; nit: (M,) iterations; nfev: (M,)."""

    x: np.ndarray
    fun: np.ndarray
    nit: np.ndarray
    nfev: np.ndarray


class _Coordinator:
    """Shared state: points waiting for a value, answers, and how many problems are in flight."""

    def __init__(self, remaining: int) -> None:
        self.cv = threading.Condition()
        self.pending: dict[int, np.ndarray] = {}
        self.results: dict[int, Answer] = {}
        self.running = 0  # problems a worker has taken and not finished
        self.remaining = remaining  # problems not finished (queued or running)
        self.aborted = False  # set when the caller stops (error or Ctrl-C): workers give up

    def request(self, i: int, x: np.ndarray) -> tuple[float, np.ndarray]:
        with self.cv:
            self.pending[i] = x.copy()
            self.cv.notify_all()
            self.cv.wait_for(lambda: i in self.results or self.aborted)
            if self.aborted:
                raise RuntimeError("lock-step L-BFGS-B aborted")
            result = self.results.pop(i)
        if isinstance(result, BaseException):
            raise result
        return result

    def ready(self) -> bool:
        return self.remaining == 0 or (self.running > 0 and len(self.pending) >= self.running)


class _IterationCounter:
    """SciPy ``callback`` that counts the iterations of problem ``i`` into ``counts[i]``."""

    def __init__(self, counts: np.ndarray, i: int) -> None:
        self.counts, self.i = counts, i

    def __call__(self, intermediate_result: Any) -> None:
        self.counts[self.i] += 1


@dataclass
class _Job:
    """What the workers share: the problems, their bounds and options, and the outputs."""

    coordinator: _Coordinator
    todo: queue.SimpleQueue[int]
    lower: np.ndarray
    upper: np.ndarray
    options: dict[str, float]
    out: LBFGSBResult
    iterations: np.ndarray  # (M,) iterations so far, for progress
    finished: np.ndarray  # (M,) bool, for progress
    errors: list[BaseException] = field(default_factory=list)

    def work_done(self, max_iter: int) -> int:
        """Progress in iterations: ``max_iter`` per finished problem, the count so far for the others."""
        return int(np.where(self.finished, max_iter, np.minimum(self.iterations, max_iter)).sum())

    def work(self) -> None:
        """A worker thread: solve queued problems one by one until the queue is empty."""
        coordinator, out = self.coordinator, self.out
        while True:
            with coordinator.cv:
                try:
                    i = self.todo.get_nowait()
                except queue.Empty:
                    return
                coordinator.running += 1
            try:
                res = scipy.optimize.minimize(
                    lambda x, i=i: coordinator.request(i, x), out.x[i], jac=True,
                    method="L-BFGS-B", bounds=scipy.optimize.Bounds(self.lower[i], self.upper[i]),
                    options=self.options, callback=_IterationCounter(self.iterations, i),
                )
                out.x[i], out.fun[i], out.nit[i], out.nfev[i] = res.x, res.fun, res.nit, res.nfev
            except BaseException as error:  # re-raised in the caller's thread below
                self.errors.append(error)
            finally:
                self.finished[i] = True
                with coordinator.cv:
                    coordinator.running -= 1
                    coordinator.remaining -= 1
                    coordinator.cv.notify_all()


def lockstep_lbfgsb(
    objective: BatchedObjective,
    x0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    memory: int = 25,
    factr: float = 10.0,
    pgtol: float = 1e-5,
    max_iter: int = 15000,
    max_fun: int = 15000,
    workers: int = 256,
) -> LBFGSBResult:
    """Minimise M independent problems ``objective`` over boxes [lower, upper] (all (M, n)).

    ``factr`` and ``memory`` have the meaning of SciPy's ``fmin_l_bfgs_b`` (ftol = factr·eps).
    At most ``workers`` problems run at once; the rest wait in a queue.
    """
    m, n = x0.shape
    out = LBFGSBResult(np.array(x0, dtype=np.float64, copy=True), np.full(m, np.nan),
                       np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.int64))
    if m == 0:
        return out
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(m):
        todo.put(i)
    options = {"maxcor": memory, "ftol": factr * np.finfo(float).eps, "gtol": pgtol,
               "maxiter": max_iter, "maxfun": max_fun}
    job = _Job(_Coordinator(m), todo, lower, upper, options, out, np.zeros(m, dtype=np.int64),
               np.zeros(m, dtype=bool))
    threads = [threading.Thread(target=job.work, daemon=True) for _ in range(min(workers, m))]
    for thread in threads:
        thread.start()
    try:
        _serve(job, objective, max_iter)
    finally:
        with job.coordinator.cv:
            job.coordinator.aborted = job.coordinator.remaining > 0
            job.coordinator.cv.notify_all()
        for thread in threads:
            thread.join()
    if job.errors:
        raise job.errors[0]
    progress.step(job.work_done(max_iter), m * max_iter)   # the last iterations, counted after the last round
    return out


def _serve(job: _Job, objective: BatchedObjective, max_iter: int) -> None:
    """The coordinator's loop: whenever every running worker waits, evaluate all their points
    in one batch and hand out the answers; until every problem is finished."""
    coordinator = job.coordinator
    while True:
        with coordinator.cv:
            coordinator.cv.wait_for(coordinator.ready)
            if coordinator.remaining == 0:
                break
            batch, coordinator.pending = coordinator.pending, {}
        index = np.fromiter(batch.keys(), dtype=np.int64, count=len(batch))
        points = np.stack([batch[i] for i in index])
        answers: dict[int, Answer]
        try:
            values, grads = objective(index, points)
            answers = {int(i): (float(values[j]), grads[j]) for j, i in enumerate(index)}
        except BaseException as error:  # every waiting problem fails with it
            answers = {int(i): error for i in index}
        with coordinator.cv:
            coordinator.results.update(answers)
            coordinator.cv.notify_all()
        progress.step(job.work_done(max_iter), len(job.iterations) * max_iter)
