"""Exact MILP encoding of a ReLU network over a box (big-M from pre-activation bounds), on HiGHS.

The triangle LP of :mod:`verify.relax.lp` plus, for every unstable neuron, a binary ``a`` and the
rows ``z <= s - l (1 - a)`` and ``z <= u a``. The minimum of a margin over the MILP equals its
minimum over the box (up to the MIP gap). Certification uses HiGHS' MIP *dual bound* minus a
safety allowance for the solver's feasibility/integrality tolerances; unlike the LP, this bound is
not re-checked from a certificate (no cheap certificate exists for a MILP).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from verify.bounds import preactivation_bounds
from verify.budget import Budget
from verify.network import Network
from verify.options import Options
from verify.relax.lp import TriangleLP, build_triangle_lp, margin_objective
from verify.results import MethodResult, SolverStatus, Verdict, group_bound
from verify.solvers.base import LinearProgram, LPSolution
from verify.solvers.highs import HighsBackend
from verify.spec import InputBox, OutputSpec, Property

MIP_GAP = 1e-6


@dataclass(frozen=True, eq=False)
class ExactResult:
    """Per group: sound lower bound on the worst margin, the incumbent input and value, the status."""

    lower: float
    incumbent_x: np.ndarray | None
    incumbent_value: float
    status: SolverStatus


def build_milp(net: Network, box: InputBox, hidden_bounds: list, extra_cols: int = 0) -> tuple[LinearProgram, TriangleLP]:
    """The MILP: triangle LP + one binary per unstable neuron (+ ``extra_cols`` free continuous columns)."""
    tri = build_triangle_lp(net, box, hidden_bounds)
    n0, r0 = tri.lp.n_cols, tri.lp.n_rows
    # at least one binary column (a dummy one when every neuron is stable) so HiGHS runs its MIP
    # solver and reports a MIP dual bound
    n_bin = max(1, sum(lay.unstable.size for lay in tri.layers))
    rows, cols, vals, rlo, rhi = [], [], [], [], []
    r, b = r0, n0
    for lay, l, u in zip(tri.layers, tri.lower, tri.upper):
        j = lay.unstable
        k = j.size
        bins = b + np.arange(k)
        r1, r2 = r + np.arange(k), r + k + np.arange(k)
        # z - s - l a <= -l   and   z - u a <= 0
        rows += [r1, r1, r1, r2, r2]
        cols += [lay.z_col + j, lay.s_col + j, bins, lay.z_col + j, bins]
        vals += [np.ones(k), -np.ones(k), -l[j], np.ones(k), -u[j]]
        rlo += [np.full(2 * k, -np.inf)]
        rhi += [-l[j], np.zeros(k)]
        r, b = r + 2 * k, b + k
    n_cols = n0 + n_bin + extra_cols
    extra = sp.csc_matrix(
        (np.concatenate(vals) if vals else [], (np.concatenate(rows) - r0 if rows else [], np.concatenate(cols) if cols else [])),
        shape=(r - r0, n_cols),
    )
    a = sp.vstack([sp.hstack([tri.lp.A, sp.csc_matrix((r0, n_bin + extra_cols))]), extra]).tocsc()
    integer = np.zeros(n_cols, dtype=bool)
    integer[n0 : n0 + n_bin] = True
    lp = LinearProgram(
        a,
        np.concatenate([tri.lp.row_lower, *rlo]) if rlo else tri.lp.row_lower,
        np.concatenate([tri.lp.row_upper, *rhi]) if rhi else tri.lp.row_upper,
        np.concatenate([tri.lp.col_lower, np.zeros(n_bin), np.full(extra_cols, -np.inf)]),
        np.concatenate([tri.lp.col_upper, np.ones(n_bin), np.full(extra_cols, np.inf)]),
        integer,
    )
    return lp, tri


def exact_group(
    net: Network, box: InputBox, C: np.ndarray, d: np.ndarray, hidden_bounds: list, options: Options
) -> ExactResult:
    """Exact ``min_x max_k (C y + d)_k`` over ``box`` (one row: its plain minimum)."""
    m = C.shape[0]
    if m == 1:
        lp, tri = build_milp(net, box, hidden_bounds)
        cost, off = margin_objective(net, tri, C[0], float(d[0]))
        cost = np.concatenate([cost, np.zeros(lp.n_cols - cost.size)])
    else:  # epigraph variable t (last column): t >= margin_k for every k
        lp, tri = build_milp(net, box, hidden_bounds, extra_cols=1)
        rows = []
        for k in range(m):
            ck, ok = margin_objective(net, tri, C[k], float(d[k]))
            rows.append((np.concatenate([-ck, np.zeros(lp.n_cols - ck.size - 1), [1.0]]), ok))
        a = sp.vstack([lp.A, sp.csc_matrix(np.array([r[0] for r in rows]))]).tocsc()
        offs = np.array([r[1] for r in rows])
        lp = LinearProgram(a, np.concatenate([lp.row_lower, offs]), np.concatenate([lp.row_upper, np.full(m, np.inf)]),
                           lp.col_lower, lp.col_upper, lp.integer)
        cost, off = np.zeros(lp.n_cols), 0.0
        cost[-1] = 1.0
    sol = HighsBackend(MIP_GAP).solve_many(lp, [cost], [off], options.time_limit)[0]
    return _exact_result(net, box, C, d, sol, tri)


def _exact_result(net, box, C, d, sol: LPSolution, tri: TriangleLP) -> ExactResult:  # type: ignore[no-untyped-def]
    x = None if sol.x is None else np.clip(sol.x[: net.in_dim], box.lower, box.upper)
    value = float(np.max(C @ net.forward(x) + d)) if x is not None else float("inf")
    scale = 1.0 + max([float(np.max(np.abs(u))) for u in tri.upper] + [float(np.max(np.abs(l))) for l in tri.lower] + [0.0])
    safety = 1e-6 * scale * (1.0 + float(np.abs(C).sum(axis=1).max()))
    if sol.status in (SolverStatus.OPTIMAL, SolverStatus.TIME_LIMIT, SolverStatus.ITERATION_LIMIT) and np.isfinite(sol.dual_bound):
        lower = sol.dual_bound - safety
    elif sol.status is SolverStatus.INFEASIBLE:
        lower = float("inf")  # empty relaxation: the box has no point (cannot happen for a valid box)
    else:
        lower = float("-inf")
    return ExactResult(float(min(lower, value)) if x is not None else lower, x, value, sol.status)


def exact_margins(net: Network, box: InputBox, spec: OutputSpec, options: Options) -> tuple[np.ndarray, SolverStatus]:
    """Lower bounds ``(m,)`` on each margin row's minimum over ``box``, exact up to the MIP gap (1e-6)."""
    preact = preactivation_bounds(net, box, options.bounds, options)
    res = [exact_group(net, box, spec.C[k : k + 1], spec.d[k : k + 1], preact, options) for k in range(spec.n_margins)]
    bad = [r.status for r in res if r.status is not SolverStatus.OPTIMAL]
    return np.array([r.lower for r in res]), (bad[0] if bad else SolverStatus.OPTIMAL)


