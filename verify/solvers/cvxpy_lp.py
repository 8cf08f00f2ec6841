"""cvxpy backend for LPs (Clarabel by default): the reference path, independent of HiGHS.

Row duals are converted to the HiGHS convention of :mod:`verify.solvers.base` (reduced costs
``c - A^T y``). cvxpy's "optimal_inaccurate" maps to OPTIMAL_INACCURATE, never OPTIMAL.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from verify.results import SolverStatus
from verify.solvers.base import LinearProgram, LPSolution, SolverError

_STATUS = {
    "optimal": SolverStatus.OPTIMAL,
    "optimal_inaccurate": SolverStatus.OPTIMAL_INACCURATE,
    "infeasible": SolverStatus.INFEASIBLE,
    "infeasible_inaccurate": SolverStatus.NUMERICAL_ERROR,
    "unbounded": SolverStatus.UNBOUNDED,
    "unbounded_inaccurate": SolverStatus.NUMERICAL_ERROR,
    "user_limit": SolverStatus.TIME_LIMIT,
    "solver_error": SolverStatus.NUMERICAL_ERROR,
}


def map_status(status: str | None) -> SolverStatus:
    """cvxpy status string -> :class:`SolverStatus` (unknown strings are numerical errors)."""
    return _STATUS.get(str(status), SolverStatus.NUMERICAL_ERROR)


class CvxpyBackend:
    """LP backend through cvxpy; ``solver`` is a cvxpy solver name (default Clarabel)."""

    def __init__(self, solver: str = "CLARABEL") -> None:
        self.solver = solver
        self.name = solver.lower()

    def solve_many(
        self, lp: LinearProgram, costs: Sequence[np.ndarray], offsets: Sequence[float], time_limit: float
    ) -> list[LPSolution]:
        """Minimize each ``cost^T v + offset`` (one parametrized cvxpy problem, re-solved per cost)."""
        try:
            import cvxpy as cp
        except ImportError as exc:  # pragma: no cover
            raise SolverError("the cvxpy backend needs the 'cvxpy' package") from exc
        if lp.integer is not None and np.any(lp.integer):
            raise SolverError("the cvxpy LP backend does not solve MILPs; use HiGHS")
        v = cp.Variable(lp.n_cols, bounds=[lp.col_lower, lp.col_upper])
        cost = cp.Parameter(lp.n_cols)
        a = sp.csr_matrix(lp.A)
        eq = lp.row_lower == lp.row_upper
        lo = ~eq & np.isfinite(lp.row_lower)
        hi = ~eq & np.isfinite(lp.row_upper)
        cons, parts = [], []
        for mask, kind in ((eq, "eq"), (lo, "lo"), (hi, "hi")):
            if not np.any(mask):
                continue
            rows = np.flatnonzero(mask)
            expr = a[rows] @ v
            rhs = (lp.row_lower if kind != "hi" else lp.row_upper)[rows]
            cons.append(expr == rhs if kind == "eq" else (expr >= rhs if kind == "lo" else expr <= rhs))
            parts.append((rows, kind))
        prob = cp.Problem(cp.Minimize(cost @ v), cons)
        out = []
        for c, off in zip(costs, offsets):
            cost.value = np.asarray(c, dtype=np.float64)
            out.append(self._solve(prob, cons, parts, v, lp.n_rows, off, time_limit))
        return out

    def _solve(self, prob, cons, parts, v, n_rows, offset, time_limit) -> LPSolution:  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        kwargs = {"time_limit": float(time_limit)} if self.solver == "CLARABEL" else {}
        try:
            prob.solve(solver=self.solver, **kwargs)
        except Exception as exc:  # cvxpy raises SolverError on numerical failure
            return LPSolution(SolverStatus.NUMERICAL_ERROR, float("nan"), None, None, time_s=time.perf_counter() - t0)
        status = map_status(prob.status)
        if v.value is None:
            return LPSolution(status, float("nan"), None, None, time_s=time.perf_counter() - t0)
        y = np.zeros(n_rows)
        for con, (rows, kind) in zip(cons, parts):
            dual = np.asarray(con.dual_value, dtype=np.float64).ravel()
            # cvxpy's Lagrangian is f + dual * (lhs - rhs) for ==, <=; for >= it is f + dual * (rhs - lhs).
            y[rows] = -dual if kind in ("eq", "hi") else dual
        obj = float(prob.value) + float(offset)
        return LPSolution(status, obj, np.asarray(v.value, dtype=np.float64), y, time_s=time.perf_counter() - t0)
