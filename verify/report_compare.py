"""What a comparison report says first: which inputs the tightest relaxation certifies that others do not,
how much tighter its optima are, how long each method takes, how much of the gap to the attack stays open,
and the certified radii.

Pure functions of the records (:class:`verify.report_record.Record`), radii
(:class:`verify.report_record.Radius`) and metadata; :func:`headline` turns them into the report's first
lines (terminal and HTML). Tightness needs compare mode (``Options.compare``): in verdict mode a
relaxation stops at its first positive bound, so its values are not optima and are not compared.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from verify.report_record import ATTACK, Radius, RadiusKind, Record
from verify.report_summary import fmt_eps, fmt_num, has_bound, method_rank
from verify.results import SolverStatus, Verdict

#: a relaxation's optimum below another's by more than this (relative) counts as looser on that margin
TIGHTNESS_TOL = 1e-6
#: the gap (attack - looser optimum) below which a margin is left out of the "share closed" median
_MIN_GAP = 1e-9


def compare_mode(meta: dict) -> bool:
    """Whether the records were made in compare mode (every relaxation solved to its optimum)."""
    options = meta.get("options")
    return bool(isinstance(options, dict) and options.get("compare"))


def _eps_values(records: Sequence[Record]) -> list[float | None]:
    return sorted({r.eps for r in records}, key=lambda e: (e is not None, e or 0.0))


def _by_case(records: Sequence[Record]) -> dict[tuple[float | None, int], dict[str, Record]]:
    out: dict[tuple[float | None, int], dict[str, Record]] = {}
    for r in records:
        out.setdefault((r.eps, r.index), {})[r.method] = r
    return out


@dataclass(frozen=True)
class Exclusive:
    """At one eps, over the ``n`` inputs both methods have records for: how many ``tight`` certifies that
    ``loose`` does not (``only_tight``), and the other way round (``only_loose``)."""

    eps: float | None
    tight: str
    loose: str
    n: int
    only_tight: int
    only_loose: int


def exclusive(records: Sequence[Record], tight: str, loose: str) -> list[Exclusive]:
    """:class:`Exclusive` counts per eps (eps values where both methods have records)."""
    out = []
    cases = _by_case(records)
    for eps in _eps_values(records):
        pairs = [(c[tight], c[loose]) for (e, _), c in cases.items() if e == eps and tight in c and loose in c]
        if not pairs:
            continue
        cert = Verdict.CERTIFIED
        out.append(Exclusive(eps, tight, loose, len(pairs),
                             sum(a.verdict is cert and b.verdict is not cert for a, b in pairs),
                             sum(b.verdict is cert and a.verdict is not cert for a, b in pairs)))
    return out


def _ran(r: Record | None) -> bool:
    return r is not None and r.status is not SolverStatus.NOT_RUN and r.verdict is not Verdict.ERROR and r.margins is not None


@dataclass(frozen=True)
class Tightness:
    """Per-margin optima of ``tight`` against ``loose`` at one eps, over ``n`` (input, margin) pairs where both
    are finite: the median of ``tight - loose``; the median share of the gap between ``loose`` and the attack's
    margin that ``tight`` closes (``(tight - loose) / (attack - loose)``: 0 = no better, 1 = reaches the
    attack; over the ``n_closed`` pairs with an attack value above ``loose``); and how many margins have
    ``tight`` below ``loose`` (by more than a relative :data:`TIGHTNESS_TOL`)."""

    eps: float | None
    tight: str
    loose: str
    n: int
    median_diff: float
    n_closed: int
    median_closed: float | None
    below: int


def tightness(records: Sequence[Record], tight: str, loose: str) -> list[Tightness]:
    """:class:`Tightness` per eps, from records' per-margin values (meaningful in compare mode only)."""
    out = []
    cases = _by_case(records)
    for eps in _eps_values(records):
        diffs, closed, below = [], [], 0
        for (e, _), c in cases.items():
            a, b = c.get(tight), c.get(loose)
            if e != eps or not (_ran(a) and _ran(b)) or len(a.margins) != len(b.margins):  # type: ignore[union-attr, arg-type]
                continue
            att = c.get(ATTACK)
            att_m = att.margins if att is not None and att.margins is not None and len(att.margins) == len(a.margins) else None  # type: ignore[union-attr]
            for k, (t, lo) in enumerate(zip(a.margins, b.margins)):  # type: ignore[union-attr]
                if not (math.isfinite(t) and math.isfinite(lo)):
                    continue
                diffs.append(t - lo)
                below += t < lo - TIGHTNESS_TOL * (1.0 + abs(lo))
                if att_m is not None and math.isfinite(att_m[k]) and att_m[k] - lo > _MIN_GAP:
                    closed.append((t - lo) / (att_m[k] - lo))
        if diffs:
            out.append(Tightness(eps, tight, loose, len(diffs), statistics.median(diffs), len(closed),
                                 statistics.median(closed) if closed else None, below))
    return out