#: compare mode skips the MILP above this many unstable ReLUs (each is a binary variable)
EXACT_MAX_UNSTABLE = 80


def exact_size_note(net: Network, preact: list) -> str | None:
    """Why the MILP is skipped in compare mode (too many unstable ReLUs for an exact answer in reasonable
    time), or None when it is small enough."""
    n = sum(int(np.sum((l < 0) & (u > 0))) for l, u in preact[: len(net.layers) - 1])
    if n <= EXACT_MAX_UNSTABLE:
        return None
    return (f"exact skipped: {n} unstable ReLUs (more than {EXACT_MAX_UNSTABLE} binary variables); the MILP could "
            "take hours here; run it without --compare to try it under --time-limit")


def certify_exact(net: Network, prop: Property, options: Options) -> MethodResult:
    """Method "exact": every group's MILP min-max margin, then the verdict.

    ``bound`` is a sound lower bound on the property's worst-case margin, ``min`` over groups of the
    MIP dual bounds (minus the tolerance allowance): up to the MIP gap it is the exact minimum, for
    FALSIFIED too (every group is solved, so the bound never comes from one group alone).
    ``margin_bounds[i]`` is row ``i``'s exact minimum for one-row groups; for a group of several rows
    every row carries the group's exact ``min_x max_i`` value (so ``OutputSpec.holds`` reads it right).
    CERTIFIED if the bound is > 0; FALSIFIED if some group's incumbent, re-evaluated on ``net``,
    violates the property (the counterexample is the incumbent with the smallest worst-case margin);
    otherwise UNKNOWN. ``options.timeout`` caps the whole method (groups not reached keep ``-inf``). In
    compare mode (``options.compare``) networks with more than :data:`EXACT_MAX_UNSTABLE` unstable ReLUs are
    skipped: UNKNOWN, status NOT_RUN, the reason in the message."""
    t0 = time.perf_counter()
    spec = prop.output
    budget = Budget.start(options.timeout)
    preact = preactivation_bounds(net, prop.box, options.bounds, options)
    per_row = np.full(spec.n_margins, -np.inf)
    too_big = exact_size_note(net, preact) if options.compare else None
    if too_big is not None:
        return MethodResult("exact", Verdict.UNKNOWN, float("nan"), per_row, time.perf_counter() - t0,
                            SolverStatus.NOT_RUN, too_big)
    statuses = []
    incumbents = []
    for g in spec.groups:
        if budget.expired():
            statuses.append(SolverStatus.TIME_LIMIT)
            continue
        idx = list(g)
        res = exact_group(net, prop.box, spec.C[idx], spec.d[idx], preact, budget.options_for(options))
        statuses.append(res.status)
        per_row[idx] = res.lower  # one row: its minimum; several: the group's min-max, on every row
        if res.incumbent_x is not None:
            incumbents.append(res.incumbent_x)
    bad = [s for s in statuses if s is not SolverStatus.OPTIMAL]
    status = bad[0] if bad else SolverStatus.OPTIMAL
    bound = group_bound(spec.groups, per_row)
    elapsed = time.perf_counter() - t0
    cex = _worst_counterexample(net, spec, incumbents)
    if cex is not None:
        return MethodResult("exact", Verdict.FALSIFIED, bound, per_row, elapsed, status,
                            f"MILP incumbent is a counterexample (worst-case margin >= {bound:.6g})", cex)
    verdict = Verdict.CERTIFIED if bound > 0 else Verdict.UNKNOWN
    return MethodResult("exact", verdict, bound, per_row, elapsed, status,
                        "MIP dual bound > 0 for every group" if bound > 0 else "MILP did not decide")


def _worst_counterexample(net: Network, spec: OutputSpec, xs: list[np.ndarray]) -> np.ndarray | None:
    """The input of ``xs`` with the smallest worst-case margin on ``net`` if it violates ``spec``, else None."""
    if not xs:
        return None
    pts = np.stack(xs)
    margins = spec.margins(net.forward(pts))
    worst = np.array([min(float(np.max(row[list(g)])) for g in spec.groups) for row in margins])
    best = int(np.argmin(worst))
    return pts[best] if bool(spec.violated(net.forward(pts[best : best + 1]))[0]) else None
