"""Eps sweeps in verdict mode: what a finished result at one eps implies at another eps of the same input.

Balls around one input are nested (``eps1 <= eps2`` gives ``ball(eps1) inside ball(eps2)``, both clipped to
the same domain), so, without running a method:

* a counterexample re-checked at ``eps1`` is one at every ``eps2 >= eps1``: every method is FALSIFIED there
  (status NOT_RUN, as for a misclassified clean input; the point is re-checked in the new ball);
* a method's certificate at ``eps2`` is a certificate for every smaller ball (the Lagrangian/dual bound
  of a larger box is a valid bound for a box inside it): CERTIFIED at every ``eps1 <= eps2``, with that
  bound (status NOT_RUN);
* a method that ran at ``eps1`` and did not certify is not run at larger eps (UNKNOWN, NOT_RUN, said so),
  and an attack that found nothing at ``eps2`` is not run at smaller eps;
* the attack is not run where some method already certified the property at a larger eps.

Only results at *other* eps values imply anything, so a run at a single eps is never changed.

The first two are facts; the last two assume that a method which fails on a ball also fails on a larger
one (true of every method here in practice, not a theorem for all of them), and the records say so in
their message. Compare mode (:attr:`verify.options.Options.compare`) implies nothing: every method runs
on every ball to its optimum. With the eps values visited in :func:`sweep_order` a sweep of ``k`` eps runs
each method on about ``log2(k + 1)`` of them per input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from verify.methods import Reference
from verify.network import Network
from verify.report_record import Record
from verify.results import MethodResult, SolverStatus, Verdict
from verify.spec import Property

ATTACK = "attack"
#: statuses of a finished, inconclusive run (a TIME_LIMIT may be a method not started for lack of time)
_RAN = (SolverStatus.OPTIMAL, SolverStatus.NOT_APPLICABLE, SolverStatus.OPTIMAL_INACCURATE, SolverStatus.ITERATION_LIMIT)


def sweep_order(eps_values: tuple[float, ...]) -> tuple[float, ...]:
    """The eps values in bisection order: the middle one first, then the middles of each half, and so on.

    Visiting them in this order lets each result rule out (or settle) half of the remaining values.
    """
    ordered = sorted(set(eps_values))
    out: list[float] = []
    spans = [(0, len(ordered))]
    while spans:
        nxt = []
        for lo, hi in spans:
            if lo >= hi:
                continue
            mid = (lo + hi) // 2
            out.append(ordered[mid])
            nxt += [(lo, mid), (mid + 1, hi)]
        spans = nxt
    return tuple(out)


@dataclass
class Known:
    """Finished results of a run, per input, for :meth:`implied` (verdict mode only).

    ``certified[(index, method)]``: ``(eps, bound)`` of CERTIFIED results; ``failed[(index, method)]``: eps
    where the method ran and did not decide; ``points[index]``: ``(eps, method, x)`` of re-checked
    counterexamples.
    """

    certified: dict[tuple[int, str], list[tuple[float, float]]] = field(default_factory=dict)
    failed: dict[tuple[int, str], list[float]] = field(default_factory=dict)
    points: dict[int, list[tuple[float, str, np.ndarray]]] = field(default_factory=dict)

    def add(self, record: Record, result: MethodResult | None = None) -> None:
        """Remember a finished record (and its result's counterexample, when there is one)."""
        if record.eps is None:
            return
        key = (record.index, record.method)
        if record.verdict is Verdict.CERTIFIED:
            self.certified.setdefault(key, []).append((record.eps, record.bound))
        elif record.verdict is Verdict.UNKNOWN and record.status in _RAN:
            self.failed.setdefault(key, []).append(record.eps)
        elif (record.verdict is Verdict.FALSIFIED and record.status is not SolverStatus.NOT_RUN and result is not None
              and result.counterexample is not None):
            x = np.asarray(result.counterexample, dtype=np.float64).ravel().copy()
            self.points.setdefault(record.index, []).append((record.eps, record.method, x))

    def implied(self, index: int, method: str, prop: Property, net: Network, reference: Reference | None) -> MethodResult | None:
        """The result ``method`` would give on ``prop`` (input ``index`` at ``prop.eps``) as implied by what is
        known at other eps values, or None when it has to run. See the module docstring for the rules."""
        eps = prop.eps
        if eps is None:
            return None
        m = prop.output.n_margins
        cex = self._counterexample(index, prop, net, reference)
        if cex is not None:
            x, value, margins, where = cex
            return MethodResult(method, Verdict.FALSIFIED, value, margins, 0.0, SolverStatus.NOT_RUN,
                                f"not run: the counterexample found {where} lies in this ball", x)
        mine = [(e, b) for e, b in self.certified.get((index, method), []) if e > eps]
        if mine:
            e, b = max(mine, key=lambda eb: eb[1])
            return MethodResult(method, Verdict.CERTIFIED, b, np.full(m, np.nan), 0.0, SolverStatus.NOT_RUN,
                                f"not run: implied by its certificate at the larger eps {e:g}")
        failed = self.failed.get((index, method), [])
        if method == ATTACK:
            others = [(e, k[1]) for k, v in self.certified.items() if k[0] == index for e, _ in v if e > eps]
            if others:
                e, who = max(others)
                return _not_run(method, m, f"not run: the property is certified here ({who} at eps {e:g})")
            larger = [e for e in failed if e > eps]
            if larger:
                return _not_run(method, m, f"not run: no counterexample found at the larger eps {min(larger):g}")
            return None
        smaller = [e for e in failed if e < eps]
        if smaller:
            return _not_run(method, m, f"not run: not certified at the smaller eps {max(smaller):g}")
        return None

    def _counterexample(self, index: int, prop: Property, net: Network,
                        reference: Reference | None) -> tuple[np.ndarray, float, np.ndarray, str] | None:
        """A known counterexample that lies in ``prop``'s box and violates it (re-checked), with its worst
        margin, its margins and where it was found."""
        for e, who, x in sorted(self.points.get(index, []), key=lambda p: p[0]):
            if e >= prop.eps or not prop.box.contains(x):
                continue
            logits = np.asarray((reference or net.forward)(x[None]), dtype=np.float64)
            if bool(prop.output.violated(logits)[0]):
                margins = prop.output.margins(logits)[0]
                worst = min(max(margins[list(g)]) for g in prop.output.groups)
                return x.copy(), float(worst), margins, f"by {who} at eps {e:g}"
        return None


def _not_run(method: str, m: int, message: str) -> MethodResult:
    return MethodResult(method, Verdict.UNKNOWN, math.nan, np.full(m, np.nan), 0.0, SolverStatus.NOT_RUN, message)
