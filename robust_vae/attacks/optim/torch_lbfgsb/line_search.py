"""Step 3: the vectorised strong-Wolfe line search along d = x̄ − x.

The step is at most the largest feasible step. A bracketing/zoom search (Armijo
ftol = 1e-3, curvature gtol = 0.9, safeguarded cubic interpolation, at most ``max_ls``
evaluations) runs for every row at once: each round of the driver evaluates one trial step
per row, and :func:`search_step` classifies it, updates the bracket and picks the next
trial. Every accepted step decreases f. A search that runs out of evaluations takes the
best Armijo point it found; without one it fails (the driver then discards the memory and
restarts once from the last iterate, as SciPy does; a failure with empty memory ends that
problem).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robust_vae.attacks.optim.torch_lbfgsb.state import BIG, State


@dataclass
class SearchOptions:
    """Armijo constant ``ftol``, curvature constant ``gtol``, evaluations per search ``max_ls``,
    and the evaluation budget per problem ``max_fun``."""

    ftol: float
    gtol: float
    max_ls: int
    max_fun: int


@dataclass
class SearchStep:
    """The outcome of one round for every row: ``accept`` (the trial satisfied the strong Wolfe
    conditions), ``take`` (rows that move: accepted, or exhausted with an Armijo point),
    ``failed`` (exhausted without one), and f at the best Armijo point ``f_lo``."""

    accept: torch.Tensor
    take: torch.Tensor
    failed: torch.Tensor
    f_lo: torch.Tensor


@dataclass
class _Tests:
    """How the trial step compares: finite values, the Armijo condition and the resulting moves."""

    finite: torch.Tensor
    accept: torch.Tensor
    too_long: torch.Tensor    # no sufficient decrease: stp becomes an end of the bracket
    overshoot: torch.Tensor   # decrease, slope turned positive
    moves_lo: torch.Tensor    # decrease without acceptance: stp becomes the new lo
    swap: torch.Tensor        # the old lo becomes hi


@dataclass
class _Bracket:
    """The bracket after the trial: its ends lo and hi with f and the slope at each."""

    lo: torch.Tensor
    f_lo: torch.Tensor
    dg_lo: torch.Tensor
    hi: torch.Tensor
    f_hi: torch.Tensor
    dg_hi: torch.Tensor
    bracketed: torch.Tensor


def cubic_step(a: torch.Tensor, fa: torch.Tensor, da: torch.Tensor,
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


def too_long_step(a: torch.Tensor, fa: torch.Tensor, da: torch.Tensor,
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


def trial_points(st: State) -> torch.Tensor:
    """x + stp·d for every row (exactly x̄ at stp = 1), kept in the box."""
    stp = st.stp.unsqueeze(1)
    point = torch.where(stp == 1.0, st.xbar, st.x + stp * st.d)
    return torch.minimum(torch.maximum(point, st.lower), st.upper)


def start_search(st: State, rows: torch.Tensor, xbar: torch.Tensor, d: torch.Tensor, dg0: torch.Tensor,
                 stpmax: torch.Tensor, stp: torch.Tensor) -> None:
    """Start the line search of ``rows`` towards ``xbar`` along ``d`` (slope ``dg0`` at 0,
    largest step ``stpmax``, first trial ``stp``; all indexed like ``rows``)."""
    st.xbar[rows], st.d[rows] = xbar, d
    st.dg0[rows], st.stpmax[rows], st.stp[rows] = dg0, stpmax, stp
    st.lo[rows] = 0.0
    st.f_lo[rows] = st.f[rows]
    st.dg_lo[rows] = dg0
    st.g_lo[rows] = st.g[rows]
    st.hi[rows] = 0.0
    st.bracketed[rows] = False
    st.width[rows] = BIG
    st.width1[rows] = 2 * BIG
    st.ls_evals[rows] = 0
    st.phase[rows] = 1


def search_step(st: State, ls: torch.Tensor, fp: torch.Tensor, gp: torch.Tensor,
                options: SearchOptions) -> SearchStep:
    """One round of the line search of the rows in mask ``ls``, whose trial steps ``st.stp``
    gave values ``fp`` and gradients ``gp``: update their brackets and next trial steps in
    ``st`` (the other rows keep theirs) and say which rows move on and which failed."""
    stp = st.stp
    dp = (gp * st.d).sum(1)
    evals = st.ls_evals + ls
    tests = _wolfe_tests(st, stp, fp, dp, options)
    new = _new_bracket(st, tests, stp, fp, dp)
    next_stp, width = _next_trial(st, tests, new, stp, fp, dp)
    stalled = new.bracketed & (width <= 1e-12 * torch.maximum(new.hi, new.lo).clamp_min(1e-300))
    exhausted = (evals >= options.max_ls) | stalled | (st.nfev >= options.max_fun)
    fallback = ~tests.accept & exhausted & (new.lo > 0)    # the best Armijo point found
    failed = ls & ~tests.accept & exhausted & ~(new.lo > 0)
    take = ls & (tests.accept | fallback)
    # commit
    l2 = ls.unsqueeze(1)
    st.g_lo = torch.where(l2 & tests.moves_lo.unsqueeze(1), gp, st.g_lo)
    st.lo = torch.where(ls, new.lo, st.lo)
    st.f_lo = torch.where(ls, new.f_lo, st.f_lo)
    st.dg_lo = torch.where(ls, new.dg_lo, st.dg_lo)
    st.hi = torch.where(ls, new.hi, st.hi)
    st.f_hi = torch.where(ls, new.f_hi, st.f_hi)
    st.dg_hi = torch.where(ls, new.dg_hi, st.dg_hi)
    st.bracketed = torch.where(ls, new.bracketed, st.bracketed)
    st.width1 = torch.where(ls & new.bracketed, st.width, st.width1)
    st.width = torch.where(ls & new.bracketed, width, st.width)
    st.ls_evals = evals
    st.stp = torch.where(ls, torch.where(tests.accept, stp, torch.where(fallback, new.lo, next_stp)), stp)
    return SearchStep(tests.accept, take, failed, new.f_lo)


def _wolfe_tests(st: State, stp: torch.Tensor, fp: torch.Tensor, dp: torch.Tensor,
                 options: SearchOptions) -> _Tests:
    """The strong Wolfe conditions at the trial step and what they imply for the bracket."""
    f0, dg0 = st.f, st.dg0
    lo, f_lo, hi = st.lo, st.f_lo, st.hi
    bracketed, stpmax = st.bracketed, st.stpmax
    finite = torch.isfinite(fp) & torch.isfinite(dp)
    armijo = finite & (fp <= f0 + options.ftol * stp * dg0) & ((lo == 0) | (fp < f_lo))
    curvature = dp.abs() <= options.gtol * (-dg0)
    at_max = armijo & ~curvature & (dp < 0) & ~bracketed & (stp >= stpmax)
    accept = (armijo & curvature) | at_max
    too_long = ~armijo                                 # stp becomes an end of the bracket
    overshoot = armijo & ~accept & (dp > 0)           # decrease, slope turned positive
    short = armijo & ~accept & (dp < 0)               # decrease, slope still steep
    moves_lo = overshoot | short
    # the old lo becomes hi when the slope at stp points back towards it (Nocedal &
    # Wright, Algorithms 3.5/3.6)
    swap = (overshoot & ~bracketed) | (moves_lo & bracketed & (dp * (hi - lo) >= 0))
    return _Tests(finite, accept, too_long, overshoot, moves_lo, swap)


def _new_bracket(st: State, tests: _Tests, stp: torch.Tensor, fp: torch.Tensor, dp: torch.Tensor) -> _Bracket:
    """The bracket after the trial step (computed for every row)."""
    lo, f_lo, dg_lo = st.lo, st.f_lo, st.dg_lo
    hi, f_hi, dg_hi = st.hi, st.f_hi, st.dg_hi
    too_long, swap, moves_lo = tests.too_long, tests.swap, tests.moves_lo
    fp_safe = torch.where(tests.finite, fp, torch.full_like(fp, 1e300))
    dp_safe = torch.where(tests.finite, dp, torch.zeros_like(dp))
    return _Bracket(
        lo=torch.where(moves_lo, stp, lo),
        f_lo=torch.where(moves_lo, fp, f_lo),
        dg_lo=torch.where(moves_lo, dp, dg_lo),
        hi=torch.where(too_long, stp, torch.where(swap, lo, hi)),
        f_hi=torch.where(too_long, fp_safe, torch.where(swap, f_lo, f_hi)),
        dg_hi=torch.where(too_long, dp_safe, torch.where(swap, dg_lo, dg_hi)),
        bracketed=st.bracketed | too_long | tests.overshoot,
    )


def _next_trial(st: State, tests: _Tests, new: _Bracket, stp: torch.Tensor, fp: torch.Tensor,
                dp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(next trial step, new bracket width): Moré–Thuente case 1 after a rejected step,
    safeguarded cubic inside a bracket, extrapolation (up to 4× the last advance) before one."""
    interp = cubic_step(new.lo, new.f_lo, new.dg_lo, new.hi, new.f_hi, new.dg_hi)
    interp = torch.where(new.f_hi < 1e300, interp, 0.5 * (new.lo + new.hi))
    interp = torch.where(tests.too_long, too_long_step(st.lo, st.f_lo, st.dg_lo, stp, fp, dp), interp)
    extrap = torch.minimum(st.stpmax, stp + 4.0 * (stp - st.lo))
    next_stp = torch.where(new.bracketed, interp, extrap)
    width = (new.hi - new.lo).abs()
    # Moré–Thuente: bisect when the bracket did not shrink to 2/3 in two steps
    slow = new.bracketed & (width >= 0.66 * st.width1)
    half = 0.5 * (new.lo + new.hi)
    next_stp = torch.where(slow, torch.where(tests.too_long, torch.minimum(next_stp, half), half), next_stp)
    return next_stp, width
