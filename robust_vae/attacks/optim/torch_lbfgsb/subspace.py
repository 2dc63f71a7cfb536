"""Step 2: subspace minimisation from the Cauchy point, and the search direction.

Over the variables that are free at the Cauchy point, the model is minimised with the
Woodbury form of the reduced inverse Hessian: d_F = −r̂/θ − ZᵀW (K − WᵀZZᵀW/θ)⁻¹ WᵀZ r̂/θ²
(K = M⁻¹), free sets handled as masks. As in the Fortran code's ``formk``, the 2m×2m
matrix WᵀZZᵀW is updated, not recomputed: rank-one corrections for the variables that
entered or left the free set, plus the row and column of the newest pair (those come with
the memory update). The step is projected onto the box; if the projected point is not a
descent direction the unprojected step is truncated to the box instead (Morales & Nocedal
2011, as in SciPy's L-BFGS-B 3.0).

The search direction is d = x̄ − x, with the largest feasible step along it and the first
trial step of the line search.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robust_vae.attacks.optim.torch_lbfgsb.cauchy import cauchy_point
from robust_vae.attacks.optim.torch_lbfgsb.line_search import start_search
from robust_vae.attacks.optim.torch_lbfgsb.memory import middle_matrices
from robust_vae.attacks.optim.torch_lbfgsb.state import BIG, State, bmv, pad_identity, s_scale

GRAM_MIN_WIDTH = 8


def update_gram(gram: torch.Tensor, free_prev: torch.Tensor, memory: torch.Tensor, free: torch.Tensor,
                rows: torch.Tensor) -> torch.Tensor:
    """gram = [Y S]ᵀ diag(free_prev) [Y S], brought to the new free sets ``free`` on the rows
    in mask ``rows``: + w_i w_iᵀ for each entering and − w_i w_iᵀ for each leaving variable.
    Each row's changes are padded with zeros to a width that depends on its own number of
    changes only (the power of two ≥ max(changes, 8)), and rows of equal width share one
    batched product: neither the summation length nor the alignment of a row's block (a
    multiple of 64 bytes) depends on the other rows."""
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
    low, limit, most = 0, GRAM_MIN_WIDTH, int(counts.max())
    while low < most:
        bucket = (counts > low) & (counts <= limit)
        if bool(bucket.any()):
            _add_changes(gram, memory, torch.nonzero(bucket).squeeze(1), limit, row_of, col_of, position,
                         sign_of)
        low, limit = limit, 2 * limit
    return gram


def _add_changes(gram: torch.Tensor, memory: torch.Tensor, brows: torch.Tensor, limit: int,
                 row_of: torch.Tensor, col_of: torch.Tensor, position: torch.Tensor,
                 sign_of: torch.Tensor) -> None:
    """Add ± w_i w_iᵀ for the changed variables of the rows ``brows`` to ``gram`` (in place),
    their changes padded with zeros to ``limit``."""
    device = memory.device
    local = torch.full((gram.shape[0],), -1, dtype=torch.int64, device=device)
    local[brows] = torch.arange(brows.numel(), device=device)
    mine = local[row_of] >= 0
    idx = torch.zeros(brows.numel(), limit, dtype=torch.int64, device=device)
    sign = torch.zeros(brows.numel(), limit, dtype=memory.dtype, device=device)
    idx[local[row_of[mine]], position[mine]] = col_of[mine]
    sign[local[row_of[mine]], position[mine]] = sign_of[mine]
    cols = memory.transpose(1, 2)[brows.unsqueeze(1), idx]   # (q, limit, 2m)
    gram[brows] += torch.bmm((cols * sign.unsqueeze(2)).transpose(1, 2), cols)


def subspace_step(x: torch.Tensor, g: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
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
    two_m = c.shape[1]
    scale = s_scale(theta, two_m)
    a_mat = gram * scale.unsqueeze(2) * scale.unsqueeze(1)   # A = Wᵀ Z Zᵀ W
    mc = bmv(big_m, c)
    b_vec = -shrink * p_star - bmv(a_mat, mc)
    lhs = pad_identity(k_mat - a_mat / theta.view(-1, 1, 1))
    rhs = b_vec.new_zeros(b_vec.shape[0], lhs.shape[1], 1)
    rhs[:, :two_m, 0] = b_vec
    v, info = torch.linalg.solve_ex(lhs, rhs)
    v = torch.where((info == 0).view(-1, 1), v[:, :two_m, 0], torch.zeros_like(b_vec))
    u = (mc / th - v / (th * th)) * scale
    step = (-h / th + torch.bmm(u.unsqueeze(1), memory).squeeze(1)[:, :x.shape[1]]) * freef
    step = torch.where(torch.isfinite(step), step, torch.zeros_like(step))
    projected = torch.minimum(torch.maximum(xc + step, lower), upper)
    descent = ((projected - x) * g).sum(1) <= 0
    if bool(descent.all()):
        return projected
    return torch.where(descent.unsqueeze(1), projected, _truncated_step(x, lower, upper, xc, step))


def _truncated_step(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, xc: torch.Tensor,
                    step: torch.Tensor) -> torch.Tensor:
    """Morales–Nocedal: where the projected point is not a descent direction, the unprojected
    step from x^c truncated to the box."""
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
    return torch.minimum(torch.maximum(truncated, lower), upper)


@dataclass
class Direction:
    """The search direction of every row: the point x̄ at step 1, d = x̄ − x, the slope gᵀd, the
    largest feasible step, the first trial step, the gram brought to the new free sets."""

    xbar: torch.Tensor
    d: torch.Tensor
    dg0: torch.Tensor
    stpmax: torch.Tensor
    stp: torch.Tensor
    ok: torch.Tensor      # False where the memory's middle matrix broke down
    gram: torch.Tensor    # brought to the new free sets
    free: torch.Tensor


def direction(x: torch.Tensor, g: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
              memory: torch.Tensor, theta: torch.Tensor, SY: torch.Tensor, SS: torch.Tensor,
              stamp: torch.Tensor, count: torch.Tensor, nit: torch.Tensor, boxed: torch.Tensor,
              gram: torch.Tensor, free_prev: torch.Tensor, p0: torch.Tensor, active: torch.Tensor) -> Direction:
    """Cauchy point, subspace step, search direction and first trial step of every row."""
    b = x.shape[0]
    if memory.shape[1]:
        k_mat, big_m, ok = middle_matrices(SY, SS, stamp, theta)
    else:
        k_mat = big_m = x.new_zeros(b, 0, 0)
        ok = torch.ones(b, dtype=torch.bool, device=x.device)
    run = active & ok
    xc, free, c, p_star, t_star = cauchy_point(x, g, lower, upper, memory, theta, big_m, p0, run)
    has_memory = count > 0
    gram = update_gram(gram, free_prev, memory, free, run & has_memory)
    subspace = run & has_memory & free.any(1)
    if bool(subspace.any()):
        xbar = torch.where(subspace.unsqueeze(1), subspace_step(
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
    return Direction(xbar, d, dg0, stpmax, stp, ok, gram, free)


def commit_direction(st: State, rows: torch.Tensor, found: Direction, sel: torch.Tensor) -> None:
    """Start the line search of ``rows`` along ``found``'s entries ``sel`` (same length)."""
    if rows.numel() == 0:
        return
    st.gram[rows], st.free_prev[rows] = found.gram[sel], found.free[sel]
    start_search(st, rows, found.xbar[sel], found.d[sel], found.dg0[sel], found.stpmax[sel], found.stp[sel])


