"""Method "sdp": the SDP relaxation of Raghunathan, Steinhardt & Liang (2018), solved soundly.

The relaxation (see :mod:`verify.relax.sdp_model`) is built once per input box, in scaled
coordinates with stable neurons removed or substituted, and shared by every margin row. Each row is
solved by a backend (``options.sdp_backend``): "dual" (:mod:`verify.solvers.sdp_dual`, our structured
primal-dual interior-point method, scales to MNIST networks) or "cvxpy"
(:mod:`verify.solvers.sdp_cvxpy`, Clarabel/SCS reference for small networks); ``options.sdp_triangle``
adds the triangle cuts ``z <= u (s - l) / (u - l)`` (then at least as tight as the LP). Whatever the backend,
the reported bound of a row is the one :func:`verify.certificate.check_sdp_certificate` recomputes
from the saved multipliers; a row certifies only when that checked bound is finite and ``> 0``.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from verify.bounds import preactivation_bounds
from verify.bounds_proof import ProvedBounds, proof_of
from verify.certificate import CertificateError, SDPCertificate, SDPChecker, check_sdp_certificate
from verify.network import Network
from verify.options import Options
from verify.relax.sdp_model import Multipliers, SDPRelaxation, build_relaxation
from verify.results import MethodResult, SolverStatus, Verdict, group_bound
from verify.spec import InputBox, OutputSpec, Property

log = logging.getLogger(__name__)

Bounds = list[tuple[np.ndarray, np.ndarray]]

_SEVERITY = [SolverStatus.OPTIMAL, SolverStatus.NOT_RUN, SolverStatus.ITERATION_LIMIT, SolverStatus.TIME_LIMIT,
             SolverStatus.OPTIMAL_INACCURATE, SolverStatus.NUMERICAL_ERROR]


def sdp_margin_bounds(
    net: Network,
    box: InputBox,
    spec: OutputSpec,
    options: Options,
    preact: Bounds | None = None,
    target: float | None = None,
    stop_on_failed_group: bool = False,
    known: np.ndarray | None = None,
    rows: Sequence[int] | None = None,
) -> tuple[np.ndarray, SolverStatus, list[SDPCertificate | None]]:
    """Checked SDP lower bounds ``(m,)`` on every margin row of ``spec`` over ``box``.

    Each row's bound is the best of the checked values of the SDP dual points tried for it (the interior-point
    iterate and the triangle LP's dual point, which with ``options.sdp_triangle`` is never below an LP or
    alpha-CROWN bound on the same pre-activation bounds) and of ``known``.

    Args:
        preact: pre-activation bounds per layer (last = logits); ``options.sdp_bounds`` when None (pass the
            alpha-CROWN bounds already computed, e.g. a :class:`verify.bounds_proof.ProvedBounds`).
        target: a row stops as soon as its checked bound exceeds ``target`` (0 to certify);
            None solves every row to the backend's tolerance.
        stop_on_failed_group: skip the remaining rows (bound ``-inf``, status NOT_RUN) once a group
            cannot be certified (every row of it has a checked bound ``<= target``). The groups are then
            tried hardest first (smallest CROWN bound), so an input that fails usually fails on its first
            group, and within a group the most promising row first.
        known: lower bounds ``(m,)`` the caller has already proved (checked) by cheaper methods (``-inf``
            where none): the result is never below them, and with a ``target`` a group that has a row above
            it is not solved again.
        rows: solve only these rows (the others keep ``known``, or ``-inf``); None: all.

    Returns:
        ``(lower, status, certificates)``: ``status`` is the worst status of the rows that ran (OPTIMAL
        when each was solved to tolerance, reached ``target`` or was shown unable to reach it; NOT_RUN
        only when none ran); ``certificates[r]`` is None for skipped rows. With several workers the
        result is the same as sequentially (groups are consumed in order).
    """
    if spec.C.shape[1] != net.out_dim:
        raise ValueError(f"spec has {spec.C.shape[1]} logit columns, network has {net.out_dim} outputs")
    m = spec.n_margins
    known = np.full(m, -np.inf) if known is None else np.asarray(known, dtype=np.float64).ravel()
    if known.shape != (m,):
        raise ValueError(f"known bounds have shape {known.shape}, the spec has {m} margin rows")
    known = np.where(np.isnan(known), -np.inf, known)
    wanted = np.zeros(m, dtype=bool)
    wanted[list(range(m)) if rows is None else list(rows)] = True
    # one BLAS thread per process (faster at these sizes, and on a shared machine); overflow shows as
    # non-finite numbers, which every stage turns into a solver status and a -inf bound
    with threadpool_limits(1), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        lower, status, certs = _margin_bounds(net, box, spec, options, preact, target, stop_on_failed_group,
                                              known, wanted)
    return np.maximum(lower, known), status, certs


def _margin_bounds(net: Network, box: InputBox, spec: OutputSpec, options: Options, preact: Bounds | None,
                   target: float | None, stop_on_failed_group: bool, known: np.ndarray,
                   wanted: np.ndarray) -> tuple[np.ndarray, SolverStatus, list]:  # type: ignore[type-arg]
    m = spec.n_margins
    lower = np.full(m, -np.inf)
    certs: list[SDPCertificate | None] = [None] * m
    statuses = [SolverStatus.NOT_RUN] * m
    groups = _order(net, box, spec, options) if stop_on_failed_group else list(spec.groups)
    goal = 0.0 if target is None else target
    groups = [tuple(r for r in g if wanted[r]) for g in groups
              if not (target is not None and np.any(known[list(g)] > target))]
    groups = [g for g in groups if g]
    if not groups:
        return lower, SolverStatus.NOT_RUN, certs
    if preact is None:
        preact = _bounds(net, box, options)
    rel = build_relaxation(net, box, preact)
    rel = dataclasses.replace(rel, hidden_bounds=ProvedBounds(rel.hidden_bounds, proof_of(preact, options.sdp_bounds)))
    log.info("SDP: %s, %d free inputs, %d unstable neurons (side %d after eliminating the input), backend %s",
             net.describe(), rel.n0, rel.n_unstable, 1 + rel.n_unstable, options.sdp_backend)
    with closing(_run_groups(net, box, rel, spec, groups, options, target)) as solved:
        for group, done in solved:
            _record(done, lower, certs, statuses)
            if stop_on_failed_group and not np.any(np.maximum(lower, known)[list(group)] > goal):
                log.info("SDP: group %s not certified; skipping the remaining rows", group)
                break
    return lower, _worst(statuses), certs


Solved = list[tuple[int, SDPCertificate, float, float]]  # (row, certificate, checked bound, seconds)


def _record(rows: Solved, lower: np.ndarray, certs: list, statuses: list) -> None:  # type: ignore[type-arg]
    """Store solved rows in the per-row arrays (and log them)."""
    for r, cert, checked, seconds in rows:
        lower[r], certs[r], statuses[r] = checked, cert, cert.status
        log.info("SDP row %d: checked bound %.6g (claimed %.6g), %s, %.2fs", r, checked, cert.claimed,
                 cert.status.value, seconds)


@dataclass
class RowState:
    """What the rows of one relaxation share: the warm start made by the first row solved, and the checker
    (built once: it re-derives the relaxation's rows from the network)."""

    warm: object = None
    checker: SDPChecker | None = None


def solve_group(net: Network, box: InputBox, rel: SDPRelaxation, spec: OutputSpec, group: tuple[int, ...],
                options: Options, target: float | None, state: RowState | None = None) -> Solved:
    """Solve the rows of one group in order until one's checked bound exceeds ``target``."""
    out: Solved = []
    state = RowState() if state is None else state
    for r in group:
        t0 = time.perf_counter()
        cert = solve_row(rel, spec.C[r], float(spec.d[r]), options, target, state)
        checked = _checked(net, box, cert, state)
        out.append((r, cert, checked, time.perf_counter() - t0))
        if target is not None and checked > target:
            break
    return out


def _run_groups(net: Network, box: InputBox, rel: SDPRelaxation, spec: OutputSpec, groups: list[tuple[int, ...]],
                options: Options, target: float | None) -> Iterator[tuple[tuple[int, ...], Solved]]:
    """Yield ``(group, solved rows)`` in ``groups`` order, solved sequentially or by
    ``options.sdp_workers`` processes (ahead of the consumer). Every row after the first one that made a
    warm start is warm-started from it, so the result does not depend on the number of workers: with
    several, the groups run here until the warm start exists, the rest in the pool. When the caller stops
    early (closes the generator), the worker processes are terminated, so no stray solve keeps a core busy.
    Inside a daemonic process (which may not have children) it runs sequentially."""
    workers = min(options.sdp_workers, len(groups))
    if multiprocessing.current_process().daemon:
        workers = 1
    state = RowState()
    todo = list(groups)
    while todo and (workers <= 1 or state.warm is None):
        group = todo.pop(0)
        yield group, solve_group(net, box, rel, spec, group, options, target, state)
    if not todo:
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(min(workers, len(todo))) as pool:  # leaving the block terminates the workers
        jobs = [(net, box, rel, spec, g, options, target, RowState(state.warm)) for g in todo]
        yield from pool.imap(_solve_group_job, jobs)


def _solve_group_job(job: tuple) -> tuple[tuple[int, ...], Solved]:
    return job[4], solve_group(*job)


def solve_row(rel: SDPRelaxation, c: np.ndarray, d: float, options: Options, target: float | None,
              state: RowState | None = None) -> SDPCertificate:
    """Solve one margin row with ``options.sdp_backend`` and package the multipliers. ``state.warm``: a warm
    start from another row of ``rel`` (used, or filled when empty)."""
    obj = rel.objective(c, d)
    form = rel.form(obj, options.sdp_triangle)
    if options.sdp_backend == "cvxpy":
        from verify.solvers.sdp_cvxpy import solve_cvxpy

        sol = solve_cvxpy(form, options.time_limit)
        y, bound, status, message, primal = sol.y, sol.bound, sol.status, sol.status.value, sol.primal
    else:
        from verify.solvers.sdp_dual import solve_form

        dsol = solve_form(form, options.time_limit, max(options.sdp_iterations, 1), target, options.sdp_tolerance,
                          warm=state.warm if state else None)
        y, bound, status, message = dsol.y, dsol.bound, dsol.status, dsol.message
        primal = dsol.bound + dsol.gap
        if state is not None and state.warm is None:
            state.warm = dsol.warm
    if y is None:
        n = rel.n_unstable
        mult = Multipliers(np.zeros(rel.n0), np.zeros(n), np.zeros(n), np.zeros(n), -np.inf)
    else:
        mult = rel.multipliers_of(y, options.sdp_triangle)
    lo, up = zip(*rel.hidden_bounds) if rel.hidden_bounds else ((), ())
    return SDPCertificate(np.asarray(c, dtype=np.float64).copy(), float(d), tuple(lo), tuple(up), mult.mu_x, mult.mu_z,
                          mult.lam, mult.nu, float(mult.gamma), float(bound), options.sdp_backend, status, mult.kappa,
                          proof_of(rel.hidden_bounds, options.sdp_bounds), message, float(primal))


def sdp_seconds(net: Network, box: InputBox, preact: Bounds, rows: int | None = None, certify: bool = True,
                options: Options | None = None) -> float:
    """Predicted seconds of :func:`sdp_rows` on ``rows`` margin rows (default: the network's outputs minus
    one) of ``box`` with pre-activation bounds ``preact`` (see :mod:`verify.relax.sdp_cost`); ``certify``: the
    rows are expected to certify (stop at the first checked bound > 0) rather than be solved to tolerance."""
    from verify.relax.sdp_cost import predicted_seconds

    options = options or Options()
    n_unstable = sum(int(np.sum((np.asarray(l) < 0) & (np.asarray(u) > 0))) for l, u in list(preact)[: len(net.layers) - 1])
    n0 = int(np.sum(box.upper > box.lower))
    rows = net.out_dim - 1 if rows is None else rows
    return predicted_seconds(n0, n_unstable, rows, certify, options.sdp_triangle)


def sdp_rows(net: Network, box: InputBox, spec: OutputSpec, rows: Sequence[int], preact: Bounds, options: Options,
             known: np.ndarray | None = None, target: float | None = 0.0) -> tuple[np.ndarray, SolverStatus, list]:  # type: ignore[type-arg]
    """The SDP on only some margin rows (those cheaper methods left open), for a cascade: checked lower bounds
    ``(m,)`` (the rows not asked for keep ``known``), the worst status, and the certificates. ``target=0``
    stops each row at its first checked bound > 0 (certify); None solves the rows to tolerance. A thin
    wrapper of :func:`sdp_margin_bounds`."""
    return sdp_margin_bounds(net, box, spec, options, preact, target, False, known, rows)


def certify_sdp(net: Network, prop: Property, options: Options) -> MethodResult:
    """Method "sdp": CERTIFIED when the checked SDP bound of some row of every group is ``> 0``;
    FALSIFIED only when the box centre itself violates the property; otherwise UNKNOWN.

    Rows stop as soon as their checked bound is positive; once a group fails, the rest is skipped. With
    ``options.compare`` (compare mode) every row is solved to the backend's tolerance instead.
    """
    t0 = time.perf_counter()
    spec = prop.output
    center = prop.box.center
    if spec.violated(net.forward(center[None]))[0]:
        m = net.forward(center[None]) @ spec.C.T + spec.d
        return MethodResult("sdp", Verdict.FALSIFIED, float(group_bound(spec.groups, m[0])), m[0],
                            time.perf_counter() - t0, SolverStatus.NOT_RUN, "the box centre is a counterexample",
                            center.copy())
    lower, status, certs = sdp_margin_bounds(net, prop.box, spec, options, target=None if options.compare else 0.0,
                                             stop_on_failed_group=not options.compare)
    bound = group_bound(spec.groups, lower)
    extra = {"bounds": options.sdp_bounds, "backend": options.sdp_backend, "certificates": certs}
    if spec.holds(lower):  # every group has a row whose checked bound is > 0 (skipped rows are -inf)
        verdict, msg = Verdict.CERTIFIED, "checked SDP dual bound > 0 for every group"
    else:
        verdict, msg = Verdict.UNKNOWN, _failure_message(spec, lower, certs)
    return MethodResult("sdp", verdict, bound, lower, time.perf_counter() - t0, status, msg, None, extra)


def _failure_message(spec, lower: np.ndarray, certs: list) -> str:  # type: ignore[no-untyped-def]
    """Which group failed and with what checked bound; says when later margins were skipped."""
    for k, g in enumerate(spec.groups):
        ran = [r for r in g if certs[r] is not None]
        if ran and not max(lower[r] for r in ran) > 0:
            skipped = sum(c is None for c in certs)
            tail = f"; {skipped} later margin(s) skipped" if skipped else ""
            best = max(ran, key=lambda r: lower[r])
            why = certs[best].message if certs[best].status is not SolverStatus.OPTIMAL and certs[best].message else ""
            solver = f", solver: {why}" if why else ""
            return f"margin group {k} not certified (checked SDP bound {lower[best]:.4g}{solver}){tail}"
    return f"SDP bound {group_bound(spec.groups, lower):.4g} does not certify"


def _order(net: Network, box: InputBox, spec: OutputSpec, options: Options) -> list[tuple[int, ...]]:
    """Groups sorted by their best CROWN row bound (ascending), rows within a group descending."""
    from verify.bounds.method import certify_batch

    try:
        lb = certify_batch(net, box.lower[None], box.upper[None], spec.C, spec.d, "crown", options)[0].cpu().numpy()
    except (ValueError, RuntimeError) as err:
        log.debug("SDP: no CROWN ordering (%s)", err)
        return list(spec.groups)
    lb = np.where(np.isfinite(lb), lb, -np.inf)
    groups = [tuple(sorted(g, key=lambda r: -lb[r])) for g in spec.groups]
    return sorted(groups, key=lambda g: lb[g[0]])


def _bounds(net: Network, box: InputBox, options: Options) -> Bounds:
    try:
        return preactivation_bounds(net, box, options.sdp_bounds, options)
    except NotImplementedError:
        log.warning("bounds %r not available; using interval bounds for the SDP", options.sdp_bounds)
        return preactivation_bounds(net, box, "interval", options)


def _checked(net: Network, box: InputBox, cert: SDPCertificate, state: RowState | None = None) -> float:
    """The independent checker's bound for ``cert`` (``-inf`` when it rejects it)."""
    try:
        if state is None:
            value = check_sdp_certificate(net, box, cert.c, cert.d, cert)
        else:
            if state.checker is None or not state.checker.fits(cert):
                state.checker = SDPChecker(net, box, cert.hidden_lower, cert.hidden_upper, cert.bounds_proof)
            value = state.checker.check(cert.c, cert.d, cert)
    except CertificateError as err:
        log.warning("SDP certificate rejected: %s", err)
        return -np.inf
    return value if np.isfinite(value) else -np.inf


def _worst(statuses: list[SolverStatus]) -> SolverStatus:
    """The worst status among the rows that ran (NOT_RUN when none did)."""
    ran = [s for s in statuses if s is not SolverStatus.NOT_RUN]
    rank = {s: i for i, s in enumerate(_SEVERITY)}
    return max(ran, key=lambda s: rank.get(s, len(_SEVERITY))) if ran else SolverStatus.NOT_RUN
