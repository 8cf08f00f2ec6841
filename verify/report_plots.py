"""Plots of a comparison report as PNG bytes (matplotlib, Agg canvas; imported only when plotting).

Figures are built with ``matplotlib.figure.Figure`` on an explicit Agg canvas, so no global pyplot
state or backend setting is touched.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Sequence

from verify.report_compare import radius_curve
from verify.report_record import Radius, RadiusKind, Record
from verify.report_summary import ATTACK, METHOD_ORDER, MethodSummary, fmt_eps, has_bound, method_rank
from verify.results import SolverStatus

TIME_FLOOR_S = 1e-4  # times below this are drawn at this value on the log axis


@dataclass(frozen=True)
class Plot:
    """One figure: a heading, a one-paragraph caption (plain text) and the PNG bytes."""

    title: str
    caption: str
    png: bytes


def _figure(width: float = 6.4, height: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _eps_axis(eps_values: Sequence[float | None]) -> tuple[dict[float | None, float], bool]:
    """x position of each eps: the value itself when all are numbers, else evenly spaced categories."""
    if all(e is not None for e in eps_values):
        return {e: float(e) for e in eps_values}, True  # type: ignore[arg-type]
    return {e: float(i) for i, e in enumerate(eps_values)}, False


def plot_certified_accuracy(summaries: Sequence[MethodSummary], radii: Sequence[Radius] = ()) -> Plot:
    """Certified accuracy of each verifier against eps, and the attack's upper curve dashed.

    With ``radii`` each method's curve is the fraction of inputs whose certified radius is at least eps (a
    step curve over every eps), and the results at the run's eps values are drawn as points on it.
    """
    eps_values = sorted({s.eps for s in summaries}, key=lambda e: (e is not None, e or 0.0))
    pos, numeric = _eps_axis(eps_values)
    fig = _figure(7.2, 4.0)
    ax = fig.add_subplot()
    methods = sorted({s.method for s in summaries} | {r.method for r in radii}, key=method_rank)
    colors = {m: f"C{i}" for i, m in enumerate(m for m in methods if m != ATTACK)}
    grid = _radius_grid(radii, [e for e in eps_values if e is not None]) if radii and numeric else []
    for m in methods:
        style = {"color": "black", "linestyle": "--"} if m == ATTACK else {"color": colors[m]}
        label = "attack: no counterexample (upper bound)" if m == ATTACK else m
        if grid and any(r.method == m for r in radii):
            ax.step(grid, [100 * v for v in radius_curve(radii, m, grid)], where="post", label=label, **style)
            label = None
        pts = sorted((pos[s.eps], s) for s in summaries if s.method == m)
        if pts:
            ys = [100 * (s.robust_accuracy_upper_bound if m == ATTACK else s.certified_accuracy) for _, s in pts]
            ax.plot([x for x, _ in pts], ys, marker="x" if m == ATTACK else "o", label=label,
                    linestyle="none" if grid else style["linestyle"] if m == ATTACK else "-", color=style["color"])
    if not numeric or (len(pos) <= 12 and not grid):
        ax.set_xticks(list(pos.values()), [fmt_eps(e) for e in pos], rotation=45 if len(pos) > 6 else 0)
    ax.set_ylim(-2, 102)
    ax.set_xlabel("eps (input units)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    caption = ("How to read it: each solid line is one method's certified accuracy (inputs certified / inputs) as eps grows; "
               "higher is better, and a sound method never rises above the dashed attack line, the share of inputs where "
               "the attack found no counterexample (an upper bound on robust accuracy). The space between the highest "
               "solid line and the dashed line is what no method here decides.")
    if grid:
        caption += (" Lines come from the certified radii (an input counts at eps when its radius is at least eps); "
                    "points are the results at the run's eps values.")
    return Plot("Certified accuracy against eps", caption, _png(fig))


def _radius_grid(radii: Sequence[Radius], eps_values: Sequence[float]) -> list[float]:
    """An eps grid from 0 to a little beyond the largest finite radius or eps of the run (401 points)."""
    finite = [v for r in radii for v in (r.lower, r.upper) if v is not None and r.kind is not RadiusKind.CAPPED]
    top = 1.15 * max(finite + list(eps_values) + [1e-6])
    return [top * k / 400 for k in range(401)]


def plot_radius_scatter(radii: Sequence[Radius], x_method: str, y_method: str) -> Plot:
    """Per-input certified radius of ``y_method`` against ``x_method``, with the diagonal."""
    ok = (RadiusKind.BRACKETED, RadiusKind.CAPPED)
    rx = {r.index: r for r in radii if r.method == x_method and r.kind in ok}
    ry = {r.index: r for r in radii if r.method == y_method and r.kind in ok}
    both = sorted(set(rx) & set(ry))
    fig = _figure(5.2, 5.0)
    ax = fig.add_subplot()
    xs, ys = [rx[i].lower for i in both], [ry[i].lower for i in both]
    above = sum(y > x + ry[i].tol for i, x, y in zip(both, xs, ys))
    below = sum(x > y + ry[i].tol for i, x, y in zip(both, xs, ys))
    ax.scatter(xs, ys, s=18, alpha=0.8, color="C0", label="one input")
    top = 1.05 * max(xs + ys + [1e-6])
    ax.plot([0, top], [0, top], color="grey", lw=1, label="y = x (equal radius)")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_aspect("equal")
    ax.set_xlabel(f"{x_method} certified radius (eps units)")
    ax.set_ylabel(f"{y_method} certified radius (eps units)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    left_out = len({r.index for r in radii if r.method in (x_method, y_method)}) - len(both)
    caption = (f"How to read it: each point is one input; points above the diagonal are inputs where {y_method} certifies "
               f"a larger ball than {x_method} ({above} of {len(both)} by more than the bisection tolerance; {below} "
               f"below it). {left_out} inputs (misclassified, or a search that failed) are not shown.")
    return Plot(f"Certified radius: {y_method} against {x_method}", caption, _png(fig))


def scatter_pair(methods: Sequence[str]) -> tuple[str, str] | None:
    """``(looser, tighter)`` methods to compare: (lp, sdp) when both are present, else the two tightest
    known verifiers present; ``None`` when fewer than two."""
    if "lp" in methods and "sdp" in methods:
        return ("lp", "sdp")
    known = sorted((m for m in methods if m in METHOD_ORDER and m != ATTACK), key=method_rank)
    return (known[-2], known[-1]) if len(known) >= 2 else None


def plot_bound_scatter(records: Sequence[Record], x_method: str, y_method: str, compare: bool = False) -> Plot:
    """Per-(input, eps) bound of ``y_method`` against ``x_method``, with y = x and the x = 0 / y = 0 lines
    (``compare``: the records come from compare mode, so the bounds are the relaxations' optima)."""
    bx = {(r.index, r.eps): r.bound for r in records if r.method == x_method and has_bound(r)}
    by = {(r.index, r.eps): r.bound for r in records if r.method == y_method and has_bound(r)}
    cases = {(r.index, r.eps) for r in records if r.method in (x_method, y_method)}
    both = sorted(set(bx) & set(by), key=lambda k: (k[1] is not None, k[1] or 0.0, k[0]))
    fig = _figure(5.2, 5.0)
    ax = fig.add_subplot()
    eps_values = sorted({k[1] for k in both}, key=lambda e: (e is not None, e or 0.0))
    for e in eps_values:
        pts = [k for k in both if k[1] == e]
        ax.scatter([bx[k] for k in pts], [by[k] for k in pts], s=14, alpha=0.8, label=f"eps {fmt_eps(e)}")
    vals = [bx[k] for k in both] + [by[k] for k in both] + [0.0]
    lo, hi = min(vals), max(vals)
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=1, label="y = x")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_xlabel(f"{x_method} bound (margin lower bound)")
    ax.set_ylabel(f"{y_method} bound (margin lower bound)")
    ax.grid(alpha=0.3)
    if both:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no input with finite bounds from both", transform=ax.transAxes, ha="center")
    dropped = len(cases) - len(both)
    what = ("Both are optima (compare mode), so the comparison is like with like." if compare else
            "Verdict mode: a relaxation stops at its first positive bound, so a certified point can sit anywhere above "
            "y = 0 (run with --compare for optima).")
    caption = (f"How to read it: each point is one input at one eps, its worst-case margin lower bound from each method. "
               f"Points above the diagonal: {y_method} is tighter; right of x = 0: certified by {x_method}; above y = 0: "
               f"certified by {y_method}; the upper-left quadrant holds the inputs only {y_method} certifies. {what} "
               f"{len(both)} points; {dropped} input/eps pairs without a finite bound from both are not shown.")
    return Plot(f"Bounds: {y_method} against {x_method}", caption, _png(fig))


