"""HiGHS backend (highspy) for LPs, with warm starts across cost vectors, and for MILPs."""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from verify.results import SolverStatus
from verify.solvers.base import LinearProgram, LPSolution, SolverError

log = logging.getLogger(__name__)


def _status_map() -> dict:
    import highspy

    s = highspy.HighsModelStatus
    return {
        s.kOptimal: SolverStatus.OPTIMAL,
        s.kInfeasible: SolverStatus.INFEASIBLE,
        s.kUnbounded: SolverStatus.UNBOUNDED,
        s.kUnboundedOrInfeasible: SolverStatus.INFEASIBLE,
        s.kTimeLimit: SolverStatus.TIME_LIMIT,
        s.kIterationLimit: SolverStatus.ITERATION_LIMIT,
        s.kSolutionLimit: SolverStatus.ITERATION_LIMIT,
        s.kInterrupt: SolverStatus.TIME_LIMIT,
    }


def map_status(model_status: object) -> SolverStatus:
    """HiGHS model status -> :class:`SolverStatus`; anything unlisted is a numerical error."""
    return _status_map().get(model_status, SolverStatus.NUMERICAL_ERROR)


_BANNER_SHOWN = False


def new_highs(highspy: object) -> object:
    """A ``highspy.Highs()`` without its copyright banner on stdout.

    HiGHS prints the banner from C++ on the first construction in a process, before any option can be
    set; stdout carries our results (tables, VNN-COMP answers), so file descriptor 1 is pointed at
    /dev/null for that one construction.
    """
    global _BANNER_SHOWN
    if _BANNER_SHOWN:
        return highspy.Highs()
    _BANNER_SHOWN = True
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            return highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _make_highs(lp: LinearProgram, cost: np.ndarray, offset: float) -> object:
    try:
        import highspy
    except ImportError as exc:  # pragma: no cover - dependency declared in pyproject
        raise SolverError("HiGHS backend needs the 'highspy' package") from exc
    h = new_highs(highspy)
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    model = highspy.HighsLp()
    a = sp.csc_matrix(lp.A)
    a.sort_indices()
    inf = highspy.kHighsInf
    model.num_col_, model.num_row_ = lp.n_cols, lp.n_rows
    model.col_cost_ = np.asarray(cost, dtype=np.float64)
    model.offset_ = float(offset)
    model.col_lower_ = np.where(np.isfinite(lp.col_lower), lp.col_lower, -inf)
    model.col_upper_ = np.where(np.isfinite(lp.col_upper), lp.col_upper, inf)
    model.row_lower_ = np.where(np.isfinite(lp.row_lower), lp.row_lower, -inf)
    model.row_upper_ = np.where(np.isfinite(lp.row_upper), lp.row_upper, inf)
    model.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    model.a_matrix_.start_ = a.indptr.astype(np.int32)
    model.a_matrix_.index_ = a.indices.astype(np.int32)
    model.a_matrix_.value_ = a.data.astype(np.float64)
    if lp.integer is not None:
        model.integrality_ = [
            highspy.HighsVarType.kInteger if flag else highspy.HighsVarType.kContinuous for flag in lp.integer
        ]
    h.passModel(model)
    return h


class HighsBackend:
    """LP/MILP backend on HiGHS. ``mip_rel_gap``: relative MIP gap at which HiGHS stops."""

    name = "highs"

    def __init__(self, mip_rel_gap: float = 1e-6) -> None:
        self.mip_rel_gap = mip_rel_gap

    def solve_many(
        self, lp: LinearProgram, costs: Sequence[np.ndarray], offsets: Sequence[float], time_limit: float
    ) -> list[LPSolution]:
        """Minimize each ``cost^T v + offset``; after the first, HiGHS starts from the previous basis."""
        if not costs:
            return []
        h = _make_highs(lp, costs[0], offsets[0])
        if lp.integer is not None:
            h.setOptionValue("mip_rel_gap", self.mip_rel_gap)
            h.setOptionValue("mip_abs_gap", 1e-9)
        out = []
        idx = np.arange(lp.n_cols, dtype=np.int32)
        for k, (cost, off) in enumerate(zip(costs, offsets)):
            if k:
                h.changeColsCost(lp.n_cols, idx, np.asarray(cost, dtype=np.float64))
                h.changeObjectiveOffset(float(off))
            h.setOptionValue("time_limit", float(time_limit))
            out.append(self._run(h, lp.integer is not None))
        return out

    def _run(self, h: object, is_mip: bool) -> LPSolution:
        t0 = time.perf_counter()
        h.run()
        elapsed = time.perf_counter() - t0
        status = map_status(h.getModelStatus())
        info = h.getInfo()
        sol = h.getSolution()
        x = np.asarray(sol.col_value, dtype=np.float64) if sol.value_valid else None
        y = np.asarray(sol.row_dual, dtype=np.float64) if (sol.dual_valid and not is_mip) else None
        obj = float(info.objective_function_value) if x is not None else float("nan")
        dual_bound = float(info.mip_dual_bound) if is_mip else float("nan")
        if is_mip and status is SolverStatus.TIME_LIMIT and x is None:
            log.info("HiGHS MIP hit the time limit without an incumbent")
        log.debug("HiGHS %s in %.3fs: %s obj=%g", "MIP" if is_mip else "LP", elapsed, status, obj)
        return LPSolution(status, obj, x, y, dual_bound, elapsed)
