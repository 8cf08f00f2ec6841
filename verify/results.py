"""Result types shared by every method: a verdict enum, a solver-status enum and a result dataclass."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class Verdict(enum.Enum):
    """Outcome of one method on one property."""

    CERTIFIED = "certified"
    FALSIFIED = "falsified"
    UNKNOWN = "unknown"
    ERROR = "error"

    @property
    def message(self) -> str:
        return {
            Verdict.CERTIFIED: "proved: no input in the set changes the decision (checked bound > 0)",
            Verdict.FALSIFIED: "a counterexample was found and re-checked on the original model",
            Verdict.UNKNOWN: "not proved and no counterexample found; try a tighter method (lp, sdp) or a longer time limit",
            Verdict.ERROR: "the method failed on this input; see the message",
        }[self]


class SolverStatus(enum.Enum):
    """Solver outcome, mapped from each backend. Only OPTIMAL (or a checked dual bound) may certify."""

    OPTIMAL = "optimal"
    OPTIMAL_INACCURATE = "optimal_inaccurate"
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    TIME_LIMIT = "time_limit"
    ITERATION_LIMIT = "iteration_limit"
    NUMERICAL_ERROR = "numerical_error"
    NOT_RUN = "not_run"  # e.g. skipped because a cheaper method already decided
    NOT_APPLICABLE = "not_applicable"  # closed-form methods (IBP, CROWN) and attacks


@dataclass(frozen=True, eq=False)
class MethodResult:
    """One method on one property.

    ``bound`` is a sound lower bound on the property's worst-case margin (``min`` over groups of the
    best certified row; > 0 means CERTIFIED), or for an attack the smallest margin it found (an
    upper bound on the worst case). A FALSIFIED result of a bounding method that stopped at a
    counterexample before it had a bound (the SDP when the box centre violates, ``bab`` when a point it
    tried does) carries that counterexample's margin instead: an upper bound, like the attack's.
    ``margin_bounds`` holds the per-row values, shape ``(m,)``.
    """

    method: str
    verdict: Verdict
    bound: float
    margin_bounds: np.ndarray
    time_s: float
    status: SolverStatus = SolverStatus.NOT_APPLICABLE
    message: str = ""
    counterexample: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def group_bound(spec_groups: tuple[tuple[int, ...], ...], margin_bounds: np.ndarray) -> float:
    """Worst-case-margin lower bound from per-row lower bounds: ``min_g max_{i in g} lb_i``."""
    return float(min(max(margin_bounds[i] for i in g) for g in spec_groups))
