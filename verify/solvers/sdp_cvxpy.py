"""Reference SDP backend: an :class:`~verify.solvers.sdp_form.ArrowSDP` solved by cvxpy.

Clarabel (interior point, accurate) for matrices of side up to ``CLARABEL_MAX_SIDE``, SCS otherwise.
The solver's objective is advisory only: the bound returned is recomputed from the constraint
duals by :func:`verify.solvers.sdp_form.form_bound` (sound for any multipliers).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from verify.results import SolverStatus
from verify.solvers.cvxpy_lp import map_status
from verify.solvers.sdp_form import ArrowSDP, best_gamma, form_bound

log = logging.getLogger(__name__)

CLARABEL_MAX_SIDE = 120


@dataclass(frozen=True)
class CvxpySolution:
    """``bound``: sound (recomputed from duals); ``primal``: the solver's objective (advisory); ``y``: the
    form's multipliers (None when the solver returned no duals)."""

    bound: float
    primal: float
    y: np.ndarray | None
    status: SolverStatus
    solver: str
    time_s: float


def solve_cvxpy(form: ArrowSDP, time_limit: float, solver: str | None = None) -> CvxpySolution:
    """Solve ``form`` with cvxpy (a lower bound on its minimum from the constraint duals)."""
    import cvxpy as cp

    t0 = time.perf_counter()
    n = form.n
    solver = solver or ("CLARABEL" if n <= CLARABEL_MAX_SIDE else "SCS")
    x = cp.Variable((n, n), symmetric=True)
    box = cp.diag(x)[form.box] <= 1
    cons = [x >> 0, x[0, 0] == 1, box]
    ge = form.rows[form.ge_rows] @ x[:, 0] >= 0 if form.ge_rows.size else None
    eq = None
    if form.eq_rows.size:
        eq = cp.sum(cp.multiply(x[np.zeros(form.eq_rows.size, dtype=int), :] + x[form.eq_head, :],
                                form.rows[form.eq_rows]), axis=1) == 0
    cons += [c for c in (ge, eq) if c is not None]
    prob = cp.Problem(cp.Minimize(form.o @ x[:, 0]), cons)
    kwargs: dict = ({"time_limit": time_limit} if solver == "CLARABEL" else
                    {"time_limit_secs": time_limit, "eps_abs": 1e-7, "eps_rel": 1e-7, "max_iters": 100000})
    try:
        prob.solve(solver=solver, **kwargs)
    except (cp.error.SolverError, ValueError, ArithmeticError) as err:
        log.info("cvxpy %s failed: %s", solver, err)
        return CvxpySolution(-np.inf, np.nan, None, SolverStatus.NUMERICAL_ERROR, solver, time.perf_counter() - t0)
    status = map_status(prob.status)  # one cvxpy status map for every backend
    if box.dual_value is None:
        return CvxpySolution(-np.inf, np.nan, None, status, solver, time.perf_counter() - t0)
    nb, ng = form.box.size, form.ge_rows.size
    best: tuple[float, np.ndarray | None] = (-np.inf, None)
    for sign in (1.0, -1.0):  # cvxpy's sign convention for equality duals; both candidates are sound
        y = np.zeros(form.m)
        y[1 : 1 + nb] = -np.asarray(box.dual_value, dtype=np.float64).ravel()
        if ge is not None:
            y[1 + nb : 1 + nb + ng] = np.asarray(ge.dual_value, dtype=np.float64).ravel()
        if eq is not None:
            y[1 + nb + ng :] = -sign * np.asarray(eq.dual_value, dtype=np.float64).ravel()
        tail = form.box >= form.k
        y[1 : 1 + nb][tail] = np.minimum(y[1 : 1 + nb][tail], -1e-12)  # the tail multipliers must stay > 0
        y = best_gamma(form, y)
        val = form_bound(form, y)
        if val > best[0]:
            best = (val, y)
    primal = float(prob.value) if prob.value is not None else np.nan
    log.debug("cvxpy %s: status %s, primal %.6g, checked dual %.6g", solver, prob.status, primal, best[0])
    return CvxpySolution(best[0], primal, best[1], status, solver, time.perf_counter() - t0)
