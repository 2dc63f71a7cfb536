"""The driver: problems in and out of the slots, one lock-step round after another.

Every round evaluates the objective once for every occupied slot (a problem's starting
point, or the trial step of its line search), advances each line search, moves the rows
whose search ended to their new iterate, tests convergence, finds new search directions,
and gives the slots of finished problems to waiting ones.

Step 5, **stopping**, per problem (convergence masks): ‖proj g‖∞ ≤ pgtol, or
(f_old − f) ≤ factr·ε·max(|f_old|, |f|, 1) (SciPy's relative-reduction test), or
``max_iter`` iterations, or ``max_fun`` evaluations.

After every round the driver reports progress (:func:`robust_vae.core.progress.step`): the
iterations done out of ``max_iter`` per problem, a finished problem counting ``max_iter``, so
the bar moves until the last problem ends, also when problems wait for a slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robust_vae.attacks.optim.torch_lbfgsb.line_search import SearchOptions, SearchStep, search_step, trial_points
from robust_vae.attacks.optim.torch_lbfgsb.memory import accept_step
from robust_vae.attacks.optim.torch_lbfgsb.state import (
    CONVERGED_FACTR,
    CONVERGED_PGTOL,
    EPS,
    LINE_SEARCH_FAILED,
    MAX_FUN,
    MAX_ITER,
    Memory,
    State,
    TorchLBFGSBResult,
    TorchObjective,
    projected_gradient_norm,
)
from robust_vae.attacks.optim.torch_lbfgsb.subspace import new_directions
from robust_vae.core import progress


@dataclass
class _Settings:
    """The stopping tests (``tol`` = factr·ε) and the line search's options."""

    pgtol: float
    tol: float
    max_iter: int
    max_fun: int
    curvature_eps: float
    search: SearchOptions


class _Problems:
    """The M problems: their inputs, the outputs of the finished ones, the next one to admit."""

    def __init__(self, x0: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, m: int,
                 initial_memory: Memory | None = None, keep_memory: bool = False,
                 curvature_eps: float = EPS) -> None:
        device = x0.device
        self.x0, self.lower, self.upper = x0, lower, upper
        self.initial_memory, self.curvature_eps = initial_memory, curvature_eps
        self.memory: Memory | None = None
        self.total = x0.shape[0]
        self.next = 0
        self.x = x0.clone()
        self.f = torch.full((self.total,), float("nan"), dtype=torch.float64, device=device)
        self.nit = torch.zeros(self.total, dtype=torch.int64, device=device)
        self.nfev = torch.zeros(self.total, dtype=torch.int64, device=device)
        self.status = torch.full((self.total,), -1, dtype=torch.int64, device=device)
        if keep_memory:
            self.memory = Memory(x0.new_zeros(self.total, m, x0.shape[1]), x0.new_zeros(self.total, m, x0.shape[1]),
                                 torch.zeros(self.total, dtype=torch.int64, device=device))

    @property
    def all_admitted(self) -> bool:
        return self.next == self.total

    def result(self) -> TorchLBFGSBResult:
        return TorchLBFGSBResult(self.x, self.f, self.nit, self.nfev, self.status, self.memory)

    def admit(self, st: State) -> None:
        """Give the free slots of ``st`` to the next waiting problems."""
        free_rows = torch.nonzero(st.problem < 0).squeeze(1)
        count = min(free_rows.numel(), self.total - self.next)
        if count <= 0:
            return
        rows = free_rows[:count]
        problems = torch.arange(self.next, self.next + count, device=self.x0.device)
        self.next += count
        lower, upper = self.lower, self.upper
        st.problem[rows] = problems
        st.lower[rows], st.upper[rows] = lower[problems], upper[problems]
        st.boxed[rows] = (torch.isfinite(lower[problems]) & torch.isfinite(upper[problems])).all(1)
        st.x[rows] = torch.minimum(torch.maximum(self.x0[problems], lower[problems]), upper[problems])
        st.phase[rows] = 0
        st.nit[rows] = 0
        st.nfev[rows] = 0
        st.reset_memory(rows)
        start = self.initial_memory
        if start is not None:
            st.load_memory(rows, start.y[problems], start.s[problems], start.count[problems], self.curvature_eps)

    def finish(self, st: State, rows: torch.Tensor, status: int | torch.Tensor) -> None:
        """Record the problems in slots ``rows`` as finished with ``status`` and free the slots."""
        if rows.numel() == 0:
            return
        problems = st.problem[rows]
        if self.memory is not None:
            y, s, count = st.export_memory(rows)
            self.memory.y[problems], self.memory.s[problems], self.memory.count[problems] = y, s, count
        self.x[problems], self.f[problems] = st.x[rows], st.f[rows]
        self.nit[problems], self.nfev[problems] = st.nit[rows], st.nfev[rows]
        self.status[problems] = status if isinstance(status, torch.Tensor) else torch.full_like(problems, status)
        st.problem[rows] = -1


