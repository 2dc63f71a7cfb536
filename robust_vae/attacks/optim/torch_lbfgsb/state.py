"""The solver's state, one row per slot, and what every phase shares.

Status codes, the result type, the objective's signature, and the small helpers the Cauchy
search, the subspace step and the memory update all use. Every state tensor is float64 (or
int64 / bool), one row per slot: at most ``batch`` problems are held at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# (indices of the problems (b,), points (b, n) float64) -> (values (b,), gradients (b, n)) float64
TorchObjective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

EPS = float(torch.finfo(torch.float64).eps)
BIG = 1e10

# status codes of TorchLBFGSBResult.status
CONVERGED_PGTOL = 0
CONVERGED_FACTR = 1
MAX_ITER = 2
MAX_FUN = 3
LINE_SEARCH_FAILED = 4
STATUS_TEXT = {
    CONVERGED_PGTOL: "CONVERGENCE: NORM_OF_PROJECTED_GRADIENT_<=_PGTOL",
    CONVERGED_FACTR: "CONVERGENCE: REL_REDUCTION_OF_F_<=_FACTR*EPSMCH",
    MAX_ITER: "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT",
    MAX_FUN: "STOP: TOTAL NO. OF F,G EVALUATIONS EXCEEDS LIMIT",
    LINE_SEARCH_FAILED: "ABNORMAL_TERMINATION_IN_LNSRCH",
}


@dataclass
class Memory:
    """The limited memories of M problems, for starting other problems with them: y and s
    (M, m, n) float64, pair j of a problem older than pair j + 1; ``count`` (M,) int64 pairs in
    use (the first ``count`` of each problem; the rest are zero)."""

    y: torch.Tensor
    s: torch.Tensor
    count: torch.Tensor


@dataclass
class TorchLBFGSBResult:
    """x: (M, n) float64 solutions; fun: (M,) final values; nit, nfev, status: (M,) int64
    (status: the codes of :data:`STATUS_TEXT`); ``memory``: each problem's final limited
    memory when it was asked for (``keep_memory``), else None."""

    x: torch.Tensor
    fun: torch.Tensor
    nit: torch.Tensor
    nfev: torch.Tensor
    status: torch.Tensor
    memory: Memory | None = None


def projected_gradient_norm(x: torch.Tensor, g: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """‖P(x − g) − x‖∞ per row (SciPy's ``projgr``)."""
    pg = torch.where(g < 0, torch.maximum(x - upper, g), torch.minimum(x - lower, g))
    return pg.abs().amax(dim=1) if pg.shape[1] else torch.zeros(pg.shape[0], dtype=pg.dtype, device=pg.device)


def steepest_descent(x: torch.Tensor, g: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fixed0, moving, d): variables at a bound with the gradient pointing out (or zero) stay
    fixed; the others move along d = −g (zero where g = 0)."""
    fixed0 = ((x <= lower) & (g >= 0)) | ((x >= upper) & (g <= 0))
    moving = (g != 0) & ~fixed0
    return fixed0, moving, torch.where(moving, -g, torch.zeros_like(g))


def bmv(mat: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    """(b, p, q) @ (b, q) -> (b, p), as a product summed over the last axis: a row's result
    depends on that row alone (a batched BLAS product does not: at batch size 1 it is a gemv,
    which rounds differently)."""
    return (mat * vec.unsqueeze(1)).sum(2)


def aligned(size: int) -> int:
    """``size`` rounded up to a multiple of 8: a float64 block of that many elements (or rows
    of that many) keeps the next one on a 64-byte boundary."""
    return -(-size // 8) * 8


def pad_identity(mat: torch.Tensor) -> torch.Tensor:
    """(b, p, p) -> (b, q, q) with the identity on the padding, q = ``aligned(p)``: each matrix
    of the batch then starts on a 64-byte boundary, where LAPACK (MKL's potri, getrf/getrs)
    rounds the same for every row of the batch and for a batch of one (at p = 25 the odd rows
    of a batch rounded differently from the same matrix alone)."""
    p = mat.shape[1]
    q = aligned(p)
    if q == p:
        return mat
    out = torch.zeros(mat.shape[0], q, q, dtype=mat.dtype, device=mat.device)
    out[:, :p, :p] = mat
    out[:, p:, p:] = torch.eye(q - p, dtype=mat.dtype, device=mat.device)
    return out


def s_scale(theta: torch.Tensor, two_m: int) -> torch.Tensor:
    """(b, 2m): 1 on the y half, θ on the s half (W = [Y, θS] = memory · diag(this))."""
    scale = torch.ones(theta.shape[0], two_m, dtype=theta.dtype, device=theta.device)
    scale[:, two_m // 2:] = theta.unsqueeze(1)
    return scale


class State:
    """Every per-problem quantity, one row per slot.

    The limited memory ``W`` is (slots, 2m, aligned(n)): rows 0..m−1 hold y vectors, rows
    m..2m−1 the matching s vectors (the compact representation's W = [Y, θS] is its
    transpose, times θ on the s half), zero beyond column n so that every row of W starts on
    a 64-byte boundary (MKL's batched products round with the alignment of each problem's
    block). It is a ring buffer per problem; ``stamp`` orders the pairs and unused pairs are
    zero.
    """

    TENSORS = ("problem", "phase", "x", "f", "g", "lower", "upper", "boxed", "W", "SY", "SS", "stamp",
               "count", "theta", "gram", "free_prev", "p0", "xbar", "d", "dg0", "stpmax", "stp", "lo",
               "f_lo", "dg_lo", "g_lo", "hi", "f_hi", "dg_hi", "bracketed", "width", "width1",
               "ls_evals", "nit", "nfev", "loaded")

    def __init__(self, slots: int, n: int, m: int, device: torch.device) -> None:
        def f64(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, dtype=torch.float64, device=device)

        def i64(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, dtype=torch.int64, device=device)

        def ones64(*shape: int) -> torch.Tensor:
            return torch.ones(*shape, dtype=torch.float64, device=device)

        self.m = m
        self.problem = torch.full((slots,), -1, dtype=torch.int64, device=device)
        self.phase = i64(slots)  # 0: evaluate x0; 1: line search
        self.x = f64(slots, n)
        self.f = f64(slots)
        self.g = f64(slots, n)
        self.lower = f64(slots, n)
        self.upper = f64(slots, n)
        self.boxed = torch.zeros(slots, dtype=torch.bool, device=device)
        self.W = f64(slots, 2 * m, aligned(n))
        self.SY = f64(slots, m, m)  # SY[i, j] = s_iᵀ y_j
        self.SS = f64(slots, m, m)
        self.stamp = torch.full((slots, m), -1, dtype=torch.int64, device=device)
        self.count = i64(slots)
        self.theta = ones64(slots)
        # gram = [Y S]ᵀ diag(free_prev) [Y S] for the free set of the last direction, kept up
        # to date incrementally; p0 = [Y S]ᵀ d for the steepest-descent d at the current x
        self.gram = f64(slots, 2 * m, 2 * m)
        self.free_prev = torch.zeros(slots, n, dtype=torch.bool, device=device)
        self.p0 = f64(slots, 2 * m)
        self.xbar = f64(slots, n)  # the point at step 1
        self.d = f64(slots, n)
        self.dg0 = f64(slots)
        self.stpmax = ones64(slots)
        self.stp = ones64(slots)
        self.lo = f64(slots)
        self.f_lo = f64(slots)
        self.dg_lo = f64(slots)
        self.g_lo = f64(slots, n)
        self.hi = f64(slots)
        self.f_hi = f64(slots)
        self.dg_hi = f64(slots)
        self.bracketed = torch.zeros(slots, dtype=torch.bool, device=device)
        self.width = f64(slots)
        self.width1 = f64(slots)
        self.ls_evals = i64(slots)
        self.nit = i64(slots)
        self.nfev = i64(slots)
        self.loaded = torch.zeros(slots, dtype=torch.bool, device=device)  # started with a memory: p0 to set

    @property
    def slots(self) -> int:
        return self.problem.shape[0]

    def take(self, rows: torch.Tensor) -> State:
        """A smaller state holding only ``rows`` (used when most slots have emptied)."""
        new = object.__new__(State)
        new.m = self.m
        for name in self.TENSORS:
            setattr(new, name, getattr(self, name)[rows].clone())
        return new

    def export_memory(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The memories of ``rows`` oldest pair first: y, s (r, m, n) and count (r,)."""
        n = self.x.shape[1]
        order = torch.argsort(torch.where(self.stamp[rows] >= 0, self.stamp[rows], torch.iinfo(torch.int64).max),
                              dim=1, stable=True)
        y = torch.gather(self.W[rows, :self.m, :n], 1, order.unsqueeze(2).expand(-1, -1, n))
        s = torch.gather(self.W[rows, self.m:, :n], 1, order.unsqueeze(2).expand(-1, -1, n))
        return y, s, torch.clamp(self.count[rows], max=self.m)

    def load_memory(self, rows: torch.Tensor, y: torch.Tensor, s: torch.Tensor, count: torch.Tensor,
                    curvature_eps: float) -> None:
        """Start ``rows`` (just reset) with the pairs y, s (r, m, n), oldest first, of which the
        first ``count`` (r,) are in use; pairs that fail the curvature test sᵀy > ε‖y‖² are
        left out, as an iteration would. SᵀY and SᵀS are sums of elementwise products per row
        (batch independent); the gram starts empty with an empty free set, and p0 is set at
        the first evaluation (:meth:`start_p0`)."""
        n = self.x.shape[1]
        for i, row in enumerate(rows.tolist()):
            yi, si = y[i, :int(count[i])], s[i, :int(count[i])]
            sy, yy = (si * yi).sum(1), (yi * yi).sum(1)
            keep = (sy > curvature_eps * yy) & torch.isfinite(sy) & torch.isfinite(yy) & (yy > 0)
            yi, si = yi[keep][-self.m:], si[keep][-self.m:]
            k = yi.shape[0]
            if k == 0:
                continue
            self.W[row, :k, :n] = yi
            self.W[row, self.m:self.m + k, :n] = si
            self.stamp[row, :k] = torch.arange(k, device=self.stamp.device)
            self.count[row] = k
            self.SY[row, :k, :k] = (si.unsqueeze(1) * yi.unsqueeze(0)).sum(2)   # SY[i, j] = s_iᵀ y_j
            self.SS[row, :k, :k] = (si.unsqueeze(1) * si.unsqueeze(0)).sum(2)
            self.theta[row] = (yi[-1] * yi[-1]).sum() / (si[-1] * yi[-1]).sum()
            self.free_prev[row] = False
            self.loaded[row] = True

    def start_p0(self, rows: torch.Tensor) -> None:
        """p0 = [Y S]ᵀ d for the steepest-descent d at x, on ``rows`` whose memory was loaded."""
        if rows.numel() == 0:
            return
        _, _, d = steepest_descent(self.x[rows], self.g[rows], self.lower[rows], self.upper[rows])
        pad = self.W.shape[2] - d.shape[1]
        if pad:
            d = torch.nn.functional.pad(d, (0, pad))
        self.p0[rows] = bmv(self.W[rows], d)

    def reset_memory(self, rows: torch.Tensor) -> None:
        """Empty the limited memory of ``rows``."""
        if rows.numel() == 0:
            return
        self.W[rows] = 0.0
        self.SY[rows] = 0.0
        self.SS[rows] = 0.0
        self.gram[rows] = 0.0
        self.p0[rows] = 0.0
        self.stamp[rows] = -1
        self.count[rows] = 0
        self.theta[rows] = 1.0
        self.loaded[rows] = False
