"""LP/MILP solver backends behind one small interface (see :mod:`verify.solvers.base`)."""

from verify.solvers.base import LinearProgram, LPBackend, LPSolution, SolverError


def lp_backend(name: str) -> LPBackend:
    """The LP backend for ``Options.lp_solver``: "highs" (highspy) or "clarabel" (through cvxpy)."""
    if name == "highs":
        from verify.solvers.highs import HighsBackend

        return HighsBackend()
    if name == "clarabel":
        from verify.solvers.cvxpy_lp import CvxpyBackend

        return CvxpyBackend("CLARABEL")
    raise SolverError(f"unknown LP solver {name!r}; use 'highs' or 'clarabel'")


__all__ = ["LPBackend", "LPSolution", "LinearProgram", "SolverError", "lp_backend"]