@dataclass(frozen=True)
class OpenGap:
    """At one eps, over ``n`` inputs: ``certified`` by some method, ``falsified`` (a checked counterexample), and
    ``open`` (neither); ``median_gap``: over the open inputs, the median of (attack's margin - best certified
    lower bound), how far the best certificate stays from the attack (None without such inputs)."""

    eps: float | None
    n: int
    certified: int
    falsified: int
    open: int
    median_gap: float | None


def open_gaps(records: Sequence[Record]) -> list[OpenGap]:
    """:class:`OpenGap` per eps."""
    out = []
    cases = _by_case(records)
    for eps in _eps_values(records):
        mine = [c for (e, _), c in cases.items() if e == eps]
        cert = fals = 0
        gaps = []
        for c in mine:
            if any(r.verdict is Verdict.CERTIFIED for r in c.values()):
                cert += 1
            elif any(r.verdict is Verdict.FALSIFIED for r in c.values()):
                fals += 1
            else:
                bounds = [r.bound for m, r in c.items() if m != ATTACK and has_bound(r)]
                att = c.get(ATTACK)
                if bounds and att is not None and has_bound(att):
                    gaps.append(att.bound - max(bounds))
        out.append(OpenGap(eps, len(mine), cert, fals, len(mine) - cert - fals, statistics.median(gaps) if gaps else None))
    return out


def median_times(records: Sequence[Record]) -> dict[str, float]:
    """Median wall time per (input, eps) of each method, over the records where it ran."""
    out = {}
    for m in sorted({r.method for r in records}, key=method_rank):
        ts = [r.time_s for r in records if r.method == m and r.status is not SolverStatus.NOT_RUN and math.isfinite(r.time_s)]
        if ts:
            out[m] = statistics.median(ts)
    return out


def _radius_value(r: Radius) -> float | None:
    return None if r.kind is RadiusKind.ERROR else r.radius


def radius_medians(radii: Sequence[Radius]) -> dict[str, float]:
    """Median radius of each method over inputs (misclassified inputs count as 0; the attack's inputs
    without a counterexample count as the domain's extent)."""
    out = {}
    for m in sorted({r.method for r in radii}, key=method_rank):
        vals = [v if v is not None else r.cap for r in radii if r.method == m and r.kind is not RadiusKind.ERROR
                for v in [_radius_value(r)]]
        if vals:
            out[m] = statistics.median(vals)
    return out


def radius_wins(radii: Sequence[Radius], tight: str, loose: str) -> tuple[int, int, int]:
    """``(larger, smaller, n)``: on how many of the ``n`` inputs (correctly classified, both searched) the
    ``tight`` radius exceeds the ``loose`` one by more than the tolerance, and the other way round."""
    a = {r.index: r for r in radii if r.method == tight and r.kind in (RadiusKind.BRACKETED, RadiusKind.CAPPED)}
    b = {r.index: r for r in radii if r.method == loose and r.kind in (RadiusKind.BRACKETED, RadiusKind.CAPPED)}
    both = sorted(set(a) & set(b))
    larger = sum(a[i].lower > b[i].lower + a[i].tol for i in both)
    smaller = sum(b[i].lower > a[i].lower + a[i].tol for i in both)
    return larger, smaller, len(both)


