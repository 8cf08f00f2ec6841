"""Per-(method, eps) summaries of report records, cross-method conflict checks and the terminal table.

Used by :class:`verify.report.Report`; see that module for the record type and the JSON form.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from verify.report_record import Radius, RadiusKind, Record
from verify.results import SolverStatus, Verdict
from verify.registry import METHODS

# Display order; also loosest to tightest among the verifiers (the attack first, exact last).
METHOD_ORDER = METHODS  # the registry's order: cheapest first
ATTACK = "attack"


@dataclass(frozen=True)
class MethodSummary:
    """Counts and times of one method at one eps over the ``n`` inputs it has records for.

    ``certified_accuracy = certified / n``. Times are in seconds over the finite ``time_s`` of records
    whose method ran (status not NOT_RUN); NaN when there are none. ``mean_gap_to_attack``
    is the mean of ``attack_bound - method_bound`` over inputs where both are usable (finite, see
    :func:`has_bound`): how far the sound lower bound lies below the attack's best margin; ``None`` for
    the attack itself, without attack records, or without such inputs.
    """

    method: str
    eps: float | None
    n: int
    certified: int
    falsified: int
    unknown: int
    error: int
    certified_accuracy: float
    mean_time_s: float
    median_time_s: float
    total_time_s: float
    mean_gap_to_attack: float | None

    @property
    def robust_accuracy_upper_bound(self) -> float:
        """``1 - falsified / n``: every falsified input has a checked counterexample."""
        return 1.0 - self.falsified / self.n

    def to_dict(self) -> dict:
        """JSON-safe dict (non-finite times as ``null``)."""
        d = dataclasses.asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


class ConflictKind(enum.Enum):
    """A contradiction between methods on one (input, eps): a soundness bug in some method."""

    CERTIFIED_AND_FALSIFIED = "certified and falsified"
    BOUND_ABOVE_ATTACK = "sound lower bound above the attack's margin"
    RADIUS_ABOVE_ATTACK = "certified radius at or above the attack's counterexample radius"


@dataclass(frozen=True)
class Conflict:
    """``methods`` contradict each other on input ``index`` at ``eps``."""

    index: int
    eps: float | None
    kind: ConflictKind
    methods: tuple[str, ...]


def method_rank(method: str) -> tuple[int, str]:
    """Sort key: :data:`METHOD_ORDER` first, other methods after, alphabetically."""
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def _eps_rank(eps: float | None) -> tuple[int, float]:
    return (0, 0.0) if eps is None else (1, eps)


def has_bound(r: Record) -> bool:
    """Whether ``r.bound`` is a usable finite value: not from an ERROR, and (except for the attack, whose
    margin at a real point stays valid) not from a method that did not run (status NOT_RUN)."""
    ran = r.method == ATTACK or r.status is not SolverStatus.NOT_RUN
    return ran and r.verdict is not Verdict.ERROR and math.isfinite(r.bound)


def _summarize(method: str, eps: float | None, recs: list[Record], attack: dict[int, float] | None) -> MethodSummary:
    counts = {v: sum(r.verdict is v for r in recs) for v in Verdict}
    times = [r.time_s for r in recs if math.isfinite(r.time_s) and r.status is not SolverStatus.NOT_RUN]
    gap = None
    if attack is not None and method != ATTACK:
        gaps = [attack[r.index] - r.bound for r in recs if r.index in attack and has_bound(r)]
        gap = statistics.fmean(gaps) if gaps else None
    return MethodSummary(
        method, eps, len(recs), counts[Verdict.CERTIFIED], counts[Verdict.FALSIFIED], counts[Verdict.UNKNOWN],
        counts[Verdict.ERROR], counts[Verdict.CERTIFIED] / len(recs),
        statistics.fmean(times) if times else math.nan, statistics.median(times) if times else math.nan,
        math.fsum(times) if times else math.nan, gap,
    )


def summarize(records: Sequence[Record]) -> list[MethodSummary]:
    """One :class:`MethodSummary` per (method, eps), sorted by eps then :func:`method_rank`."""
    groups: dict[tuple[float | None, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r.eps, r.method), []).append(r)
    out = []
    for eps, method in sorted(groups, key=lambda k: (_eps_rank(k[0]), method_rank(k[1]))):
        attack_recs = groups.get((eps, ATTACK))
        attack = {r.index: r.bound for r in attack_recs if has_bound(r)} if attack_recs else None
        out.append(_summarize(method, eps, groups[(eps, method)], attack))
    return out


def find_conflicts(records: Sequence[Record], tol: float = 1e-6) -> list[Conflict]:
    """Contradictions on each (index, eps): some method CERTIFIED and another FALSIFIED, or a non-attack
    method's bound exceeds the attack's margin by more than ``tol * (1 + |margin|)``."""
    by_case: dict[tuple[int, float | None], list[Record]] = {}
    for r in records:
        by_case.setdefault((r.index, r.eps), []).append(r)
    out = []
    for (index, eps), recs in sorted(by_case.items(), key=lambda kv: (kv[0][0], _eps_rank(kv[0][1]))):
        cert = [r.method for r in recs if r.verdict is Verdict.CERTIFIED]
        fals = [r.method for r in recs if r.verdict is Verdict.FALSIFIED]
        if cert and fals:
            out.append(Conflict(index, eps, ConflictKind.CERTIFIED_AND_FALSIFIED, tuple(cert + fals)))
        for a in (r for r in recs if r.method == ATTACK and has_bound(r)):
            above = [r.method for r in recs if r.method != ATTACK and has_bound(r)
                     and r.bound > a.bound + tol * (1.0 + abs(a.bound))]
            if above:
                out.append(Conflict(index, eps, ConflictKind.BOUND_ABOVE_ATTACK, (ATTACK, *above)))
    return out


def find_radius_conflicts(radii: Sequence[Radius]) -> list[Conflict]:
    """Inputs where a verifier certified a ball that holds the attack's counterexample (``eps`` is None)."""
    attack = {r.index: r.upper for r in radii if r.method == ATTACK and r.kind is RadiusKind.BRACKETED}
    out = []
    for index in sorted(attack):
        above = [r.method for r in radii if r.index == index and r.method != ATTACK and attack[index] is not None
                 and r.kind in (RadiusKind.BRACKETED, RadiusKind.CAPPED) and r.lower > 0 and r.lower >= attack[index]]
        if above:
            out.append(Conflict(index, None, ConflictKind.RADIUS_ABOVE_ATTACK, (ATTACK, *above)))
    return out


