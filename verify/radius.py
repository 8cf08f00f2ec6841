"""Certified radius: per input and method, the largest eps it certifies, by bisection to a stated tolerance.

For a verifier the radius is the largest eps probed at which it CERTIFIED (``lower``); it did not certify at
``upper`` (at most ``tol`` above, or a counterexample is known there). For the attack the radius is the
smallest eps at which it found a counterexample (``upper``, an upper bound on the true robust radius);
it found none at ``lower``. Eps is in the model's input units; the largest eps that matters is the
domain's full extent around the input (:func:`eps_cap`): beyond it the ball is the whole domain, so a
method that certifies there has its radius capped (:attr:`RadiusKind.CAPPED`).

What is reused between steps (each is a fact, not a heuristic):

* a counterexample found at eps lies at L-inf distance ``d <= eps`` from the input, so it brackets every
  method at ``d`` (no method can certify a ball that holds it), without another probe;
* a certificate at eps is one for every smaller ball, so the bracket only moves up from it;
* brackets from an eps sweep of the same inputs (its records) are used as they are;
* the largest radius certified so far bounds the attack's search from below (no counterexample there),
  and a looser method's radius is probed first for the next, tighter one (one probe settles most of
  the interval when the tighter method certifies there).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from verify.methods import Reference, run_method
from verify.network import Network
from verify.options import Options
from verify.report_record import ATTACK, Radius, RadiusKind, Record, ReportError
from verify.results import MethodResult, SolverStatus, Verdict
from verify.spec import robustness_property

log = logging.getLogger(__name__)

#: default bisection tolerance, in eps units (input units)
DEFAULT_TOL = 1e-3


def eps_cap(x: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """The smallest eps whose ball around ``x`` (clipped to the domain ``[lower, upper]``) is the whole domain."""
    x = np.asarray(x, dtype=np.float64).ravel()
    return float(np.max(np.maximum(x - lower, upper - x))) if x.size else 0.0


@dataclass
class _Bracket:
    """The search state of one method: certified at ``lo``, not certified at ``hi`` (None: not known)."""

    lo: float = 0.0
    hi: float | None = None
    evaluations: int = 0
    time_s: float = 0.0
    error: str = ""


class _Search:
    """Radius searches of every method on one input, sharing what one probe tells the others."""

    def __init__(self, net: Network, x: np.ndarray, label: int, options: Options, reference: Reference | None,
                 tol: float) -> None:
        self.net, self.x, self.label, self.reference, self.tol = net, x, label, reference, tol
        self.options = options.with_(compare=False)  # a probe only needs the verdict
        self.cap = eps_cap(x, net.domain_lower, net.domain_upper)
        self.cex_at: float | None = None  # smallest L-inf distance of a known counterexample

    def probe(self, method: str, eps: float, b: _Bracket) -> MethodResult:
        prop = robustness_property(self.x, self.label, eps, (self.net.domain_lower, self.net.domain_upper), self.net.out_dim)
        res = run_method(method, self.net, prop, self.options, self.reference)
        b.evaluations += 1
        b.time_s += res.time_s
        if res.verdict is Verdict.FALSIFIED and res.counterexample is not None:
            d = float(np.max(np.abs(np.asarray(res.counterexample, dtype=np.float64).ravel() - self.x)))
            self.cex_at = d if self.cex_at is None else min(self.cex_at, d)
        log.debug("radius: %s at eps %g: %s", method, eps, res.verdict.value)
        return res

    def certifier(self, method: str, b: _Bracket, hint: float | None) -> None:
        """Bisection of a verifier's bracket. A hint (a looser method's radius) is probed first; when the
        method certifies there, the top of the bracket (``tol`` below the nearest known failure) is probed
        next: a method that closes the gap to the attack is then done in two probes."""
        step = "hint"
        while True:
            hi = self._hi(b)
            if hi is not None and hi - b.lo <= self.tol:
                return
            if hi is None and b.lo >= self.cap:
                return
            top = hi if hi is not None else self.cap
            if step == "hint" and hint is not None and b.lo < hint < top:
                eps = hint
            elif step == "top" and hi is not None and hi - b.lo > 2 * self.tol:
                eps = hi - self.tol
            elif hi is None:  # nothing above is known: probe the cap once, then bisect below it
                eps = self.cap
            else:
                eps = 0.5 * (b.lo + hi)
            probing_hint = step == "hint" and eps == hint
            step = ""
            res = self.probe(method, eps, b)
            if res.verdict is Verdict.ERROR:
                b.error = res.message
                return
            if res.verdict is Verdict.CERTIFIED:
                b.lo = eps
                step = "top" if probing_hint else ""
            else:
                b.hi = eps if b.hi is None else min(b.hi, eps)

    def attack(self, b: _Bracket) -> None:
        """Bisection for the smallest eps with a counterexample (the distance of each one found is used)."""
        while True:
            hi = self._hi(b)
            top = hi if hi is not None else self.cap
            if hi is not None and hi - b.lo <= self.tol:
                return
            if hi is None and b.lo >= self.cap:
                return
            eps = self.cap if (hi is None and b.evaluations == 0) else 0.5 * (b.lo + top)
            res = self.probe(ATTACK, eps, b)
            if res.verdict is Verdict.ERROR:
                b.error = res.message
                return
            if res.verdict is not Verdict.FALSIFIED:
                b.lo = max(b.lo, eps)
                if hi is None and eps >= self.cap:
                    return

    def _hi(self, b: _Bracket) -> float | None:
        """The smallest eps known not certified: the bracket's own, or the nearest counterexample's distance."""
        his = [h for h in (b.hi, self.cex_at) if h is not None]
        return min(his) if his else None

    def result(self, index: int, method: str, b: _Bracket) -> Radius:
        hi = self._hi(b)
        if b.error:
            kind, msg = RadiusKind.ERROR, f"{RadiusKind.ERROR.message}: {b.error}"
        elif method == ATTACK:
            kind = RadiusKind.BRACKETED if hi is not None else RadiusKind.NO_COUNTEREXAMPLE
            msg = (f"counterexample within eps {hi:.6g}, none found at {b.lo:.6g}" if hi is not None
                   else f"{kind.message} ({self.cap:.6g})")
        elif hi is None and b.lo >= self.cap:
            kind, msg = RadiusKind.CAPPED, f"{RadiusKind.CAPPED.message} ({self.cap:.6g})"
        else:
            kind = RadiusKind.BRACKETED
            msg = f"certified at eps {b.lo:.6g}, not at {hi:.6g}" if b.lo > 0 else f"not certified at eps {hi:.6g}"
        return Radius(index, self.label, method, kind, b.lo, hi, self.cap, self.tol, b.evaluations, b.time_s, msg)


def _misclassified(net: Network, x: np.ndarray, label: int, reference: Reference | None) -> bool:
    logits = np.asarray((reference or net.forward)(x[None]), dtype=np.float64)[0]
    others = np.delete(logits, label)
    return bool(others.size and np.max(others) >= logits[label])


def certified_radii(
    net: Network, index: int, x: np.ndarray, label: int, methods: Sequence[str], options: Options,
    reference: Reference | None = None, tol: float = DEFAULT_TOL, records: Iterable[Record] = (),
) -> list[Radius]:
    """Radius of every method in ``methods`` on input ``x`` ``(in_dim,)`` with true class ``label``.

    The attack (when listed) runs first: its counterexamples bracket every verifier. Verifiers run in the
    given order (loosest first), each starting from the previous one's radius. ``records`` of the same
    input from an eps sweep give starting brackets (only results that ran count as "not certified").
    A misclassified input has radius 0 for every method.
    """
    if not tol > 0:
        raise ValueError(f"the radius tolerance must be > 0, got {tol}")
    x = np.asarray(x, dtype=np.float64).ravel()
    search = _Search(net, x, int(label), options, reference, float(tol))
    if _misclassified(net, x, int(label), reference):
        return [Radius(index, int(label), m, RadiusKind.MISCLASSIFIED, 0.0, 0.0, search.cap, float(tol), 0, 0.0,
                       RadiusKind.MISCLASSIFIED.message) for m in methods]
    brackets = {m: _from_records(m, records, search) for m in methods}
    order = ([ATTACK] if ATTACK in methods else []) + [m for m in methods if m != ATTACK]
    hint: float | None = None
    for m in order:
        t0 = time.perf_counter()
        if m == ATTACK:
            b = brackets[m]
            search.attack(b)
        else:
            search.certifier(m, brackets[m], hint)
            hint = brackets[m].lo if brackets[m].lo > 0 else hint
        log.info("radius: input %d, %s: %d probes, %.2fs", index, m, brackets[m].evaluations, time.perf_counter() - t0)
    return [search.result(index, m, brackets[m]) for m in methods]


def _from_records(method: str, records: Iterable[Record], search: _Search) -> _Bracket:
    """Starting bracket of ``method`` from sweep records of the same input (and their counterexamples)."""
    b = _Bracket()
    for r in records:
        if r.eps is None or r.status is SolverStatus.NOT_RUN:  # implied results: only certificates count
            if r.eps is not None and r.method == method and r.verdict is Verdict.CERTIFIED:
                b.lo = max(b.lo, r.eps)
            continue
        if r.verdict is Verdict.FALSIFIED:  # a re-checked counterexample within r.eps
            search.cex_at = r.eps if search.cex_at is None else min(search.cex_at, r.eps)
        if r.method != method:
            continue
        if r.verdict is Verdict.CERTIFIED:
            b.lo = max(b.lo, r.eps)
        elif r.verdict is Verdict.UNKNOWN:
            if method == ATTACK:
                b.lo = max(b.lo, r.eps)
            else:
                b.hi = r.eps if b.hi is None else min(b.hi, r.eps)
    return b


def run_radii(
    net: Network, x: np.ndarray, y: np.ndarray, start: int, methods: Sequence[str], options: Options,
    reference: Reference | None = None, tol: float = DEFAULT_TOL, records: Iterable[Record] = (),
    done: Iterable[int] = (), on_input: Callable[[list[Radius]], None] | None = None,
) -> list[Radius]:
    """:func:`certified_radii` for inputs ``x`` ``(N, in_dim)`` with labels ``y`` ``(N,)``, numbered from
    ``start``; inputs in ``done`` are skipped (resume), ``records`` (any inputs) give starting brackets, and
    ``on_input`` gets each input's radii as soon as they are known (to write them safely)."""
    by_index: dict[int, list[Record]] = {}
    for r in records:
        by_index.setdefault(r.index, []).append(r)
    skip = set(done)
    out: list[Radius] = []
    for i in range(len(x)):
        if start + i in skip:
            continue
        radii = certified_radii(net, start + i, x[i], int(y[i]), methods, options, reference, tol,
                                by_index.get(start + i, []))
        out += radii
        if on_input is not None:
            on_input(radii)
    return out


def read_radii(path: str | Path) -> list[Radius]:
    """The ``{"type": "radius", ...}`` lines of a results file (a torn last line is ignored)."""
    out = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                continue
            raise ReportError(f"{path} line {n} is not valid JSON") from None
        if isinstance(obj, dict) and obj.pop("type", None) == "radius":
            out.append(Radius.from_dict(obj))
    return out