def comparison_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """``(tight, loose)`` pairs to report: the SDP against the LP and alpha-CROWN when present, else the two
    tightest verifiers present."""
    verifiers = sorted((m for m in methods if m != ATTACK), key=method_rank)
    if "sdp" in verifiers:
        pairs = [("sdp", m) for m in ("lp", "alpha-crown", "alpha-crown-output", "crown") if m in verifiers]
        return pairs[:2] if pairs else []
    return [(verifiers[-1], verifiers[-2])] if len(verifiers) >= 2 else []


def _per_eps(items: Sequence[tuple[float | None, str]]) -> str:
    """``"A at eps 0.05, B at eps 0.1"`` (just ``"A"`` for a single eps-less item)."""
    if len(items) == 1 and items[0][0] is None:
        return items[0][1]
    return ", ".join(f"{text} at eps {fmt_eps(eps)}" for eps, text in items)


def _counts(xs: Sequence[Exclusive], attr: str) -> str:
    """``"6 of 20 at eps 0.1, 3 of 20 at eps 0.12 (none at eps 0.02, 0.05)"``, or ``"none"``."""
    hits = [(x.eps, f"{getattr(x, attr)} of {x.n}") for x in xs if getattr(x, attr)]
    zero = [fmt_eps(x.eps) for x in xs if not getattr(x, attr)]
    if not hits:
        return "none"
    return _per_eps(hits) + (f" (none at eps {', '.join(zero)})" if zero else "")


def headline(records: Sequence[Record], radii: Sequence[Radius], meta: dict) -> list[str]:
    """The report's first lines, plain text: exclusive certifications, tightness (compare mode), time per
    method, the gap left open per eps, and certified radii when searched."""
    lines: list[str] = []
    methods = sorted({r.method for r in records} | {r.method for r in radii}, key=method_rank)
    pairs = comparison_pairs(methods)
    for tight, loose in pairs:
        xs = exclusive(records, tight, loose)
        if xs:
            lines.append(f"Certified by {tight} and not by {loose}: {_counts(xs, 'only_tight')}; the other way round: "
                         f"{_counts(xs, 'only_loose')}.")
    if pairs and compare_mode(meta):
        tight, loose = pairs[0]
        ts = tightness(records, tight, loose)
        if ts:
            lines.append(f"Median tightness {tight} - {loose} (optima per input and margin): "
                         + _per_eps([(t.eps, fmt_num(t.median_diff)) for t in ts]) + ".")
            closed = [(t.eps, f"{int(round(100 * t.median_closed))}%") for t in ts if t.median_closed is not None]
            if closed:
                lines.append(f"Share of the gap between the {loose} optimum and the attack's margin that {tight} closes "
                             "(median): " + _per_eps(closed) + ".")
            below = sum(t.below for t in ts)
            if below:
                lines.append(f"{tight} is below {loose} on {below} of {sum(t.n for t in ts)} margins.")
    elif pairs:
        lines.append("Verdict mode: each relaxation stopped at its first positive bound, so bounds are not optima and "
                     "tightness is not compared (run with --compare, or --report without --verdicts).")
    times = median_times(records)
    if times:
        lines.append("Median time per input and eps: " + ", ".join(f"{m} {fmt_num(t)} s" for m, t in times.items()) + ".")
    gaps = open_gaps(records)
    if gaps:
        lines.append("Left open (neither certified by any method nor falsified): "
                     + _per_eps([(g.eps, f"{g.open} of {g.n}") for g in gaps]) + ".")
        med = [(g.eps, fmt_num(g.median_gap)) for g in gaps if g.median_gap is not None]
        if med:
            lines.append("Median gap on those (attack's margin - best certified bound): " + _per_eps(med) + ".")
    lines += radius_lines(radii)
    return lines


