"""Step 1: the generalized Cauchy point, by a vectorised breakpoint scan.

The Cauchy point is the first local minimiser of the quadratic model along the projected
steepest-descent path x(t) = P(x − t·g), on the compact limited-memory model
B = θI − W M Wᵀ, W = [Y, θS]. The sequential breakpoint loop of the Fortran code is
replaced by prefix sums over the breakpoints sorted per problem: after passing k breakpoints
the path derivative at the segment start is f'_k = −Σ_{free} g_i² − c_kᵀ M p_k + t_k·f''_k
with f''_k = θ Σ_{free} g_i² − p_kᵀ M p_k, where p_k = Wᵀd_k and c_k = Wᵀ(x(t_k) − x)
restricted to the fixed variables are cumulative sums of rows of W. The first block of
breakpoints comes from ``topk``; the few problems whose Cauchy point lies further are fully
sorted and scanned in doubling blocks, until every problem has found the first local
minimiser of the model along its path. c = Wᵀ(x^c − x) and Wᵀ of the steepest descent
direction on the free variables fall out of the same prefix sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robust_vae.attacks.optim.torch_lbfgsb.state import EPS, bmv, s_scale, steepest_descent


class Scan:
    """Results of the breakpoint scan of the Cauchy search, one entry per row."""

    def __init__(self, b: int, two_m: int, like: torch.Tensor, p0: torch.Tensor) -> None:
        self.k = torch.zeros(b, dtype=torch.int64, device=like.device)
        self.t = torch.zeros(b, dtype=like.dtype, device=like.device)
        self.p = p0.clone()
        self.c = torch.zeros_like(p0)


@dataclass
class PathModel:
    """What the scan needs of the model along the path, one row per problem: the gradient g
    (b, n), the memory (b, 2m, ≥ n; zero beyond n) with its s-half ``scale`` (b, 2m), θ (b,), the middle matrix
    M (b, 2m, 2m), p0 = Wᵀd (b, 2m), ‖d‖² (b,) and the floor of f'' (b,)."""

    g: torch.Tensor
    memory: torch.Tensor
    scale: torch.Tensor
    theta: torch.Tensor
    big_m: torch.Tensor
    p0: torch.Tensor
    g2_total: torch.Tensor
    f2_floor: torch.Tensor


@dataclass
class _Carry:
    """Sums over the breakpoints passed in earlier blocks, one row per scanned row."""

    g2: torch.Tensor
    p: torch.Tensor
    c: torch.Tensor


def scan_breakpoints(out: Scan, rows: torch.Tensor, ts: torch.Tensor, order: torch.Tensor,
                     path: PathModel, first_block: int) -> torch.Tensor:
    """Scan the breakpoints ``ts`` (r, L) (ascending, variables ``order``) of ``rows`` in
    doubling blocks; write k*, t*, p* = Wᵀd*, c̃ = Σ_passed (bound − x)·w into ``out``.
    Returns the mask (over ``rows``) of rows whose Cauchy point was found within L."""
    r, length = ts.shape
    two_m = path.p0.shape[1]
    dev, dt = ts.device, ts.dtype
    found = torch.zeros(r, dtype=torch.bool, device=dev)
    carry = _Carry(torch.zeros(r, dtype=dt, device=dev), torch.zeros(r, two_m, dtype=dt, device=dev),
                   torch.zeros(r, two_m, dtype=dt, device=dev))
    start, size = 0, first_block
    while start < length and not bool(found.all()):
        stop = min(length, start + size)
        _scan_block(out, rows, ts, order, path, found, carry, start, stop)
        start, size = stop, size * 2
    if length == path.g.shape[1] and not bool(found.all()):
        # all n breakpoints passed (every variable hit its bound): the Cauchy point is the last one
        local = torch.nonzero(~found).squeeze(1)
        sub = rows[local]
        out.k[sub] = length
        last = ts[local, -1]
        out.t[sub] = torch.where(torch.isfinite(last), last, torch.zeros_like(last))
        out.p[sub] = path.p0[sub] + carry.p[local]
        out.c[sub] = carry.c[local]
        found[local] = True
    return found


def _scan_block(out: Scan, rows: torch.Tensor, ts: torch.Tensor, order: torch.Tensor, path: PathModel,
                found: torch.Tensor, carry: _Carry, start: int, stop: int) -> None:
    """Breakpoints ``start`` .. ``stop`` − 1 of the rows not yet ``found``: record the rows whose
    Cauchy point lies in this block in ``out`` and ``found``; advance ``carry`` for the others."""
    local = torch.nonzero(~found).squeeze(1)
    sub = rows[local]
    idx = order[local, start:stop]                       # (q, blk)
    tb = ts[local, start:stop]
    finite = torch.isfinite(tb)
    gb = torch.where(finite, torch.gather(path.g[sub], 1, idx), torch.zeros_like(tb))
    zb = torch.where(finite, tb, torch.zeros_like(tb)) * -gb   # bound − x of each breakpoint variable
    wb = path.memory.transpose(1, 2)[sub.unsqueeze(1), idx] * path.scale[sub].unsqueeze(1)   # rows of W
    # segment k (k breakpoints passed), k = start .. stop−1: exclusive prefix sums
    inc_g2 = gb * gb
    inc_p = wb * gb.unsqueeze(2)
    inc_c = wb * zb.unsqueeze(2)
    cum_g2 = carry.g2[local].unsqueeze(1) + torch.cumsum(inc_g2, 1) - inc_g2
    cum_p = carry.p[local].unsqueeze(1) + torch.cumsum(inc_p, 1) - inc_p
    cum_c = carry.c[local].unsqueeze(1) + torch.cumsum(inc_c, 1) - inc_c
    g2_k = path.g2_total[sub].unsqueeze(1) - cum_g2      # Σ g_i² over variables still moving
    p_k = path.p0[sub].unsqueeze(1) + cum_p              # Wᵀ d_k, (q, blk, 2m)
    mp_k = torch.bmm(p_k, path.big_m[sub])               # (M p_k)ᵀ, M symmetric
    f2_k = path.theta[sub].unsqueeze(1) * g2_k - (p_k * mp_k).sum(2)
    previous = ts[local, start - 1:start] if start > 0 else torch.zeros_like(tb[:, :1])
    t_start = torch.cat([previous, tb[:, :-1]], 1)
    t_start = torch.where(torch.isfinite(t_start), t_start, torch.zeros_like(t_start))
    f1_k = -g2_k - (cum_c * mp_k).sum(2) + t_start * f2_k
    f2_safe = torch.maximum(f2_k, path.f2_floor[sub].unsqueeze(1))
    dtm = -f1_k / torch.where(f2_safe > 0, f2_safe, torch.ones_like(f2_safe))
    nothing_left = g2_k <= 0
    stop_here = (dtm < tb - t_start) | ~finite | nothing_left
    hit = stop_here.any(1)
    first = torch.argmax(stop_here.to(torch.int8), dim=1)
    ar = torch.arange(local.numel(), device=ts.device)
    dtm_first = torch.where(nothing_left[ar, first], torch.zeros_like(t_start[:, 0]),
                            dtm[ar, first].clamp_min(0.0))
    rows_hit = sub[hit]
    out.k[rows_hit] = start + first[hit]
    out.t[rows_hit] = (t_start[ar, first] + dtm_first)[hit]
    out.p[rows_hit] = p_k[ar, first][hit]
    out.c[rows_hit] = cum_c[ar, first][hit]
    found[local[hit]] = True
    carry.g2[local] = cum_g2[:, -1] + inc_g2[:, -1]
    carry.p[local] = cum_p[:, -1] + inc_p[:, -1]
    carry.c[local] = cum_c[:, -1] + inc_c[:, -1]


def cauchy_point(x: torch.Tensor, g: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                 memory: torch.Tensor, theta: torch.Tensor, big_m: torch.Tensor, p0_raw: torch.Tensor,
                 active: torch.Tensor, first_block: int = 32
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generalized Cauchy point of every row in ``active`` (the others get x^c = x).

    ``p0_raw`` = [Y S]ᵀ d for the steepest-descent d (computed with the memory update).
    Returns x^c (b, n), the mask of variables free at x^c, c = Wᵀ(x^c − x), p* = Wᵀd*
    (d* the steepest-descent direction on the variables still moving at x^c) and t*.
    """
    b, n = x.shape
    two_m = memory.shape[1]
    fixed0, moving, d = steepest_descent(x, g, lower, upper)
    # breakpoints t_i: where x_i + t·d_i reaches its bound (inf for variables that do not move)
    bound = torch.where(g < 0, upper, lower)
    t = torch.where(moving, (bound - x) / torch.where(moving, d, torch.ones_like(d)), torch.full_like(x, float("inf")))
    scale = s_scale(theta, two_m)
    p0 = p0_raw * scale                                      # Wᵀ d
    g2_total = (d * d).sum(1)                                # ‖d‖²
    f2_org = theta * g2_total - (p0 * bmv(big_m, p0)).sum(1)
    f2_floor = EPS * f2_org
    path = PathModel(g, memory, scale, theta, big_m, p0, g2_total, f2_floor)
    out = Scan(b, two_m, x, p0)
    todo = torch.nonzero(active & (g2_total > 0)).squeeze(1)  # nothing moves: x^c = x
    passed = torch.zeros_like(moving)
    if todo.numel():
        k0 = min(n, first_block)
        ts, order = torch.topk(t[todo], k0, dim=1, largest=False, sorted=True)
        found = scan_breakpoints(out, todo, ts, order, path, k0)
        done = todo[found]
        positions = torch.arange(k0, device=x.device).unsqueeze(0) < out.k[done].unsqueeze(1)
        passed[done] = torch.zeros_like(passed[done]).scatter_(1, order[found], positions)
        rest = todo[~found]
        if rest.numel():  # a Cauchy point beyond the first block: sort those rows fully
            ts, order = torch.sort(t[rest], dim=1, stable=True)
            scan_breakpoints(out, rest, ts, order, path, 2 * k0)
            positions = torch.arange(n, device=x.device).unsqueeze(0) < out.k[rest].unsqueeze(1)
            passed[rest] = torch.zeros_like(passed[rest]).scatter_(1, order, positions)
    t_star = out.t * active
    passed &= moving
    xc = torch.where(passed, bound, x + t_star.unsqueeze(1) * d)
    xc = torch.minimum(torch.maximum(xc, lower), upper)
    free = ~passed & ~fixed0
    c = out.c + t_star.unsqueeze(1) * out.p                  # Wᵀ(x^c − x)
    return xc, free, c, out.p, t_star