def torch_lbfgsb(
    objective: TorchObjective,
    x0: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    *,
    memory: int = 25,
    factr: float = 1e7,
    pgtol: float = 1e-5,
    max_iter: int = 15000,
    max_fun: int = 15000,
    max_ls: int = 20,
    batch: int = 512,
    curvature_eps: float = EPS,
    ftol_ls: float = 1e-3,
    gtol_ls: float = 0.9,
    initial_memory: Memory | None = None,
    keep_memory: bool = False,
) -> TorchLBFGSBResult:
    """Minimise M independent problems ``objective`` over the boxes [lower, upper] (all (M, n)).

    ``memory``, ``factr``, ``pgtol``, ``max_iter`` and ``max_fun`` mean what they mean in SciPy's
    ``fmin_l_bfgs_b`` (m, factr, pgtol, maxiter, maxfun). ``batch``: problems held at once
    (rows of the lock-step tensors). Infinite bounds are allowed. Everything runs on
    ``x0``'s device in float64. ``initial_memory``: every problem starts with these (s, y)
    pairs instead of an empty memory (a continuation: the memory of a neighbouring problem,
    its y corrected to this problem's gradients where that is known exactly); ``keep_memory``:
    the result carries every problem's final memory.
    """
    if memory < 1:
        raise ValueError("memory must be >= 1")
    device = x0.device
    x0 = x0.detach().to(torch.float64)
    lower = lower.detach().to(device, torch.float64).expand_as(x0)
    upper = upper.detach().to(device, torch.float64).expand_as(x0)
    if initial_memory is not None:
        if initial_memory.y.shape[0] != x0.shape[0] or initial_memory.y.shape[2] != x0.shape[1]:
            raise ValueError("initial_memory must hold one (m, n) memory per problem")
        initial_memory = Memory(initial_memory.y.to(device, torch.float64), initial_memory.s.to(device, torch.float64),
                                initial_memory.count.to(device, torch.int64))
    problems = _Problems(x0, lower, upper, memory, initial_memory, keep_memory, curvature_eps)
    if problems.total == 0:
        return problems.result()
    settings = _Settings(pgtol, factr * EPS, max_iter, max_fun, curvature_eps,
                         SearchOptions(ftol_ls, gtol_ls, max_ls, max_fun))
    st = State(max(1, min(batch, problems.total)), x0.shape[1], memory, device)
    problems.admit(st)
    while True:
        occupied = st.problem >= 0
        busy = int(occupied.sum())
        if busy == 0:
            break
        if problems.all_admitted and busy * 2 <= st.slots and st.slots > 1:
            st = st.take(torch.nonzero(occupied).squeeze(1))   # compact: the batch has emptied
            occupied = st.problem >= 0
        _round(objective, st, occupied, problems, settings)
        running = st.nit[st.problem >= 0].clamp(max=max_iter)
        progress.step(max_iter * int((problems.status >= 0).sum()) + int(running.sum()), problems.total * max_iter)
    return problems.result()


def _round(objective: TorchObjective, st: State, occupied: torch.Tensor, problems: _Problems,
           settings: _Settings) -> None:
    """One lock-step round over the ``occupied`` slots."""
    initial = st.phase == 0
    points = torch.where(initial.unsqueeze(1), st.x, trial_points(st))
    values, grads = _evaluate(objective, st, occupied, points)
    st.nfev += occupied
    need = torch.zeros_like(occupied)   # rows that need a new search direction
    init = occupied & initial
    if bool(init.any()):
        need |= _first_evaluation(st, init, values, grads, problems, settings.pgtol)
        st.start_p0(torch.nonzero(init & st.loaded & (st.problem >= 0)).squeeze(1))
    st.loaded &= ~init
    ls = occupied & ~initial
    if bool(ls.any()):
        need |= _line_search_round(st, ls, values, grads, problems, settings)
    failed_rows, failed_again = new_directions(st, need)
    problems.finish(st, failed_rows, LINE_SEARCH_FAILED)
    problems.finish(st, failed_again, LINE_SEARCH_FAILED)
    problems.admit(st)