def radius_lines(radii: Sequence[Radius]) -> list[str]:
    """Headline lines about certified radii (none when no radius was searched)."""
    if not radii:
        return []
    lines = []
    tol = radii[0].tol
    med = radius_medians(radii)
    verifiers = [m for m in med if m != ATTACK]
    parts = [f"{m} {fmt_num(v)}" for m, v in med.items() if m != ATTACK]
    text = ("Certified radius (median over inputs, bisection to " + fmt_num(tol) + "): " + ", ".join(parts)
            if parts else "No certifying method was run, so no certified radius")
    if ATTACK in med:
        text += f"; the attack finds counterexamples within a median {fmt_num(med[ATTACK])}"
    lines.append(text + ".")
    for tight, loose in comparison_pairs(verifiers)[:1]:
        larger, smaller, n = radius_wins(radii, tight, loose)
        lines.append(f"{tight} certifies a larger radius than {loose} on {larger} of {n} inputs ({loose} larger on {smaller}).")
    capped = sorted({r.index for r in radii if r.kind is RadiusKind.CAPPED})
    mis = sorted({r.index for r in radii if r.kind is RadiusKind.MISCLASSIFIED})
    if mis:
        lines.append(f"Radius 0 for the misclassified input(s) {', '.join(map(str, mis))}.")
    if capped:
        lines.append(f"Certified on the whole input domain (radius capped at the domain's extent): input(s) "
                     f"{', '.join(map(str, capped))}.")
    errors = [r for r in radii if r.kind is RadiusKind.ERROR]
    if errors:
        lines.append(f"{len(errors)} radius search(es) stopped on a method error (see the radius table).")
    return lines


RADIUS_HEADER = ("method", "n", "median radius", "capped", "misclassified", "mean probes", "total s")


def radius_rows(radii: Sequence[Radius]) -> list[tuple[str, ...]]:
    """Cells of :data:`RADIUS_HEADER`, one row per method (the attack's radius is its counterexample radius)."""
    med = radius_medians(radii)
    rows = []
    for m in sorted({r.method for r in radii}, key=method_rank):
        mine = [r for r in radii if r.method == m]
        rows.append((m, str(len(mine)), fmt_num(med.get(m)), str(sum(r.kind is RadiusKind.CAPPED for r in mine)),
                     str(sum(r.kind is RadiusKind.MISCLASSIFIED for r in mine)),
                     f"{statistics.fmean(r.evaluations for r in mine):.1f}", fmt_num(math.fsum(r.time_s for r in mine), 2)))
    return rows


def radius_table(radii: Sequence[Radius]) -> str:
    """Aligned text table of :func:`radius_rows` with a line saying what the numbers mean."""
    cells = [RADIUS_HEADER, *radius_rows(radii)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(RADIUS_HEADER))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    tol = fmt_num(radii[0].tol) if radii else "-"
    lines.append(f"certified radius: largest eps certified, by bisection to {tol} (input units); attack: smallest eps "
                 "with a counterexample (an upper bound on the true radius).")
    return "\n".join(lines)


def radius_curve(radii: Sequence[Radius], method: str, eps: Sequence[float]) -> list[float]:
    """Fraction of inputs (of those with a radius of ``method``) whose radius is at least each eps (verifiers:
    certified accuracy) or, for the attack, for which no counterexample is known at that eps (an upper bound
    on robust accuracy)."""
    mine = [r for r in radii if r.method == method]
    if not mine:
        return [math.nan for _ in eps]
    out = []
    for e in eps:
        if method == ATTACK:
            ok = sum(1 for r in mine if r.kind is not RadiusKind.MISCLASSIFIED and (r.upper is None or r.upper > e))
        else:
            ok = sum(1 for r in mine if r.kind is not RadiusKind.MISCLASSIFIED and r.kind is not RadiusKind.ERROR
                     and r.lower >= e)
        out.append(ok / len(mine))
    return out