def plot_times(records: Sequence[Record]) -> Plot | None:
    """Box plot of time per input for each method (log scale); ``None`` when no record has a finite time."""
    methods = sorted({r.method for r in records}, key=method_rank)
    data = {m: [max(r.time_s, TIME_FLOOR_S) for r in records
                if r.method == m and math.isfinite(r.time_s) and r.status is not SolverStatus.NOT_RUN]
            for m in methods}
    data = {m: v for m, v in data.items() if v}
    if not data:
        return None
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    ax.boxplot(list(data.values()), tick_labels=list(data.keys()))
    ax.set_yscale("log")
    ax.set_ylabel("seconds per input and eps")
    ax.grid(alpha=0.3, axis="y")
    caption = (f"Wall time per input and eps (all eps values together); times under {TIME_FLOOR_S:g} s are "
               "drawn at that value. Records of a method that did not run (status not_run) are left out.")
    return Plot("Time per method", caption, _png(fig))


def make_plots(records: Sequence[Record], summaries: Sequence[MethodSummary], radii: Sequence[Radius] = (),
               compare: bool = False) -> list[Plot]:
    """The report's plots: certified accuracy against eps, the radius scatter (when radii of two verifiers
    were searched), the bound scatter (when two verifiers ran; ``compare``: the bounds are optima) and times."""
    if not records and not radii:
        return []
    plots = [plot_certified_accuracy(summaries, radii)]
    rpair = scatter_pair(sorted({r.method for r in radii}))
    if rpair is not None:
        plots.append(plot_radius_scatter(radii, *rpair))
    pair = scatter_pair(sorted({r.method for r in records}))
    if pair is not None:
        plots.append(plot_bound_scatter(records, *pair, compare=compare))
    times = plot_times(records)
    if times is not None:
        plots.append(times)
    return plots
