"""Scalable SDP backend ("dual"): the primal-dual interior-point method of :mod:`verify.solvers.sdp_ipm`
behind the certification shortcuts, on an :class:`~verify.solvers.sdp_form.ArrowSDP` only.

For one form: the best linear dual point (the equality multipliers at 0: one LP over the form's ge rows and
boxes, the triangle LP's Lagrangian when the relaxation has the cuts) is computed first and returned when
it already passes the target. Otherwise the interior-point method runs from a strictly feasible dual point
(:func:`strict_start`, or a warm start) until it converges (relative gap and primal infeasibility below
``tol``), the sound bound passes the target, a nearly feasible primal point shows the target is out of
reach, or time runs out. If it stops on numerical trouble with time left,
:func:`verify.solvers.sdp_polish.polish` (L-BFGS-B on a smoothed dual) continues from the best point.
Every point is a valid dual point and the bound returned is recomputed rigorously by
:func:`verify.solvers.sdp_form.form_bound`, and the best of the linear point and the interior-point one is
kept, so stopping early only weakens it and the result is never below the LP.

Measured (bench/bench_sdp.py --speed, rsl18 pgd_nn 784-200-100-50-10, 120 unstable neurons, one core):
about 20 iterations from a cold start, 14 warm-started, to a gap of ~1e-6 relative.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from verify.results import SolverStatus
from verify.solvers.sdp_form import ArrowSDP, best_gamma, form_bound, schur_of
from verify.solvers.sdp_ipm import WarmStart, solve_ipm
from verify.solvers.sdp_polish import polish

log = logging.getLogger(__name__)

START = 0.02  # the starting point's barrier parameter, relative to the objective's size


@dataclass(frozen=True)
class DualSolution:
    """``bound``: sound lower bound on the form's minimum; ``y``: the multipliers it was computed at (the
    form's order); ``gap``: the last primal value minus ``bound`` (advisory: the primal point satisfies the
    constraints only to ``tol``; NaN when it is further from feasible or when the linear point was returned).
    ``status`` is OPTIMAL when the method converged, reached the target, or found a nearly feasible
    primal point below the target (the target is then out of reach, up to that tolerance). ``warm``: an
    iterate to warm-start another objective of the same constraints; ``message``: why the solver stopped."""

    bound: float
    y: np.ndarray
    status: SolverStatus
    iterations: int
    time_s: float
    gap: float
    warm: WarmStart | None = None
    message: str = ""


def strict_start(form: ArrowSDP, t: float) -> np.ndarray:
    """A strictly feasible dual point near the central path for a large barrier parameter ``t``: box
    multipliers ``t``, ge multipliers a small multiple of ``t`` (scaled by their rows' norms), equality
    multipliers 0, and ``gamma`` leaving ``S >= t I``-ish."""
    nb, ng = form.box.size, form.ge_rows.size
    y = np.zeros(form.m)
    y[1 : 1 + nb] = -t
    norms = np.linalg.norm(form.rows[form.ge_rows], axis=1)
    y[1 + nb : 1 + nb + ng] = t / (1.0 + norms) / max(np.sqrt(max(form.k - 1, 1)), 1.0)
    s, _ = schur_of(form.dual(y))
    q, r = s[0, 1:], s[1:, 1:]
    y[0] = float(s[0, 0] - q @ np.linalg.solve(r, q) - t) if form.k > 1 else float(s[0, 0] - t)
    return y


def linear_start(form: ArrowSDP) -> np.ndarray | None:
    """The best dual point with the equality multipliers at 0 (a linear Lagrangian), from the row duals of one
    LP in primal form, ``minimize o^T v s.t. q_r^T v >= 0 (ge rows), v_0 = 1, |v_i| <= 1 (boxed i)`` (HiGHS):
    the ge multipliers are the row duals and each box multiplier ``|c_i| / 2`` for the remaining linear
    coefficient ``c``. Any such point is dual feasible, so the LP's accuracy only affects tightness. None when
    the LP fails (or leaves a coefficient on an unboxed index)."""
    import scipy.sparse as sp

    from verify.solvers.base import LinearProgram
    from verify.solvers.highs import HighsBackend

    n, nb, ng = form.n, form.box.size, form.ge_rows.size
    lin, o = form.rows[form.ge_rows], form.o
    boxed = np.zeros(n, dtype=bool)
    boxed[form.box] = True
    lo, hi = np.where(boxed, -1.0, -np.inf)[1:], np.where(boxed, 1.0, np.inf)[1:]
    lp = LinearProgram(sp.csc_matrix(lin[:, 1:]), -lin[:, 0], np.full(ng, np.inf), lo, hi)
    sol = HighsBackend().solve_many(lp, [o[1:]], [float(o[0])], 60.0)[0]
    if sol.row_dual is None or not np.all(np.isfinite(sol.row_dual)):
        return None
    lam = np.maximum(sol.row_dual, 0.0)
    c = o - lin.T @ lam
    if np.any(np.abs(c[1:][~boxed[1:]]) > 1e-9 * (1.0 + np.abs(o).sum())):
        return None
    scale = 1e-9 * (1.0 + float(np.abs(o).sum()))
    y = np.zeros(form.m)
    y[1 : 1 + nb] = -(np.abs(c[form.box]) / 2.0 + scale)
    y[1 + nb : 1 + nb + ng] = lam + scale
    return best_gamma(form, y)


def solve_form(
    form: ArrowSDP,
    time_limit: float,
    max_iter: int,
    target: float | None = None,
    tol: float = 1e-6,
    warm: WarmStart | None = None,
) -> DualSolution:
    """Maximize the sound dual bound of ``form`` (see the module doc).

    Args:
        time_limit: seconds; the best sound bound so far is returned when it runs out.
        max_iter: interior-point iterations in all.
        target: stop as soon as the rigorous bound exceeds it (e.g. 0 to certify), or when the
            estimated optimum (bound + gap) is clearly below it.
        tol: stop when the relative primal-dual gap and the primal infeasibility are below it.
        warm: the ``warm`` of an earlier solution of the same constraints (another objective): starts from it.
    """
    if not np.all(np.isfinite(form.o)):
        raise ValueError("the margin objective has non-finite coefficients (check the spec's C and d)")
    if not time_limit > 0:
        raise ValueError(f"time_limit must be > 0 seconds, got {time_limit}")
    with threadpool_limits(1):  # OpenBLAS threads slow these sizes down badly on a loaded machine
        return _solve(form, time_limit, max_iter, target, tol, warm)


def _solve(form: ArrowSDP, time_limit: float, max_iter: int, target: float | None, tol: float,
           warm: WarmStart | None) -> DualSolution:
    t0 = time.perf_counter()
    deadline = t0 + time_limit
    if form.k == 1:  # nothing but the constant in the head: affine on the box, the closed form is optimal
        y = np.zeros(form.m)
        scale = 1e-12 * (1.0 + float(np.abs(form.o).sum()))
        y[1 : 1 + form.box.size] = -(np.abs(form.o[form.box]) / 2.0 * (1 + 1e-9) + scale)
        y = best_gamma(form, y)
        return DualSolution(form_bound(form, y), y, SolverStatus.OPTIMAL, 0, time.perf_counter() - t0, 0.0)
    lin = linear_start(form)
    lin_bound = form_bound(form, lin) if lin is not None else -np.inf
    log.debug("SDP dual: linear (LP) start bound %.6g, %.2fs", lin_bound, time.perf_counter() - t0)
    if lin is not None and target is not None and lin_bound > target:
        return DualSolution(lin_bound, lin, SolverStatus.OPTIMAL, 0, time.perf_counter() - t0, np.nan, None,
                            "the LP's dual point passes the target")
    scale = 1.0 + float(np.abs(form.o).sum())
    res = solve_ipm(form, strict_start(form, START * scale), deadline, target, tol, max_iter, warm)
    y, bound = res.y, res.bound
    if lin is not None and lin_bound > bound:
        y, bound = lin, lin_bound
    status = res.reason.status
    if status is SolverStatus.NUMERICAL_ERROR and time.perf_counter() < deadline and np.isfinite(bound):
        log.debug("SDP dual: interior point stopped (%s %s); polishing", res.reason.message, res.detail)
        y, bound = polish(form, y, deadline, target)
        if target is not None and bound > target:
            status = SolverStatus.OPTIMAL
    if not np.isfinite(bound):
        status = SolverStatus.NUMERICAL_ERROR
    log.info("SDP dual: bound %.7g after %d iterations (%s), primal %.7g, %.2fs", bound, res.iterations,
             res.reason.message, res.primal, time.perf_counter() - t0)
    gap = res.primal - bound if res.infeasibility < 1e-6 else np.nan  # an infeasible primal says nothing
    return DualSolution(bound, y, status, res.iterations, time.perf_counter() - t0, gap, res.warm,
                        res.reason.message + (f" ({res.detail})" if res.detail else ""))
