"""Reference SDP backend: the scaled relaxation of :mod:`verify.solvers.sdp_problem` solved by cvxpy.

Clarabel (interior point, accurate) for matrices of side up to ``CLARABEL_MAX_SIDE``, SCS otherwise.
The solver's objective is advisory only: the bound returned is recomputed from the constraint
duals by :func:`verify.solvers.sdp_problem.dual_bound` (sound for any multipliers).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from verify.solvers.sdp_problem import Multipliers, SDPRelaxation, best_gamma, dual_bound
from verify.results import SolverStatus
from verify.solvers.cvxpy_lp import map_status

log = logging.getLogger(__name__)

CLARABEL_MAX_SIDE = 120



@dataclass(frozen=True)
class CvxpySolution:
    """``bound``: sound (recomputed from duals); ``primal``: the solver's objective (advisory)."""

    bound: float
    primal: float
    multipliers: Multipliers | None
    status: SolverStatus
    solver: str
    time_s: float


def solve_cvxpy(rel: SDPRelaxation, obj: tuple[float, np.ndarray, np.ndarray], time_limit: float,
                solver: str | None = None, triangle: bool = False) -> CvxpySolution:
    """Solve the relaxation for one margin objective ``(o0, ox, oz)`` with cvxpy (lower bound on the margin);
    ``triangle`` adds the triangle cuts ``tau_j^T P e_0 >= 0``."""
    import cvxpy as cp

    t0 = time.perf_counter()
    n0, n = rel.n0, rel.n_unstable
    side = 1 + n0 + n
    solver = solver or ("CLARABEL" if side <= CLARABEL_MAX_SIDE else "SCS")
    g = _constraint_rows(rel)
    o = np.concatenate([[obj[0]], obj[1], obj[2]])
    p = cp.Variable((side, side), symmetric=True)
    cons = [p >> 0, p[0, 0] == 1]
    box = cp.diag(p)[1:] <= 1
    cons.append(box)
    lin = eq = tri = None
    if n and triangle:
        t0, tx, tz = rel.triangle_rows()
        tri = np.concatenate([t0[:, None], tx, tz], axis=1) @ p[:, 0] >= 0
        cons.append(tri)
    if n:
        pos = 1 + n0 + np.arange(n)
        lin = g @ p[:, 0] >= 0
        eq = cp.sum(cp.multiply(p[np.zeros(n, dtype=int), :] + p[pos, :], g), axis=1) == 0
        cons += [lin, eq]
    prob = cp.Problem(cp.Minimize(o @ p[:, 0]), cons)
    kwargs: dict = {"time_limit": time_limit} if solver == "CLARABEL" else {"time_limit_secs": time_limit, "eps_abs": 1e-7, "eps_rel": 1e-7, "max_iters": 100000}
    try:
        prob.solve(solver=solver, **kwargs)
    except (cp.error.SolverError, ValueError, ArithmeticError) as err:
        log.info("cvxpy %s failed: %s", solver, err)
        return CvxpySolution(-np.inf, np.nan, None, SolverStatus.NUMERICAL_ERROR, solver, time.perf_counter() - t0)
    status = map_status(prob.status)  # one cvxpy status map for every backend
    if box.dual_value is None:
        return CvxpySolution(-np.inf, np.nan, None, status, solver, time.perf_counter() - t0)
    mu = np.asarray(box.dual_value, dtype=np.float64).ravel()
    lam = np.asarray(lin.dual_value, dtype=np.float64).ravel() if lin is not None else np.zeros(0)
    nu = np.asarray(eq.dual_value, dtype=np.float64).ravel() if eq is not None else np.zeros(0)
    kappa = np.asarray(tri.dual_value, dtype=np.float64).ravel() if tri is not None else np.zeros(0)
    best: tuple[float, Multipliers | None] = (-np.inf, None)
    for sign in (1.0, -1.0):  # cvxpy's sign convention for equality duals; both candidates are sound
        m = best_gamma(rel, obj, Multipliers(np.maximum(mu[:n0], 1e-12), mu[n0:], lam, sign * nu, 0.0, kappa))
        val = dual_bound(rel, obj, m)
        if val > best[0]:
            best = (val, m)
    primal = float(prob.value) if prob.value is not None else np.nan
    log.debug("cvxpy %s: status %s, primal %.6g, checked dual %.6g", solver, prob.status, primal, best[0])
    return CvxpySolution(best[0], primal, best[1], status, solver, time.perf_counter() - t0)


def _constraint_rows(rel: SDPRelaxation) -> np.ndarray:
    """Rows ``g_j`` ``(N, 1 + n0 + N)`` with ``g_j^T v = z_j - s_j``."""
    n = rel.n_unstable
    g = np.zeros((n, 1 + rel.n0 + n))
    g[:, 0] = rel.h - rel.a0
    g[:, 1 : 1 + rel.n0] = -rel.ax
    g[:, 1 + rel.n0 :] = np.diag(rel.h) - rel.az
    return g