def conflict_where(c: Conflict) -> str:
    """``eps 0.1`` (or ``radius search`` for a radius conflict)."""
    return "radius search" if c.kind is ConflictKind.RADIUS_ABOVE_ATTACK else f"eps {fmt_eps(c.eps)}"


TABLE_HEADER = ("method", "n", "cert", "fals", "unk", "err", "cert.acc", "1-fals", "mean s", "median s", "total s", "gap")


def fmt_num(v: float | None, digits: int = 3) -> str:
    """Compact number for tables: ``-`` for ``None``, ``nan``/``inf`` spelled out."""
    if v is None:
        return "-"
    if not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"


def fmt_eps(eps: float | None) -> str:
    """``eps`` for headings (``box`` when the property is not an eps-ball)."""
    return "box" if eps is None else f"{eps:g}"


def summary_row(s: MethodSummary) -> tuple[str, ...]:
    """Cells of :data:`TABLE_HEADER` for one summary."""
    return (
        s.method, str(s.n), str(s.certified), str(s.falsified), str(s.unknown), str(s.error),
        f"{100 * s.certified_accuracy:.1f}%", f"{100 * s.robust_accuracy_upper_bound:.1f}%",
        fmt_num(s.mean_time_s), fmt_num(s.median_time_s), fmt_num(s.total_time_s, 2), fmt_num(s.mean_gap_to_attack),
    )


def format_table(summaries: Sequence[MethodSummary], conflicts: Sequence[Conflict], eps_units: str) -> str:
    """Aligned text table, one block per eps (methods in :func:`method_rank` order), then conflict warnings.

    ``cert.acc`` = certified / n (a lower bound on robust accuracy); ``1-fals`` = 1 - falsified / n (an
    upper bound); ``gap`` = mean (attack margin - method bound).
    """
    rows: list[tuple[str, ...] | str] = []
    last: object = object()
    for s in summaries:
        if s.eps != last:
            rows.append(f"eps = {fmt_eps(s.eps)}")
            last = s.eps
        rows.append(summary_row(s))
    cells = [TABLE_HEADER] + [r for r in rows if isinstance(r, tuple)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(TABLE_HEADER))]

    def line(cols: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths))).rstrip()

    out = [line(TABLE_HEADER), "-" * len(line(TABLE_HEADER))]
    out += [r if isinstance(r, str) else line(r) for r in rows]
    out.append(f"eps in {eps_units}; times in seconds; gap = mean(attack margin - bound).")
    out.append("cert.acc = certified/n (lower bound on robust accuracy); 1-fals = 1 - falsified/n (upper bound).")
    for c in conflicts:
        out.append(f"WARNING: input {c.index}, {conflict_where(c)}: {c.kind.value} ({', '.join(c.methods)}); "
                   "some method is unsound here")
    return "\n".join(out)
