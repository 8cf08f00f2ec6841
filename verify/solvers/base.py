"""Backend-neutral linear programs (and MILPs) in matrix form, and the solver interface.

A :class:`LinearProgram` is ``min c^T v + offset`` subject to ``row_lower <= A v <= row_upper`` and
``col_lower <= v <= col_upper`` (``+-inf`` allowed in row bounds), optionally with integer columns.
Backends return :class:`LPSolution` with row duals in HiGHS' convention: the reduced costs are
``c - A^T y`` (so a ``>=`` row active at its lower bound has ``y >= 0``, a ``<=`` row ``y <= 0``).
Duals are *advisory*: sound bounds are recomputed from them by :mod:`verify.certificate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import scipy.sparse as sp

from verify.results import SolverStatus


class SolverError(RuntimeError):
    """A backend could not be run (missing package, malformed model)."""


@dataclass(frozen=True, eq=False)
class LinearProgram:
    """Matrix form of an LP/MILP. ``A``: CSC/CSR ``(rows, cols)``; vectors float64; ``integer``: column mask."""

    A: sp.spmatrix
    row_lower: np.ndarray
    row_upper: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray
    integer: np.ndarray | None = None

    def __post_init__(self) -> None:
        m, n = self.A.shape
        shapes = {"row_lower": (self.row_lower, m), "row_upper": (self.row_upper, m),
                  "col_lower": (self.col_lower, n), "col_upper": (self.col_upper, n)}
        for name, (vec, size) in shapes.items():
            if vec.shape != (size,):
                raise SolverError(f"LP {name} has shape {vec.shape}, expected ({size},)")

    @property
    def n_cols(self) -> int:
        return int(self.A.shape[1])

    @property
    def n_rows(self) -> int:
        return int(self.A.shape[0])


@dataclass(frozen=True, eq=False)
class LPSolution:
    """One solve. ``objective``: primal value (advisory); ``dual_bound``: the solver's own bound (MIP)."""

    status: SolverStatus
    objective: float
    x: np.ndarray | None
    row_dual: np.ndarray | None
    dual_bound: float = float("nan")
    time_s: float = 0.0


class LPBackend(Protocol):
    """Solves one LP for several cost vectors, reusing the model (warm starts where supported)."""

    name: str

    def solve_many(
        self, lp: LinearProgram, costs: Sequence[np.ndarray], offsets: Sequence[float], time_limit: float
    ) -> list[LPSolution]:
        """Minimize ``cost_k^T v + offset_k`` for each k; ``time_limit`` in seconds per solve."""
        ...