def new_directions(st: State, need: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Search directions for the rows in mask ``need``. Returns (rows that failed for good,
    rows that were retried with a fresh memory and failed again): both end as line search
    failures. Rows whose direction is no descent direction, or whose memory broke down, are
    retried once with an empty memory (SciPy refreshes the memory in both cases)."""
    none = torch.zeros(0, dtype=torch.int64, device=need.device)
    if not bool(need.any()):
        return none, none
    rows = torch.nonzero(need).squeeze(1)
    if rows.numel() * 2 >= st.slots:   # most rows: work on the full tensors, no copies
        found = direction(st.x, st.g, st.lower, st.upper, st.W, st.theta, st.SY, st.SS, st.stamp,
                          st.count, st.nit, st.boxed, st.gram, st.free_prev, st.p0, need)
        sel = rows
    else:
        found = direction(st.x[rows], st.g[rows], st.lower[rows], st.upper[rows], st.W[rows],
                          st.theta[rows], st.SY[rows], st.SS[rows], st.stamp[rows], st.count[rows],
                          st.nit[rows], st.boxed[rows], st.gram[rows], st.free_prev[rows], st.p0[rows],
                          torch.ones_like(rows, dtype=torch.bool))
        sel = torch.arange(rows.numel(), device=rows.device)
    ok, descent = found.ok[sel], found.dg0[sel] < 0
    good = ok & descent
    commit_direction(st, rows[good], found, sel[good])
    has_memory = st.count[rows] > 0
    failed = rows[ok & ~descent & ~has_memory]
    retry = rows[~ok | (~descent & has_memory)]
    if retry.numel() == 0:
        return failed, none
    return failed, _retry_without_memory(st, retry)


def _retry_without_memory(st: State, retry: torch.Tensor) -> torch.Tensor:
    """Empty the memory of ``retry`` and search again along the projected steepest descent;
    returns the rows for which that is no descent direction either."""
    st.reset_memory(retry)
    q, n = retry.numel(), st.x.shape[1]
    again = direction(st.x[retry], st.g[retry], st.lower[retry], st.upper[retry], st.x.new_zeros(q, 0, n),
                      st.theta[retry], st.x.new_zeros(q, 0, 0), st.x.new_zeros(q, 0, 0),
                      st.stamp[retry][:, :0], st.count[retry], st.nit[retry], st.boxed[retry],
                      st.x.new_zeros(q, 0, 0), st.free_prev[retry], st.x.new_zeros(q, 0),
                      torch.ones_like(retry, dtype=torch.bool))
    again.gram = st.gram[retry]   # zero: the memory was just emptied
    good = again.dg0 < 0
    commit_direction(st, retry[good], again, torch.nonzero(good).squeeze(1))
    return retry[~good]