def _evaluate(objective: TorchObjective, st: State, occupied: torch.Tensor, points: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Values (slots,) and gradients (slots, n) in float64 at ``points``, on the occupied slots
    (zero on the others)."""
    device = st.x.device
    if bool(occupied.all()):
        values, grads = objective(st.problem, points)
        return values.detach().to(device, torch.float64), grads.detach().to(device, torch.float64)
    rows = torch.nonzero(occupied).squeeze(1)
    v, gr = objective(st.problem[rows], points[rows])
    values = torch.zeros(st.slots, dtype=torch.float64, device=device)
    grads = torch.zeros(st.slots, st.x.shape[1], dtype=torch.float64, device=device)
    values[rows], grads[rows] = v.detach().to(device, torch.float64), gr.detach().to(device, torch.float64)
    return values, grads


def _first_evaluation(st: State, init: torch.Tensor, values: torch.Tensor, grads: torch.Tensor,
                      problems: _Problems, pgtol: float) -> torch.Tensor:
    """The first evaluation of the problems in ``init``: those already stationary finish; the
    others (returned) need their first direction."""
    st.f = torch.where(init, values, st.f)
    st.g = torch.where(init.unsqueeze(1), grads, st.g)
    done = init & (projected_gradient_norm(st.x, st.g, st.lower, st.upper) <= pgtol)
    problems.finish(st, torch.nonzero(done).squeeze(1), CONVERGED_PGTOL)
    return init & ~done


def _line_search_round(st: State, ls: torch.Tensor, values: torch.Tensor, grads: torch.Tensor,
                       problems: _Problems, settings: _Settings) -> torch.Tensor:
    """Advance the line searches of ``ls``; returns the rows that need a new direction."""
    step = search_step(st, ls, values, grads, settings.search)
    need = torch.zeros_like(ls)
    if bool(step.take.any()):
        need |= _take_steps(st, step, values, grads, problems, settings)
    if bool(step.failed.any()):
        need |= _search_failures(st, step.failed, problems, settings.max_fun)
    return need


def _take_steps(st: State, step: SearchStep, fp: torch.Tensor, gp: torch.Tensor, problems: _Problems,
                settings: _Settings) -> torch.Tensor:
    """Move the rows of ``step.take`` to their new iterate and test convergence: the converged
    ones finish, the others (returned) need a new direction."""
    new_x = trial_points(st)
    new_f = torch.where(step.accept, fp, step.f_lo)
    new_g = torch.where(step.accept.unsqueeze(1), gp, st.g_lo)
    f_old = st.f
    accept_step(st, step.take, new_x, new_f, new_g, settings.curvature_eps)
    pg = projected_gradient_norm(st.x, st.g, st.lower, st.upper)
    scale = torch.maximum(torch.maximum(f_old.abs(), new_f.abs()), torch.ones_like(new_f))
    status = torch.full_like(st.nit, -1)
    status = torch.where(st.nfev >= settings.max_fun, MAX_FUN, status)
    status = torch.where(st.nit >= settings.max_iter, MAX_ITER, status)
    status = torch.where((f_old - new_f) <= settings.tol * scale, CONVERGED_FACTR, status)
    status = torch.where(pg <= settings.pgtol, CONVERGED_PGTOL, status)
    stop = step.take & (status >= 0)
    stop_rows = torch.nonzero(stop).squeeze(1)
    problems.finish(st, stop_rows, status[stop_rows])
    return step.take & ~stop


def _search_failures(st: State, failed: torch.Tensor, problems: _Problems, max_fun: int) -> torch.Tensor:
    """Line searches that failed: out of evaluations or with an empty memory the problem ends;
    the others (returned) restart from their iterate with an empty memory."""
    out_of_budget = failed & (st.nfev >= max_fun)
    empty = failed & ~out_of_budget & (st.count == 0)
    retry = failed & ~out_of_budget & ~empty
    problems.finish(st, torch.nonzero(out_of_budget).squeeze(1), MAX_FUN)
    problems.finish(st, torch.nonzero(empty).squeeze(1), LINE_SEARCH_FAILED)
    st.reset_memory(torch.nonzero(retry).squeeze(1))
    return retry
