"""Many independent box-constrained L-BFGS-B problems, vectorised in torch.

B problems of dimension n (here n = 1024 pixels) are iterated in lock-step as tensor
operations: one batched function/gradient evaluation per round, one row per problem. The
algorithm is L-BFGS-B (Byrd, Lu, Nocedal & Zhu 1995, with the Morales–Nocedal 2011
projection of the subspace step, as in SciPy's L-BFGS-B 3.0):

1. **Generalized Cauchy point** along the projected steepest-descent path
   x(t) = P(x − t·g), on the compact limited-memory model B = θI − W M Wᵀ, W = [Y, θS].
   The sequential breakpoint loop of the Fortran code is replaced by prefix sums over the
   breakpoints sorted per problem: after passing k breakpoints the path derivative at the
   segment start is f'_k = −Σ_{free} g_i² − c_kᵀ M p_k + t_k·f''_k with
   f''_k = θ Σ_{free} g_i² − p_kᵀ M p_k, where p_k = Wᵀd_k and c_k = Wᵀ(x(t_k) − x)
   restricted to the fixed variables are cumulative sums of rows of W. The first block of
   breakpoints comes from ``topk``; the few problems whose Cauchy point lies further are
   fully sorted and scanned in doubling blocks, until every problem has found the first
   local minimiser of the model along its path. c = Wᵀ(x^c − x) and Wᵀ of the steepest
   descent direction on the free variables fall out of the same prefix sums.
2. **Subspace minimisation** over the variables that are free at the Cauchy point with the
   Woodbury form of the reduced inverse Hessian: d_F = −r̂/θ − ZᵀW (K − WᵀZZᵀW/θ)⁻¹ WᵀZ r̂/θ²
   (K = M⁻¹), free sets handled as masks. As in the Fortran code's ``formk``, the 2m×2m
   matrix WᵀZZᵀW is updated, not recomputed: rank-one corrections for the variables that
   entered or left the free set, plus the row and column of the newest pair. The step is
   projected onto the box; if the projected point is not a descent direction the
   unprojected step is truncated to the box instead (Morales & Nocedal 2011).
3. **Line search** along d = x̄ − x with step ≤ the largest feasible step: a vectorised
   strong-Wolfe bracketing/zoom search (Armijo ftol = 1e-3, curvature gtol = 0.9, safeguarded
   cubic interpolation, at most ``max_ls`` evaluations). Every accepted step decreases f.
   On failure the memory is discarded and the iteration restarts once from the last
   iterate (as SciPy does); a failure with empty memory ends that problem.
4. **Update**: (s, y) enters the memory unless sᵀy ≤ ``curvature_eps``·‖y‖²; θ = yᵀy / sᵀy.
   The memory is a ring buffer per problem with insertion stamps, so problems with
   different numbers of stored pairs share one tensor (unused pairs are zero and masked).
   It is stored as (B, 2m, n); every iteration makes two passes over it: one product with
   the new pair (which also yields Wᵀd for the next Cauchy search) and one W·v for the
   subspace step.
5. **Stopping**, per problem (convergence masks): ‖proj g‖∞ ≤ pgtol, or
   (f_old − f) ≤ factr·ε·max(|f_old|, |f|, 1) (SciPy's relative-reduction test), or
   ``max_iter`` iterations, or ``max_fun`` evaluations.

Every operation acts row by row, so a problem's iterates do not depend on the other
problems in the batch. At most ``batch`` problems are held at once; when one finishes, the
next waiting problem takes its row. The linear algebra is float64 whatever the dtype the
objective computes in.

Checked against SciPy (tests/attacks/test_torch_lbfgsb.py): on convex box-constrained
quadratics it follows SciPy's iterates (same iteration and evaluation counts, objectives
equal to ~1e-16); on Rosenbrock problems the same counts and optima.

Cost on CPU (n = 1024, m = 25, 256 problems, one thread): about 0.7 ms of CPU time per
problem and iteration on top of the objective, against ~0.7 ms for SciPy's compiled
L-BFGS-B on one problem; the gain comes from evaluating the objective in batches (the
shipped VAE's gradient costs ~0.25 ms per example in a batch of 256 against ~2.4 ms alone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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
class TorchLBFGSBResult:
    """x: (M, n) float64 solutions; fun: (M,) final values; nit, nfev, status: (M,) int64
    (status: the codes of :data:`STATUS_TEXT`)."""

    x: torch.Tensor
    fun: torch.Tensor
    nit: torch.Tensor
    nfev: torch.Tensor
    status: torch.Tensor


def projected_gradient_norm(x: torch.Tensor, g: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """‖P(x − g) − x‖∞ per row (SciPy's ``projgr``)."""
    pg = torch.where(g < 0, torch.maximum(x - upper, g), torch.minimum(x - lower, g))
    return pg.abs().amax(dim=1) if pg.shape[1] else torch.zeros(pg.shape[0], dtype=pg.dtype, device=pg.device)


def _steepest_descent(x: torch.Tensor, g: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fixed0, moving, d): variables at a bound with the gradient pointing out (or zero) stay
    fixed; the others move along d = −g (zero where g = 0)."""
    fixed0 = ((x <= lower) & (g >= 0)) | ((x >= upper) & (g <= 0))
    moving = (g != 0) & ~fixed0
    return fixed0, moving, torch.where(moving, -g, torch.zeros_like(g))


class _State:
    """Every per-problem quantity, one row per slot.

    The limited memory ``W`` is (slots, 2m, n): rows 0..m−1 hold y vectors, rows m..2m−1
    the matching s vectors (the compact representation's W = [Y, θS] is its transpose, times
    θ on the s half). It is a ring buffer per problem; ``stamp`` orders the pairs and unused
    pairs are zero.
    """

    TENSORS = ("problem", "phase", "x", "f", "g", "lower", "upper", "boxed", "W", "SY", "SS", "stamp",
               "count", "theta", "gram", "free_prev", "p0", "xbar", "d", "dg0", "stpmax", "stp", "lo",
               "f_lo", "dg_lo", "g_lo", "hi", "f_hi", "dg_hi", "bracketed", "width", "width1",
               "ls_evals", "nit", "nfev")

    def __init__(self, slots: int, n: int, m: int, device: torch.device) -> None:
        f64 = dict(dtype=torch.float64, device=device)
        i64 = dict(dtype=torch.int64, device=device)
        self.m = m
        self.problem = torch.full((slots,), -1, **i64)
        self.phase = torch.zeros(slots, **i64)  # 0: evaluate x0; 1: line search
        self.x = torch.zeros(slots, n, **f64)
        self.f = torch.zeros(slots, **f64)
        self.g = torch.zeros(slots, n, **f64)
        self.lower = torch.zeros(slots, n, **f64)
        self.upper = torch.zeros(slots, n, **f64)
        self.boxed = torch.zeros(slots, dtype=torch.bool, device=device)
        self.W = torch.zeros(slots, 2 * m, n, **f64)
        self.SY = torch.zeros(slots, m, m, **f64)  # SY[i, j] = s_iᵀ y_j
        self.SS = torch.zeros(slots, m, m, **f64)
        self.stamp = torch.full((slots, m), -1, **i64)
        self.count = torch.zeros(slots, **i64)
        self.theta = torch.ones(slots, **f64)
        # gram = [Y S]ᵀ diag(free_prev) [Y S] for the free set of the last direction, kept up
        # to date incrementally; p0 = [Y S]ᵀ d for the steepest-descent d at the current x
        self.gram = torch.zeros(slots, 2 * m, 2 * m, **f64)
        self.free_prev = torch.zeros(slots, n, dtype=torch.bool, device=device)
        self.p0 = torch.zeros(slots, 2 * m, **f64)
        self.xbar = torch.zeros(slots, n, **f64)  # the point at step 1
        self.d = torch.zeros(slots, n, **f64)
        self.dg0 = torch.zeros(slots, **f64)
        self.stpmax = torch.ones(slots, **f64)
        self.stp = torch.ones(slots, **f64)
        self.lo = torch.zeros(slots, **f64)
        self.f_lo = torch.zeros(slots, **f64)
        self.dg_lo = torch.zeros(slots, **f64)
        self.g_lo = torch.zeros(slots, n, **f64)
        self.hi = torch.zeros(slots, **f64)
        self.f_hi = torch.zeros(slots, **f64)
        self.dg_hi = torch.zeros(slots, **f64)
        self.bracketed = torch.zeros(slots, dtype=torch.bool, device=device)
        self.width = torch.zeros(slots, **f64)
        self.width1 = torch.zeros(slots, **f64)
        self.ls_evals = torch.zeros(slots, **i64)
        self.nit = torch.zeros(slots, **i64)
        self.nfev = torch.zeros(slots, **i64)

    @property
    def slots(self) -> int:
        return self.problem.shape[0]

    def take(self, rows: torch.Tensor) -> "_State":
        """A smaller state holding only ``rows`` (used when most slots have emptied)."""
        new = object.__new__(_State)
        new.m = self.m
        for name in self.TENSORS:
            setattr(new, name, getattr(self, name)[rows].clone())
        return new

    def reset_memory(self, rows: torch.Tensor) -> None:
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


def _cubic_step(a: torch.Tensor, fa: torch.Tensor, da: torch.Tensor,
                b: torch.Tensor, fb: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
    """Minimiser of the cubic through (a, fa, da), (b, fb, db), safeguarded into the middle
    80 % of [a, b] (bisection where the cubic has no usable minimiser)."""
    width = b - a
    safe_width = torch.where(width == 0, torch.ones_like(width), width)
    d1 = da + db - 3.0 * (fa - fb) / safe_width
    disc = d1 * d1 - da * db
    d2 = torch.sign(width) * disc.clamp_min(0.0).sqrt()
    denom = db - da + 2.0 * d2
    safe_denom = torch.where(denom == 0, torch.ones_like(denom), denom)
    t = b - width * (db + d2 - d1) / safe_denom
    lo_end, hi_end = torch.minimum(a, b), torch.maximum(a, b)
    margin = 0.1 * (hi_end - lo_end)
    ok = torch.isfinite(t) & (disc >= 0) & (denom != 0)
    t = torch.where(ok, t, 0.5 * (a + b))
    return torch.minimum(torch.maximum(t, lo_end + margin), hi_end - margin)


def _too_long_step(a: torch.Tensor, fa: torch.Tensor, da: torch.Tensor,
                   b: torch.Tensor, fb: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
    """Moré–Thuente's first case (f(b) > f(a)): of the cubic and the quadratic (fa, da, fb)
    minimisers take the cubic if it is closer to a, else the average of the two; kept inside
    (a, b). Where f(b) is not finite, a tenth of the way from a to b."""
    width = b - a
    safe_width = torch.where(width == 0, torch.ones_like(width), width)
    theta = 3.0 * (fa - fb) / safe_width + da + db
    s = torch.maximum(torch.maximum(theta.abs(), da.abs()), db.abs()).clamp_min(1e-300)
    gamma = s * ((theta / s) ** 2 - (da / s) * (db / s)).clamp_min(0.0).sqrt()
    gamma = torch.where(b < a, -gamma, gamma)
    p = (gamma - da) + theta
    q = ((gamma - da) + gamma) + db
    cubic = a + p / torch.where(q == 0, torch.ones_like(q), q) * width
    cubic = torch.where(q == 0, 0.5 * (a + b), cubic)
    denom = (fa - fb) / safe_width + da
    quad = a + (da / torch.where(denom == 0, torch.ones_like(denom), denom)) / 2.0 * width
    quad = torch.where(denom == 0, 0.5 * (a + b), quad)
    step = torch.where((cubic - a).abs() < (quad - a).abs(), cubic, cubic + (quad - cubic) / 2.0)
    lo_end, hi_end = torch.minimum(a, b), torch.maximum(a, b)
    margin = 1e-3 * (hi_end - lo_end)
    step = torch.where(torch.isfinite(step), step, a + 0.5 * width)
    step = torch.minimum(torch.maximum(step, lo_end + margin), hi_end - margin)
    return torch.where(torch.isfinite(fb) & torch.isfinite(db), step, a + 0.1 * width)


def _bmv(mat: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    """(b, p, q) @ (b, q) -> (b, p)."""
    return torch.bmm(mat, vec.unsqueeze(2)).squeeze(2)


def _s_scale(theta: torch.Tensor, two_m: int) -> torch.Tensor:
    """(b, 2m): 1 on the y half, θ on the s half (W = [Y, θS] = memory · diag(this))."""
    scale = torch.ones(theta.shape[0], two_m, dtype=theta.dtype, device=theta.device)
    scale[:, two_m // 2:] = theta.unsqueeze(1)
    return scale


def _middle_matrices(SY: torch.Tensor, SS: torch.Tensor, stamp: torch.Tensor,
                     theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(K, M = K⁻¹, ok) of the compact representation B = θI − W M Wᵀ: K = [[−D, Lᵀ], [L, θSᵀS]].

    Unused memory pairs get −1 / +1 on the diagonal (their columns of W are zero). M comes
    from the Cholesky factor of T = θSᵀS + L D⁻¹ Lᵀ; ``ok`` is False where T is not positive
    definite (the caller then discards that memory, as SciPy does).
    """
    valid = stamp >= 0
    th = theta.view(-1, 1, 1)
    diag = torch.diagonal(SY, dim1=1, dim2=2)
    dvals = torch.where(valid, diag, torch.ones_like(diag))
    older = (stamp.unsqueeze(2) > stamp.unsqueeze(1)) & valid.unsqueeze(2) & valid.unsqueeze(1)
    lower = torch.where(older, SY, torch.zeros_like(SY))  # L[i, j] = s_iᵀ y_j, pair i newer than j
    sts = th * SS + torch.diag_embed((~valid).to(SY.dtype))
    dinv = 1.0 / dvals
    t_mat = sts + (lower * dinv.unsqueeze(1)) @ lower.transpose(1, 2)
    chol, info = torch.linalg.cholesky_ex(t_mat)
    ok = (info == 0) & (dvals > 0).all(1)
    eye = torch.eye(t_mat.shape[1], dtype=t_mat.dtype, device=t_mat.device)
    chol = torch.where(ok.view(-1, 1, 1), chol, eye)
    t_inv = torch.cholesky_inverse(chol)
    m12 = (dinv.unsqueeze(2) * lower.transpose(1, 2)) @ t_inv          # D⁻¹ Lᵀ T⁻¹
    m11 = torch.diag_embed(-dinv) + (m12 @ lower) * dinv.unsqueeze(1)  # −D⁻¹ + D⁻¹LᵀT⁻¹LD⁻¹
    big_m = torch.cat([torch.cat([m11, m12], 2), torch.cat([m12.transpose(1, 2), t_inv], 2)], 1)
    k_mat = torch.cat([
        torch.cat([torch.diag_embed(-dvals), lower.transpose(1, 2)], 2),
        torch.cat([lower, sts], 2),
    ], 1)
    return k_mat, big_m, ok


class _Scan:
    """Results of the breakpoint scan of the Cauchy search, one entry per row."""

    def __init__(self, b: int, two_m: int, like: torch.Tensor, p0: torch.Tensor) -> None:
        self.k = torch.zeros(b, dtype=torch.int64, device=like.device)
        self.t = torch.zeros(b, dtype=like.dtype, device=like.device)
        self.p = p0.clone()
        self.c = torch.zeros_like(p0)


def _scan_breakpoints(out: _Scan, rows: torch.Tensor, ts: torch.Tensor, order: torch.Tensor,
                      g: torch.Tensor, memory: torch.Tensor, scale: torch.Tensor, theta: torch.Tensor,
                      big_m: torch.Tensor, p0: torch.Tensor, g2_total: torch.Tensor, f2_floor: torch.Tensor,
                      first_block: int) -> torch.Tensor:
    """Scan the breakpoints ``ts`` (r, L) (ascending, variables ``order``) of ``rows`` in
    doubling blocks; write k*, t*, p* = Wᵀd*, c̃ = Σ_passed (bound − x)·w into ``out``.
    Returns the mask (over ``rows``) of rows whose Cauchy point was found within L."""
    r, length = ts.shape
    two_m = p0.shape[1]
    dev, dt = ts.device, ts.dtype
    found = torch.zeros(r, dtype=torch.bool, device=dev)
    carry_g2 = torch.zeros(r, dtype=dt, device=dev)
    carry_p = torch.zeros(r, two_m, dtype=dt, device=dev)
    carry_c = torch.zeros(r, two_m, dtype=dt, device=dev)
    start, size = 0, first_block
    while start < length and not bool(found.all()):
        stop = min(length, start + size)
        local = torch.nonzero(~found).squeeze(1)
        sub = rows[local]
        idx = order[local, start:stop]                       # (q, blk)
        tb = ts[local, start:stop]
        finite = torch.isfinite(tb)
        gb = torch.where(finite, torch.gather(g[sub], 1, idx), torch.zeros_like(tb))
        zb = torch.where(finite, tb, torch.zeros_like(tb)) * -gb   # bound − x of each breakpoint variable
        wb = memory.transpose(1, 2)[sub.unsqueeze(1), idx] * scale[sub].unsqueeze(1)   # rows of W: (q, blk, 2m)
        # segment k (k breakpoints passed), k = start .. stop−1: exclusive prefix sums
        inc_g2 = gb * gb
        inc_p = wb * gb.unsqueeze(2)
        inc_c = wb * zb.unsqueeze(2)
        cum_g2 = carry_g2[local].unsqueeze(1) + torch.cumsum(inc_g2, 1) - inc_g2
        cum_p = carry_p[local].unsqueeze(1) + torch.cumsum(inc_p, 1) - inc_p
        cum_c = carry_c[local].unsqueeze(1) + torch.cumsum(inc_c, 1) - inc_c
        g2_k = g2_total[sub].unsqueeze(1) - cum_g2           # Σ g_i² over variables still moving
        p_k = p0[sub].unsqueeze(1) + cum_p                   # Wᵀ d_k, (q, blk, 2m)
        mp_k = torch.bmm(p_k, big_m[sub])                    # (M p_k)ᵀ, M symmetric
        f2_k = theta[sub].unsqueeze(1) * g2_k - (p_k * mp_k).sum(2)
        previous = ts[local, start - 1:start] if start > 0 else torch.zeros_like(tb[:, :1])
        t_start = torch.cat([previous, tb[:, :-1]], 1)
        t_start = torch.where(torch.isfinite(t_start), t_start, torch.zeros_like(t_start))
        f1_k = -g2_k - (cum_c * mp_k).sum(2) + t_start * f2_k
        f2_safe = torch.maximum(f2_k, f2_floor[sub].unsqueeze(1))
        dtm = -f1_k / torch.where(f2_safe > 0, f2_safe, torch.ones_like(f2_safe))
        nothing_left = g2_k <= 0
        stop_here = (dtm < tb - t_start) | ~finite | nothing_left
        hit = stop_here.any(1)
        first = torch.argmax(stop_here.to(torch.int8), dim=1)
        ar = torch.arange(local.numel(), device=dev)
        dtm_first = torch.where(nothing_left[ar, first], torch.zeros_like(t_start[:, 0]),
                                dtm[ar, first].clamp_min(0.0))
        rows_hit = sub[hit]
        out.k[rows_hit] = start + first[hit]
        out.t[rows_hit] = (t_start[ar, first] + dtm_first)[hit]
        out.p[rows_hit] = p_k[ar, first][hit]
        out.c[rows_hit] = cum_c[ar, first][hit]
        found[local[hit]] = True
        carry_g2[local] = cum_g2[:, -1] + inc_g2[:, -1]
        carry_p[local] = cum_p[:, -1] + inc_p[:, -1]
        carry_c[local] = cum_c[:, -1] + inc_c[:, -1]
        start, size = stop, size * 2
    if length == g.shape[1] and not bool(found.all()):
        # all n breakpoints passed (every variable hit its bound): the Cauchy point is the last one
        local = torch.nonzero(~found).squeeze(1)
        sub = rows[local]
        out.k[sub] = length
        last = ts[local, -1]
        out.t[sub] = torch.where(torch.isfinite(last), last, torch.zeros_like(last))
        out.p[sub] = p0[sub] + carry_p[local]
        out.c[sub] = carry_c[local]
        found[local] = True
    return found


def _cauchy_point(x: torch.Tensor, g: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                  memory: torch.Tensor, theta: torch.Tensor, big_m: torch.Tensor, p0_raw: torch.Tensor,
                  active: torch.Tensor, first_block: int = 32) -> tuple[torch.Tensor, ...]:
    """Generalized Cauchy point of every row in ``active`` (the others get x^c = x).

    ``p0_raw`` = [Y S]ᵀ d for the steepest-descent d (computed with the memory update).
    Returns x^c (b, n), the mask of variables free at x^c, c = Wᵀ(x^c − x), p* = Wᵀd*
    (d* the steepest-descent direction on the variables still moving at x^c) and t*.
    """
    b, n = x.shape
    two_m = memory.shape[1]
    fixed0, moving, d = _steepest_descent(x, g, lower, upper)
    # breakpoints t_i: where x_i + t·d_i reaches its bound (inf for variables that do not move)
    bound = torch.where(g < 0, upper, lower)
    t = torch.where(moving, (bound - x) / torch.where(moving, d, torch.ones_like(d)), torch.full_like(x, float("inf")))
    scale = _s_scale(theta, two_m)
    p0 = p0_raw * scale                                      # Wᵀ d
    g2_total = (d * d).sum(1)                                # ‖d‖²
    f2_org = theta * g2_total - (p0 * _bmv(big_m, p0)).sum(1)
    f2_floor = EPS * f2_org
    out = _Scan(b, two_m, x, p0)
    todo = torch.nonzero(active & (g2_total > 0)).squeeze(1)  # nothing moves: x^c = x
    passed = torch.zeros_like(moving)
    if todo.numel():
        k0 = min(n, first_block)
        ts, order = torch.topk(t[todo], k0, dim=1, largest=False, sorted=True)
        found = _scan_breakpoints(out, todo, ts, order, g, memory, scale, theta, big_m, p0, g2_total,
                                  f2_floor, k0)
        done = todo[found]
        positions = torch.arange(k0, device=x.device).unsqueeze(0) < out.k[done].unsqueeze(1)
        passed[done] = torch.zeros_like(passed[done]).scatter_(1, order[found], positions)
        rest = todo[~found]
        if rest.numel():  # a Cauchy point beyond the first block: sort those rows fully
            ts, order = torch.sort(t[rest], dim=1, stable=True)
            _scan_breakpoints(out, rest, ts, order, g, memory, scale, theta, big_m, p0, g2_total,
                              f2_floor, 2 * k0)
            positions = torch.arange(n, device=x.device).unsqueeze(0) < out.k[rest].unsqueeze(1)
            passed[rest] = torch.zeros_like(passed[rest]).scatter_(1, order, positions)
    t_star = out.t * active
    passed &= moving
    xc = torch.where(passed, bound, x + t_star.unsqueeze(1) * d)
    xc = torch.minimum(torch.maximum(xc, lower), upper)
    free = ~passed & ~fixed0
    c = out.c + t_star.unsqueeze(1) * out.p                  # Wᵀ(x^c − x)
    return xc, free, c, out.p, t_star


_GRAM_BUCKETS = (16, 64, 256)


def _update_gram(gram: torch.Tensor, free_prev: torch.Tensor, memory: torch.Tensor, free: torch.Tensor,
                 rows: torch.Tensor) -> torch.Tensor:
    """gram = [Y S]ᵀ diag(free_prev) [Y S], brought to the new free sets ``free`` on the rows
    in mask ``rows``: + w_i w_iᵀ for each entering and − w_i w_iᵀ for each leaving variable.
    Rows are grouped by their number of changes (padding within a group only)."""
    change = (free != free_prev) & rows.unsqueeze(1)
    counts = change.sum(1)
    if not bool((counts > 0).any()):
        return gram
    entries = torch.nonzero(change)                          # (N, 2), row-major
    row_of, col_of = entries[:, 0], entries[:, 1]
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(entries.shape[0], device=free.device) - starts[row_of]
    sign_of = torch.where(free[row_of, col_of], 1.0, -1.0).to(memory.dtype)
    gram = gram.clone()
    low = 0
    limits = [limit for limit in _GRAM_BUCKETS if limit < free.shape[1]] + [free.shape[1]]
    for limit in limits:
        bucket = (counts > low) & (counts <= limit)
        low = limit
        if not bool(bucket.any()):
            continue
        brows = torch.nonzero(bucket).squeeze(1)
        width = int(counts[brows].max())
        local = torch.full_like(counts, -1)
        local[brows] = torch.arange(brows.numel(), device=free.device)
        mine = local[row_of] >= 0
        idx = torch.zeros(brows.numel(), width, dtype=torch.int64, device=free.device)
        sign = torch.zeros(brows.numel(), width, dtype=memory.dtype, device=free.device)
        idx[local[row_of[mine]], position[mine]] = col_of[mine]
        sign[local[row_of[mine]], position[mine]] = sign_of[mine]
        cols = memory.transpose(1, 2)[brows.unsqueeze(1), idx]   # (q, width, 2m)
        gram[brows] += torch.bmm((cols * sign.unsqueeze(2)).transpose(1, 2), cols)
    return gram


def _subspace_step(x: torch.Tensor, g: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                   memory: torch.Tensor, theta: torch.Tensor, k_mat: torch.Tensor, big_m: torch.Tensor,
                   gram: torch.Tensor, xc: torch.Tensor, free: torch.Tensor, c: torch.Tensor,
                   p_star: torch.Tensor, t_star: torch.Tensor) -> torch.Tensor:
    """x̄: the minimiser of the model over the free variables from x^c, kept in the box.

    With h = ZZᵀ(g + θ(x^c − x)) = (1 − θt*)·ZZᵀg and A = WᵀZZᵀW (from ``gram``):
    r̂ = Zᵀ(h − W M c), WᵀZ r̂ = −(1 − θt*)·p* − A M c, and
    d_F = −r̂/θ − ZᵀW (K − A/θ)⁻¹ WᵀZ r̂ / θ² = −h/θ + ZᵀW (M c/θ − v/θ²).
    """
    th = theta.unsqueeze(1)
    freef = free.to(x.dtype)
    shrink = 1.0 - th * t_star.unsqueeze(1)
    h = shrink * g * freef
    scale = _s_scale(theta, c.shape[1])
    a_mat = gram * scale.unsqueeze(2) * scale.unsqueeze(1)   # A = Wᵀ Z Zᵀ W
    mc = _bmv(big_m, c)
    b_vec = -shrink * p_star - _bmv(a_mat, mc)
    v, info = torch.linalg.solve_ex(k_mat - a_mat / theta.view(-1, 1, 1), b_vec.unsqueeze(2))
    v = torch.where((info == 0).view(-1, 1), v.squeeze(2), torch.zeros_like(b_vec))
    u = (mc / th - v / (th * th)) * scale
    step = (-h / th + torch.bmm(u.unsqueeze(1), memory).squeeze(1)) * freef
    step = torch.where(torch.isfinite(step), step, torch.zeros_like(step))
    projected = torch.minimum(torch.maximum(xc + step, lower), upper)
    descent = ((projected - x) * g).sum(1) <= 0
    if bool(descent.all()):
        return projected
    # Morales–Nocedal: not a descent direction after projection: truncate the step to the box
    ratio = torch.full_like(step, float("inf"))
    up, down = step > 0, step < 0
    ratio = torch.where(up, (upper - xc) / torch.where(up, step, torch.ones_like(step)), ratio)
    ratio = torch.where(down, (lower - xc) / torch.where(down, step, -torch.ones_like(step)), ratio)
    alpha, ibd = ratio.min(dim=1)
    alpha = alpha.clamp(min=0.0, max=1.0)
    truncated = xc + alpha.unsqueeze(1) * step
    rows = torch.arange(x.shape[0], device=x.device)
    limited = rows[alpha < 1.0]
    at = torch.where(step[rows, ibd] > 0, upper[rows, ibd], lower[rows, ibd])
    truncated[limited, ibd[limited]] = at[limited]
    truncated = torch.minimum(torch.maximum(truncated, lower), upper)
    return torch.where(descent.unsqueeze(1), projected, truncated)


@dataclass
class _Direction:
    xbar: torch.Tensor
    d: torch.Tensor
    dg0: torch.Tensor
    stpmax: torch.Tensor
    stp: torch.Tensor
    ok: torch.Tensor      # False where the memory's middle matrix broke down
    gram: torch.Tensor    # brought to the new free sets
    free: torch.Tensor


def _direction(x: torch.Tensor, g: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
               memory: torch.Tensor, theta: torch.Tensor, SY: torch.Tensor, SS: torch.Tensor,
               stamp: torch.Tensor, count: torch.Tensor, nit: torch.Tensor, boxed: torch.Tensor,
               gram: torch.Tensor, free_prev: torch.Tensor, p0: torch.Tensor, active: torch.Tensor) -> _Direction:
    """Cauchy point, subspace step, search direction and first trial step of every row."""
    b = x.shape[0]
    if memory.shape[1]:
        k_mat, big_m, ok = _middle_matrices(SY, SS, stamp, theta)
    else:
        k_mat = big_m = x.new_zeros(b, 0, 0)
        ok = torch.ones(b, dtype=torch.bool, device=x.device)
    run = active & ok
    xc, free, c, p_star, t_star = _cauchy_point(x, g, lower, upper, memory, theta, big_m, p0, run)
    has_memory = count > 0
    gram = _update_gram(gram, free_prev, memory, free, run & has_memory)
    subspace = run & has_memory & free.any(1)
    if bool(subspace.any()):
        xbar = torch.where(subspace.unsqueeze(1), _subspace_step(
            x, g, lower, upper, memory, theta, k_mat, big_m, gram, xc, free, c, p_star, t_star), xc)
    else:
        xbar = xc
    d = xbar - x
    dg0 = (g * d).sum(1)
    # largest feasible step along d (1 on a problem's first iteration, as SciPy)
    ratio = torch.full_like(d, BIG)
    up, down = d > 0, d < 0
    ratio = torch.where(up, (upper - x) / torch.where(up, d, torch.ones_like(d)), ratio)
    ratio = torch.where(down, (lower - x) / torch.where(down, d, -torch.ones_like(d)), ratio)
    stpmax = ratio.amin(1).clamp(max=BIG) if d.shape[1] else torch.full_like(dg0, BIG)
    first = nit == 0
    stpmax = torch.where(first, torch.ones_like(stpmax), torch.maximum(stpmax, torch.ones_like(stpmax)))
    dnorm = d.norm(dim=1)
    stp = torch.where(first & ~boxed, torch.minimum(1.0 / dnorm.clamp_min(1e-300), stpmax), torch.ones_like(stpmax))
    return _Direction(xbar, d, dg0, stpmax, stp, ok, gram, free)


def _commit_direction(st: _State, rows: torch.Tensor, direction: _Direction, sel: torch.Tensor) -> None:
    """Start the line search of ``rows`` with ``direction``'s entries ``sel`` (same length)."""
    if rows.numel() == 0:
        return
    st.xbar[rows], st.d[rows] = direction.xbar[sel], direction.d[sel]
    st.gram[rows], st.free_prev[rows] = direction.gram[sel], direction.free[sel]
    st.dg0[rows], st.stpmax[rows], st.stp[rows] = direction.dg0[sel], direction.stpmax[sel], direction.stp[sel]
    st.lo[rows] = 0.0
    st.f_lo[rows] = st.f[rows]
    st.dg_lo[rows] = direction.dg0[sel]
    st.g_lo[rows] = st.g[rows]
    st.hi[rows] = 0.0
    st.bracketed[rows] = False
    st.width[rows] = BIG
    st.width1[rows] = 2 * BIG
    st.ls_evals[rows] = 0
    st.phase[rows] = 1


def _new_directions(st: _State, need: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Search directions for the rows in mask ``need``. Returns (rows that failed for good,
    rows that were retried with a fresh memory and failed again): both end as line search
    failures. Rows whose direction is no descent direction, or whose memory broke down, are
    retried once with an empty memory (SciPy refreshes the memory in both cases)."""
    none = torch.zeros(0, dtype=torch.int64, device=need.device)
    if not bool(need.any()):
        return none, none
    rows = torch.nonzero(need).squeeze(1)
    if rows.numel() * 2 >= st.slots:   # most rows: work on the full tensors, no copies
        direction = _direction(st.x, st.g, st.lower, st.upper, st.W, st.theta, st.SY, st.SS, st.stamp,
                               st.count, st.nit, st.boxed, st.gram, st.free_prev, st.p0, need)
        sel = rows
    else:
        direction = _direction(st.x[rows], st.g[rows], st.lower[rows], st.upper[rows], st.W[rows],
                               st.theta[rows], st.SY[rows], st.SS[rows], st.stamp[rows], st.count[rows],
                               st.nit[rows], st.boxed[rows], st.gram[rows], st.free_prev[rows], st.p0[rows],
                               torch.ones_like(rows, dtype=torch.bool))
        sel = torch.arange(rows.numel(), device=rows.device)
    ok, descent = direction.ok[sel], direction.dg0[sel] < 0
    good = ok & descent
    _commit_direction(st, rows[good], direction, sel[good])
    has_memory = st.count[rows] > 0
    failed = rows[ok & ~descent & ~has_memory]
    retry = rows[~ok | (~descent & has_memory)]
    if retry.numel() == 0:
        return failed, none
    st.reset_memory(retry)
    q, n = retry.numel(), st.x.shape[1]
    again = _direction(st.x[retry], st.g[retry], st.lower[retry], st.upper[retry], st.x.new_zeros(q, 0, n),
                       st.theta[retry], st.x.new_zeros(q, 0, 0), st.x.new_zeros(q, 0, 0),
                       st.stamp[retry][:, :0], st.count[retry], st.nit[retry], st.boxed[retry],
                       st.x.new_zeros(q, 0, 0), st.free_prev[retry], st.x.new_zeros(q, 0),
                       torch.ones_like(retry, dtype=torch.bool))
    again.gram = st.gram[retry]   # zero: the memory was just emptied
    good = again.dg0 < 0
    _commit_direction(st, retry[good], again, torch.nonzero(good).squeeze(1))
    return failed, retry[~good]


def _trial_points(st: _State) -> torch.Tensor:
    """x + stp·d for every row (exactly x̄ at stp = 1), kept in the box."""
    stp = st.stp.unsqueeze(1)
    point = torch.where(stp == 1.0, st.xbar, st.x + stp * st.d)
    return torch.minimum(torch.maximum(point, st.lower), st.upper)


def _accept_step(st: _State, mask: torch.Tensor, new_x: torch.Tensor, new_f: torch.Tensor,
                 new_g: torch.Tensor, curvature_eps: float) -> None:
    """Move the rows in ``mask`` to their new iterate; (s, y) enters the memory unless
    sᵀy ≤ curvature_eps·‖y‖². One product of the memory with [y, s, Fy, Fs, d] updates SᵀY,
    SᵀS, the gram's new row and column, and gives [Y S]ᵀd for the next Cauchy search."""
    s = new_x - st.x
    y = new_g - st.g
    m2 = mask.unsqueeze(1)
    st.x = torch.where(m2, new_x, st.x)
    st.f = torch.where(mask, new_f, st.f)
    st.g = torch.where(m2, new_g, st.g)
    st.nit += mask
    sy = (s * y).sum(1)
    yy = (y * y).sum(1)
    keep = mask & (sy > curvature_eps * yy) & torch.isfinite(sy) & torch.isfinite(yy) & (yy > 0)
    m = st.m
    rows = torch.nonzero(keep).squeeze(1)
    if rows.numel():
        slot = st.count[rows] % m
        st.W[rows, slot] = y[rows]
        st.W[rows, m + slot] = s[rows]
        st.stamp[rows, slot] = st.count[rows]
        st.count[rows] += 1
        st.theta[rows] = yy[rows] / sy[rows]
    moved = torch.nonzero(mask & (st.count > 0)).squeeze(1)
    if moved.numel() == 0:
        return
    _, _, d = _steepest_descent(st.x, st.g, st.lower, st.upper)
    freef = st.free_prev.to(y.dtype)
    vectors = torch.stack([y, s, y * freef, s * freef, d], 1)   # (b, 5, n)
    if moved.numel() * 2 >= st.slots:
        products = torch.bmm(st.W, vectors.transpose(1, 2))      # (b, 2m, 5)
    else:
        products = torch.bmm(st.W[moved], vectors[moved].transpose(1, 2))
        full = products.new_zeros(st.slots, 2 * m, 5)
        full[moved] = products
        products = full
    st.p0[moved] = products[moved, :, 4]
    if rows.numel() == 0:
        return
    products = products[rows]
    y_s = products[:, :m, 1]   # y_iᵀ s_new
    s_y = products[:, m:, 0]   # s_iᵀ y_new
    s_s = products[:, m:, 1]
    st.SY[rows, :, slot] = s_y
    st.SY[rows, slot, :] = y_s
    st.SS[rows, :, slot] = s_s
    st.SS[rows, slot, :] = s_s
    # the gram's rows and columns of the new pair, on the current free set
    st.gram[rows, :, slot] = products[:, :, 2]
    st.gram[rows, slot, :] = products[:, :, 2]
    st.gram[rows, :, m + slot] = products[:, :, 3]
    st.gram[rows, m + slot, :] = products[:, :, 3]


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
) -> TorchLBFGSBResult:
    """Minimise M independent problems ``objective`` over the boxes [lower, upper] (all (M, n)).

    ``memory``, ``factr``, ``pgtol``, ``max_iter`` and ``max_fun`` mean what they mean in SciPy's
    ``fmin_l_bfgs_b`` (m, factr, pgtol, maxiter, maxfun). ``batch``: problems held at once
    (rows of the lock-step tensors). Infinite bounds are allowed. Everything runs on
    ``x0``'s device in float64.
    """
    if memory < 1:
        raise ValueError("memory must be >= 1")
    device = x0.device
    x0 = x0.detach().to(torch.float64)
    lower = lower.detach().to(device, torch.float64).expand_as(x0)
    upper = upper.detach().to(device, torch.float64).expand_as(x0)
    total, n = x0.shape
    out_x = x0.clone()
    out_f = torch.full((total,), float("nan"), dtype=torch.float64, device=device)
    out_nit = torch.zeros(total, dtype=torch.int64, device=device)
    out_nfev = torch.zeros(total, dtype=torch.int64, device=device)
    out_status = torch.full((total,), -1, dtype=torch.int64, device=device)
    if total == 0:
        return TorchLBFGSBResult(out_x, out_f, out_nit, out_nfev, out_status)
    st = _State(max(1, min(batch, total)), n, memory, device)
    tol = factr * EPS
    next_problem = 0

    def admit() -> None:
        nonlocal next_problem
        free_rows = torch.nonzero(st.problem < 0).squeeze(1)
        count = min(free_rows.numel(), total - next_problem)
        if count <= 0:
            return
        rows = free_rows[:count]
        problems = torch.arange(next_problem, next_problem + count, device=device)
        next_problem += count
        st.problem[rows] = problems
        st.lower[rows], st.upper[rows] = lower[problems], upper[problems]
        st.boxed[rows] = (torch.isfinite(lower[problems]) & torch.isfinite(upper[problems])).all(1)
        st.x[rows] = torch.minimum(torch.maximum(x0[problems], lower[problems]), upper[problems])
        st.phase[rows] = 0
        st.nit[rows] = 0
        st.nfev[rows] = 0
        st.reset_memory(rows)

    def finish(rows: torch.Tensor, status: int | torch.Tensor) -> None:
        if rows.numel() == 0:
            return
        problems = st.problem[rows]
        out_x[problems], out_f[problems] = st.x[rows], st.f[rows]
        out_nit[problems], out_nfev[problems] = st.nit[rows], st.nfev[rows]
        out_status[problems] = status if isinstance(status, torch.Tensor) else torch.full_like(problems, status)
        st.problem[rows] = -1

    admit()
    while True:
        occupied = st.problem >= 0
        busy = int(occupied.sum())
        if busy == 0:
            break
        if next_problem == total and busy * 2 <= st.slots and st.slots > 1:
            st = st.take(torch.nonzero(occupied).squeeze(1))   # compact: the batch has emptied
            occupied = st.problem >= 0
        initial = st.phase == 0
        points = torch.where(initial.unsqueeze(1), st.x, _trial_points(st))
        if bool(occupied.all()):
            values, grads = objective(st.problem, points)
            values = values.detach().to(device, torch.float64)
            grads = grads.detach().to(device, torch.float64)
        else:
            rows = torch.nonzero(occupied).squeeze(1)
            v, gr = objective(st.problem[rows], points[rows])
            values = torch.zeros(st.slots, dtype=torch.float64, device=device)
            grads = torch.zeros(st.slots, n, dtype=torch.float64, device=device)
            values[rows], grads[rows] = v.detach().to(device, torch.float64), gr.detach().to(device, torch.float64)
        st.nfev += occupied
        need = torch.zeros_like(occupied)

        # ---- first evaluation of a problem
        init = occupied & initial
        if bool(init.any()):
            st.f = torch.where(init, values, st.f)
            st.g = torch.where(init.unsqueeze(1), grads, st.g)
            done = init & (projected_gradient_norm(st.x, st.g, st.lower, st.upper) <= pgtol)
            finish(torch.nonzero(done).squeeze(1), CONVERGED_PGTOL)
            need |= init & ~done

        # ---- line search step (computed for every row, committed where ls)
        ls = occupied & ~initial
        if bool(ls.any()):
            fp, gp, stp = values, grads, st.stp
            dp = (gp * st.d).sum(1)
            f0, dg0 = st.f, st.dg0
            evals = st.ls_evals + ls
            lo, f_lo, dg_lo = st.lo, st.f_lo, st.dg_lo
            hi, f_hi, dg_hi = st.hi, st.f_hi, st.dg_hi
            bracketed, stpmax = st.bracketed, st.stpmax
            finite = torch.isfinite(fp) & torch.isfinite(dp)
            armijo = finite & (fp <= f0 + ftol_ls * stp * dg0) & ((lo == 0) | (fp < f_lo))
            curvature = dp.abs() <= gtol_ls * (-dg0)
            at_max = armijo & ~curvature & (dp < 0) & ~bracketed & (stp >= stpmax)
            accept = (armijo & curvature) | at_max
            too_long = ~armijo                                 # stp becomes an end of the bracket
            overshoot = armijo & ~accept & (dp > 0)           # decrease, slope turned positive
            short = armijo & ~accept & (dp < 0)               # decrease, slope still steep
            moves_lo = overshoot | short
            # the old lo becomes hi when the slope at stp points back towards it (Nocedal &
            # Wright, Algorithms 3.5/3.6)
            swap = (overshoot & ~bracketed) | (moves_lo & bracketed & (dp * (hi - lo) >= 0))
            fp_safe = torch.where(finite, fp, torch.full_like(fp, 1e300))
            dp_safe = torch.where(finite, dp, torch.zeros_like(dp))
            new_hi = torch.where(too_long, stp, torch.where(swap, lo, hi))
            new_f_hi = torch.where(too_long, fp_safe, torch.where(swap, f_lo, f_hi))
            new_dg_hi = torch.where(too_long, dp_safe, torch.where(swap, dg_lo, dg_hi))
            new_lo = torch.where(moves_lo, stp, lo)
            new_f_lo = torch.where(moves_lo, fp, f_lo)
            new_dg_lo = torch.where(moves_lo, dp, dg_lo)
            new_bracketed = bracketed | too_long | overshoot
            # next trial: Moré–Thuente case 1 after a rejected step, safeguarded cubic inside
            # a bracket, extrapolation (up to 4× the last advance) before one
            interp = _cubic_step(new_lo, new_f_lo, new_dg_lo, new_hi, new_f_hi, new_dg_hi)
            interp = torch.where(new_f_hi < 1e300, interp, 0.5 * (new_lo + new_hi))
            interp = torch.where(too_long, _too_long_step(lo, f_lo, dg_lo, stp, fp, dp), interp)
            extrap = torch.minimum(stpmax, stp + 4.0 * (stp - lo))
            next_stp = torch.where(new_bracketed, interp, extrap)
            width = (new_hi - new_lo).abs()
            # Moré–Thuente: bisect when the bracket did not shrink to 2/3 in two steps
            slow = new_bracketed & (width >= 0.66 * st.width1)
            half = 0.5 * (new_lo + new_hi)
            next_stp = torch.where(slow, torch.where(too_long, torch.minimum(next_stp, half), half), next_stp)
            stalled = new_bracketed & (width <= 1e-12 * torch.maximum(new_hi, new_lo).clamp_min(1e-300))
            exhausted = (evals >= max_ls) | stalled | (st.nfev >= max_fun)
            fallback = ~accept & exhausted & (new_lo > 0)    # the best Armijo point found
            failed = ls & ~accept & exhausted & ~(new_lo > 0)
            take = ls & (accept | fallback)
            # commit
            l2 = ls.unsqueeze(1)
            st.g_lo = torch.where(l2 & moves_lo.unsqueeze(1), gp, st.g_lo)
            st.lo, st.f_lo, st.dg_lo = (torch.where(ls, a, b) for a, b in
                                        ((new_lo, lo), (new_f_lo, f_lo), (new_dg_lo, dg_lo)))
            st.hi, st.f_hi, st.dg_hi = (torch.where(ls, a, b) for a, b in
                                        ((new_hi, hi), (new_f_hi, f_hi), (new_dg_hi, dg_hi)))
            st.bracketed = torch.where(ls, new_bracketed, bracketed)
            st.width1 = torch.where(ls & new_bracketed, st.width, st.width1)
            st.width = torch.where(ls & new_bracketed, width, st.width)
            st.ls_evals = evals
            st.stp = torch.where(ls, torch.where(accept, stp, torch.where(fallback, new_lo, next_stp)), stp)
            if bool(take.any()):
                new_x = _trial_points(st)
                new_f = torch.where(accept, fp, new_f_lo)
                new_g = torch.where(accept.unsqueeze(1), gp, st.g_lo)
                f_old = st.f
                _accept_step(st, take, new_x, new_f, new_g, curvature_eps)
                pg = projected_gradient_norm(st.x, st.g, st.lower, st.upper)
                scale = torch.maximum(torch.maximum(f_old.abs(), new_f.abs()), torch.ones_like(new_f))
                status = torch.full_like(st.nit, -1)
                status = torch.where(st.nfev >= max_fun, MAX_FUN, status)
                status = torch.where(st.nit >= max_iter, MAX_ITER, status)
                status = torch.where((f_old - new_f) <= tol * scale, CONVERGED_FACTR, status)
                status = torch.where(pg <= pgtol, CONVERGED_PGTOL, status)
                stop = take & (status >= 0)
                stop_rows = torch.nonzero(stop).squeeze(1)
                finish(stop_rows, status[stop_rows])
                need |= take & ~stop
            if bool(failed.any()):
                out_of_budget = failed & (st.nfev >= max_fun)
                empty = failed & ~out_of_budget & (st.count == 0)
                retry = failed & ~out_of_budget & ~empty
                finish(torch.nonzero(out_of_budget).squeeze(1), MAX_FUN)
                finish(torch.nonzero(empty).squeeze(1), LINE_SEARCH_FAILED)
                st.reset_memory(torch.nonzero(retry).squeeze(1))
                need |= retry

        # ---- new search directions
        failed_rows, failed_again = _new_directions(st, need)
        finish(failed_rows, LINE_SEARCH_FAILED)
        finish(failed_again, LINE_SEARCH_FAILED)
        admit()
    return TorchLBFGSBResult(out_x, out_f, out_nit, out_nfev, out_status)
