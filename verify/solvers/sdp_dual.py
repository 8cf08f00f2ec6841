"""Scalable SDP backend ("dual"): the primal-dual interior-point method of :mod:`verify.solvers.sdp_ipm`
behind the certification shortcuts.

For one margin objective: when a target is given (certification), the best linear dual point
(``nu = 0``: one LP, the triangle LP's Lagrangian when the cuts are on) is tried first and returned when it
already certifies. Otherwise the interior-point method runs from a strictly feasible dual point
(:func:`strict_start`) until it converges (relative gap and primal infeasibility below ``tol``), the sound
bound passes the target, a nearly feasible primal point shows the target is out of reach, or time runs out.
If it stops on numerical trouble with time left, :func:`verify.solvers.sdp_polish.polish` (L-BFGS-B on a
smoothed dual) continues from the best point. Every point is a valid dual point and the bound returned is
recomputed rigorously by :func:`verify.solvers.sdp_problem.dual_bound`, so stopping early only weakens it.

Measured (bench/bench_sdp.py --speed, rsl18 pgd_nn 784-200-100-50-10, CROWN bounds, 122 unstable neurons,
one core): about 25 iterations and 5-6 s per margin to a relative gap of 1e-6 (primal - bound <= 2e-5).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from verify.solvers.sdp_problem import Multipliers, SDPRelaxation, best_gamma, dual_blocks, dual_bound
from verify.results import SolverStatus
from verify.solvers.sdp_ipm import WarmStart, solve_ipm
from verify.solvers.sdp_polish import polish

log = logging.getLogger(__name__)

START = 0.02  # the starting point's barrier parameter, relative to the objective's size


@dataclass(frozen=True)
class DualSolution:
    """``bound``: sound lower bound on the margin; ``multipliers``: the point it was computed at;
    ``gap``: the last primal value minus ``bound`` (advisory: the primal point satisfies the constraints
    only to 1e-6; NaN when it is further from feasible or when the linear start was returned).
    ``status`` is OPTIMAL when the method converged, reached the target, or found a nearly feasible
    primal point below the target (the target is then out of reach, up to that tolerance). ``warm``: an
    iterate to warm-start another objective of the same relaxation; ``message``: why the solver stopped."""

    bound: float
    multipliers: Multipliers
    status: SolverStatus
    iterations: int
    time_s: float
    gap: float
    warm: WarmStart | None = None
    message: str = ""


def strict_start(rel: SDPRelaxation, obj: tuple[float, np.ndarray, np.ndarray], t: float,
                 triangle: bool = False) -> Multipliers:
    """A strictly feasible dual point near the central path for a large barrier parameter ``t``:
    ``mu = t``, ``lam`` a small multiple of ``t``, ``nu = 0``, ``gamma`` leaving ``S >= t I``-ish."""
    n = rel.n_unstable

    gnorm = np.sqrt((rel.h - rel.a0) ** 2 + np.sum(rel.ax**2, 1) + np.sum(rel.az**2, 1) + rel.h**2)
    lam = t / (1.0 + gnorm) / max(np.sqrt(n), 1.0)
    mu_x = np.full(rel.n0, t)
    mu_z = np.full(n, t)
    if triangle:
        t0, tx, tz = rel.triangle_rows()
        kappa = t / (1.0 + np.sqrt(t0**2 + np.sum(tx**2, 1) + np.sum(tz**2, 1))) / max(np.sqrt(n), 1.0)
    else:
        kappa = np.zeros(0)
    m = Multipliers(mu_x, mu_z, lam, np.zeros(n), 0.0, kappa)
    myy, b = dual_blocks(rel, obj, m)
    s = myy - (b / mu_x) @ b.T
    q, r = s[0, 1:], s[1:, 1:]
    gamma = float(s[0, 0] - q @ np.linalg.solve(r, q) - t) if n else float(s[0, 0] - t)
    return m.with_gamma(gamma)


def linear_start(rel: SDPRelaxation, obj: tuple[float, np.ndarray, np.ndarray], triangle: bool) -> Multipliers | None:
    """The best dual point with ``nu = 0`` (a linear Lagrangian: the triangle LP over the scaled box when
    ``triangle``, else without the triangle's upper side), from the row duals of one LP in primal form,
    ``minimize o^T v s.t. g_j^T v >= 0 (, tau_j^T v >= 0), v_0 = 1, |v_k| <= 1`` (HiGHS): ``lam``/``kappa`` are
    the row duals and ``mu = |c| / 2`` for ``c = o - sum_j lam_j g_j - sum_j kappa_j tau_j``. Any such point is
    dual feasible, so the LP's accuracy only affects tightness. None when the LP solver fails."""
    import scipy.sparse as sp

    from verify.solvers.base import LinearProgram
    from verify.solvers.highs import HighsBackend

    n0, n = rel.n0, rel.n_unstable
    form = rel.form(obj, triangle)  # rows over [1, z, x]
    lin, o = form.rows, form.o
    lp = LinearProgram(sp.csc_matrix(lin[:, 1:]), -lin[:, 0], np.full(lin.shape[0], np.inf), -np.ones(form.n - 1),
                       np.ones(form.n - 1))
    sol = HighsBackend().solve_many(lp, [o[1:]], [float(o[0])], 60.0)[0]
    if sol.row_dual is None or not np.all(np.isfinite(sol.row_dual)):
        return None
    y = np.maximum(sol.row_dual, 0.0)
    c = o - lin.T @ y
    scale = 1e-9 * (1.0 + float(np.abs(o).sum()))
    mu = np.abs(c[1:]) / 2.0 + scale  # order [z, x]
    lam, kappa = y[:n] + scale, (y[n:] + scale if triangle else np.zeros(0))
    m = Multipliers(mu[n:], mu[:n], lam, np.zeros(n), 0.0, kappa)
    return best_gamma(rel, obj, m)


def solve_dual(
    rel: SDPRelaxation,
    obj: tuple[float, np.ndarray, np.ndarray],
    time_limit: float,
    max_iter: int,
    target: float | None = None,
    tol: float = 1e-6,
    triangle: bool = False,
    warm: WarmStart | None = None,
) -> DualSolution:
    """Maximize the dual bound for one margin objective ``(o0, ox, oz)`` (see the module doc).

    Args:
        time_limit: seconds; the best sound bound so far is returned when it runs out.
        max_iter: interior-point iterations in all.
        target: stop as soon as the rigorous bound exceeds it (e.g. 0 to certify), or when the
            estimated optimum (bound + gap) is clearly below it.
        tol: stop when the relative primal-dual gap and the primal infeasibility are below it.
        triangle: add the triangle cuts ``z <= u (s - l) / (u - l)`` (multipliers ``kappa``).
        warm: the ``warm`` of an earlier solution of the same relaxation (another margin): starts from it.
    """
    if not all(np.all(np.isfinite(a)) for a in (np.asarray(obj[0]), obj[1], obj[2])):
        raise ValueError("the margin objective has non-finite coefficients (check the spec's C and d)")
    if not time_limit > 0:
        raise ValueError(f"time_limit must be > 0 seconds, got {time_limit}")
    with threadpool_limits(1):  # OpenBLAS threads slow these sizes down badly on a loaded machine
        return _solve(rel, obj, time_limit, max_iter, target, tol, triangle, warm)


def _solve(rel: SDPRelaxation, obj: tuple[float, np.ndarray, np.ndarray], time_limit: float, max_iter: int,
           target: float | None, tol: float, triangle: bool, warm: WarmStart | None) -> DualSolution:
    t0 = time.perf_counter()
    deadline = t0 + time_limit
    scale = 1.0 + float(abs(obj[0]) + np.abs(obj[1]).sum() + np.abs(obj[2]).sum())
    lin, lin_bound = None, -np.inf
    if rel.n_unstable:
        lin = linear_start(rel, obj, triangle)
        lin_bound = dual_bound(rel, obj, lin) if lin is not None else -np.inf
        log.debug("SDP dual: linear (LP-like) start bound %.6g, %.2fs", lin_bound, time.perf_counter() - t0)
        if lin is not None and target is not None and lin_bound > target:
            return DualSolution(lin_bound, lin, SolverStatus.OPTIMAL, 0, time.perf_counter() - t0, np.nan)
    if rel.n_unstable == 0:  # affine on the box: mu_x = |o_x| / 2 (and the best gamma) is optimal
        zero = np.zeros(0)
        m = Multipliers(np.abs(obj[1]) / 2 * (1 + 1e-9) + 1e-12 * scale, zero, zero, zero, 0.0, zero)
        m = best_gamma(rel, obj, m)
        return DualSolution(dual_bound(rel, obj, m), m, SolverStatus.OPTIMAL, 0, time.perf_counter() - t0, 0.0)
    form = rel.form(obj, triangle)
    start = rel.y_of(strict_start(rel, obj, START * scale, triangle), triangle)
    res = solve_ipm(form, start, deadline, target, tol, max_iter, warm)
    m = rel.multipliers_of(res.y, triangle)
    bound = dual_bound(rel, obj, m)
    if lin is not None and lin_bound > bound:
        m, bound = lin, lin_bound
    status = res.reason.status
    if status is SolverStatus.NUMERICAL_ERROR and time.perf_counter() < deadline and np.isfinite(bound):
        log.debug("SDP dual: interior point stopped (%s %s); polishing", res.reason.message, res.detail)
        m, bound = polish(rel, obj, m, deadline, target, triangle)
        if target is not None and bound > target:
            status = SolverStatus.OPTIMAL
    if not np.isfinite(bound):
        status = SolverStatus.NUMERICAL_ERROR
    log.info("SDP dual: bound %.7g after %d iterations (%s), primal %.7g, %.2fs", bound, res.iterations, res.reason.message,
             res.primal, time.perf_counter() - t0)
    gap = res.primal - bound if res.infeasibility < 1e-6 else np.nan  # an infeasible primal says nothing
    return DualSolution(bound, m, status, res.iterations, time.perf_counter() - t0, gap, res.warm,
                        res.reason.message + (f" ({res.detail})" if res.detail else ""))

