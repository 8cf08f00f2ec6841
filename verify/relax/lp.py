"""Triangle LP relaxation of a ReLU network over an input box, with dual (Lagrangian) certificates.

Variables ``v = [x, s_0, z_0, ..., s_{H-1}, z_{H-1}]`` (input, then per hidden layer the
pre-activation and post-activation), each with a box from the pre-activation bounds. Constraints:
``s_i = W_i z_{i-1} + b_i``; active neurons ``z = s``; unstable neurons ``z >= s`` and the triangle
upper side ``(u - l) z - u s <= -u l``; inactive neurons are fixed at ``z = 0`` by their box.

Design choice (measured on grad_nn, 784-500-10, nine margins, see bench/bench_rsl18_lp.py): the
LP is assembled directly as a sparse matrix (0.02-0.06 s) and handed to HiGHS through highspy,
which re-solves each margin from the previous basis: about 0.6 s for all nine on an idle core. The
same LP through cvxpy costs 0.16-0.4 s of model building/canonicalization per image, and re-solving
it per margin without warm starts took 2.2 s with cvxpy's HiGHS interface and 45-60 s with
Clarabel (interior point). The cvxpy path is kept for Clarabel (``Options.lp_solver="clarabel"``)
as an independent reference.

The reported bounds never come from the solver's objective: the row duals are turned into an
:class:`~verify.certificate.LPCertificate` and the bound is recomputed by the independent checker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from verify.bounds import preactivation_bounds
from verify.bounds_proof import BoundsProof, LPProof, ProvedBounds, proof_of
from verify.certificate import LPCertificate, check_lp_certificate_all
from verify.network import Network
from verify.options import Options
from verify.results import MethodResult, SolverStatus, Verdict, group_bound
from verify.solvers import LinearProgram, lp_backend
from verify.spec import InputBox, OutputSpec, Property

log = logging.getLogger(__name__)

Bounds = list[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True, eq=False)
class LayerRows:
    """Column offsets and row indices of one hidden layer in a :class:`TriangleLP`."""

    s_col: int
    z_col: int
    eq_rows: np.ndarray  # (n,) rows s - W z_prev = b
    active: np.ndarray  # neuron indices with l >= 0
    act_rows: np.ndarray
    unstable: np.ndarray  # neuron indices with l < 0 < u
    lo_rows: np.ndarray  # s - z <= 0
    up_rows: np.ndarray  # (u - l) z - u s <= -u l


@dataclass(frozen=True, eq=False)
class TriangleLP:
    """The assembled relaxation: matrix form plus where each layer's pieces live."""

    lp: LinearProgram
    layers: tuple[LayerRows, ...]
    last_col: int  # first column of the last hidden post-activation (or of x when no hidden layer)
    lower: tuple[np.ndarray, ...]
    upper: tuple[np.ndarray, ...]


def build_triangle_lp(net: Network, box: InputBox, hidden_bounds: Bounds) -> TriangleLP:
    """Assemble the triangle LP for ``net`` on ``box`` with pre-activation bounds of the hidden layers.

    ``hidden_bounds[i] = (l_i, u_i)``, each ``(n_i,)``; extra entries (e.g. the logits') are ignored.
    """
    n_hidden = len(net.layers) - 1
    if len(hidden_bounds) < n_hidden:
        raise ValueError(f"need pre-activation bounds for {n_hidden} hidden layers, got {len(hidden_bounds)}")
    mat = _Triplets()
    col_lo, col_hi = [box.lower], [box.upper]
    prev_col, next_col = 0, net.in_dim
    info = []
    for i in range(n_hidden):
        l, u = (np.asarray(a, dtype=np.float64) for a in hidden_bounds[i])
        n = net.layers[i].out_dim
        s_col, z_col = next_col, next_col + n
        next_col += 2 * n
        col_lo += [l, np.maximum(l, 0.0)]
        col_hi += [u, np.maximum(u, 0.0)]
        w = sp.coo_matrix(net.layers[i].weight)
        bias = net.layers[i].bias
        eq = mat.rows(n, bias, bias, [(np.arange(n), s_col + np.arange(n), np.ones(n)), (w.row, prev_col + w.col, -w.data)])
        act = np.flatnonzero(l >= 0)
        one, ar = np.ones(act.size), np.arange(act.size)
        act_rows = mat.rows(act.size, np.zeros(act.size), np.zeros(act.size), [(ar, z_col + act, one), (ar, s_col + act, -one)])
        unst = np.flatnonzero((l < 0) & (u > 0))
        k, ar, one = unst.size, np.arange(unst.size), np.ones(unst.size)
        lo_rows = mat.rows(k, np.full(k, -np.inf), np.zeros(k), [(ar, s_col + unst, one), (ar, z_col + unst, -one)])
        up_rows = mat.rows(k, np.full(k, -np.inf), -u[unst] * l[unst],
                           [(ar, z_col + unst, u[unst] - l[unst]), (ar, s_col + unst, -u[unst])])
        info.append(LayerRows(s_col, z_col, eq, act, act_rows, unst, lo_rows, up_rows))
        prev_col = z_col
    lp = LinearProgram(mat.matrix(next_col), _cat(mat.lo), _cat(mat.hi), _cat(col_lo), _cat(col_hi))
    lower = tuple(np.asarray(hidden_bounds[i][0], dtype=np.float64) for i in range(n_hidden))
    upper = tuple(np.asarray(hidden_bounds[i][1], dtype=np.float64) for i in range(n_hidden))
    return TriangleLP(lp, tuple(info), prev_col, lower, upper)


class _Triplets:
    """Sparse rows collected as (row, col, value) triplets with their bounds."""

    def __init__(self) -> None:
        self.r: list[np.ndarray] = []
        self.c: list[np.ndarray] = []
        self.v: list[np.ndarray] = []
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []
        self.n = 0

    def rows(self, count: int, lo: np.ndarray, hi: np.ndarray, entries: list) -> np.ndarray:
        """Append ``count`` rows; ``entries`` are (local row, column, value) arrays. Returns the row indices."""
        for r, c, v in entries:
            self.r.append(self.n + np.asarray(r))
            self.c.append(np.asarray(c))
            self.v.append(np.asarray(v, dtype=float))
        self.lo.append(np.broadcast_to(lo, (count,)))
        self.hi.append(np.broadcast_to(hi, (count,)))
        self.n += count
        return self.n - count + np.arange(count)

    def matrix(self, n_cols: int) -> sp.csc_matrix:
        cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt)  # noqa: E731
        return sp.csc_matrix((cat(self.v, float), (cat(self.r, int), cat(self.c, int))), shape=(self.n, n_cols))


def margin_objective(net: Network, tri: TriangleLP, c: np.ndarray, d: float) -> tuple[np.ndarray, float]:
    """Cost vector and offset of the margin ``c^T y + d`` (``y`` the logits) in the LP's variables."""
    last = net.layers[-1]
    cost = np.zeros(tri.lp.n_cols)
    w_c = np.asarray(last.weight.T @ c).ravel()
    cost[tri.last_col : tri.last_col + w_c.size] = w_c
    return cost, float(c @ last.bias + d)


def solve_rows(
    net: Network, box: InputBox, C: np.ndarray, d: np.ndarray, hidden_bounds: Bounds, options: Options
) -> tuple[np.ndarray, LPCertificate, list[np.ndarray | None]]:
    """Solve the LP for every row of ``C y + d``; returns checked bounds ``(m,)``, certificate, primal inputs.

    ``hidden_bounds`` is best a :class:`~verify.bounds_proof.ProvedBounds` (as :func:`preactivation_bounds`
    returns): its proof goes into the certificate, so the checker re-derives the bounds and uses them as
    given. Plain ``(l, u)`` pairs carry no proof: the checker then widens them to what it proves itself.
    """
    if box.dim != net.in_dim:
        raise ValueError(f"input box has {box.dim} values but the network expects {net.in_dim}")
    for i, (l, u) in enumerate(hidden_bounds[: len(net.layers) - 1]):
        if np.shape(l) != (net.layers[i].out_dim,) or np.shape(u) != np.shape(l):
            raise ValueError(f"pre-activation bounds of layer {i} have shape {np.shape(l)}, expected ({net.layers[i].out_dim},)")
    tri = build_triangle_lp(net, box, hidden_bounds)
    objs = [margin_objective(net, tri, C[k], d[k]) for k in range(C.shape[0])]
    sols = lp_backend(options.lp_solver).solve_many(tri.lp, [o[0] for o in objs], [o[1] for o in objs], options.time_limit)
    cert = _certificate(net, tri, C, d, sols, proof_of(hidden_bounds))
    bounds = check_lp_certificate_all(net, box, C, d, cert)
    xs = [None if s.x is None else s.x[: net.in_dim] for s in sols]
    return bounds, cert, xs


def _certificate(net: Network, tri: TriangleLP, C: np.ndarray, d: np.ndarray, sols: list, proof: BoundsProof) -> LPCertificate:
    m = C.shape[0]
    lam, alpha, beta, gamma = [], [], [], []
    for i, lay in enumerate(tri.layers):
        n = net.layers[i].out_dim
        blocks = [np.zeros((m, n)) for _ in range(4)]
        for k, sol in enumerate(sols):
            if sol.row_dual is None:
                continue
            mult = -sol.row_dual  # HiGHS convention (reduced cost c - A^T y) -> Lagrangian c + lam (A v - rhs)
            blocks[0][k] = mult[lay.eq_rows]
            blocks[1][k, lay.active] = mult[lay.act_rows]
            blocks[2][k, lay.unstable] = mult[lay.lo_rows]
            blocks[3][k, lay.unstable] = mult[lay.up_rows]
        for dst, blk in zip((lam, alpha, beta, gamma), blocks):
            dst.append(blk)
    return LPCertificate(
        np.array(C, dtype=np.float64), np.array(d, dtype=np.float64), tri.lower, tri.upper,
        tuple(lam), tuple(alpha), tuple(beta), tuple(gamma),
        tuple(s.status for s in sols), np.array([s.objective for s in sols]), proof,
    )


def tighten_layerwise(net: Network, box: InputBox, bounds: Bounds, options: Options) -> ProvedBounds:
    """LP-ALL: tighten every unstable neuron's bounds with (checked) LPs, layer by layer. Slow.

    ``bounds`` holds ``(l, u)`` per layer (last = logits), best with its proof; returns new bounds of
    the same shapes whose proof adds the multipliers of every tightening LP (:class:`LPProof`).
    """
    out = [(np.array(l, dtype=np.float64), np.array(u, dtype=np.float64)) for l, u in bounds]
    proof = proof_of(bounds)
    for i in range(1, len(net.layers) - 1):  # the first layer's bounds are already exact
        l, u = out[i]
        idx = np.flatnonzero((l < 0) & (u > 0))
        if idx.size == 0:
            continue
        sub = Network(net.layers[: i + 1], net.input_shape, net.domain_lower, net.domain_upper, net.name)
        eye = np.eye(l.size)[idx]
        C = np.vstack([eye, -eye])
        lb, cert, _ = solve_rows(sub, box, C, np.zeros(2 * idx.size), ProvedBounds(tuple(out[:i]), proof), options)
        l[idx] = np.maximum(l[idx], lb[: idx.size])
        u[idx] = np.minimum(u[idx], -lb[idx.size :])
        proof = proof.extended(LPProof(i, idx, cert.lam, cert.alpha, cert.beta, cert.gamma))
        log.debug("LP-ALL layer %d: %d neurons tightened", i, idx.size)
    return ProvedBounds(tuple(out), proof.extended(source=f"{proof.source}+lp-layerwise"))


def lp_margin_bounds(
    net: Network, box: InputBox, spec: OutputSpec, options: Options, preact: Bounds | None = None
) -> tuple[np.ndarray, SolverStatus, LPCertificate]:
    """Sound lower bounds ``(m,)`` on each margin row of ``spec`` over ``box`` from the triangle LP.

    ``preact``: pre-activation bounds per layer (last = logits); computed with ``options.bounds``
    when None, then tightened layer by layer if ``options.lp_layerwise``. Bounds tighter than CROWN's
    are used as given only when they carry their proof (a :class:`~verify.bounds_proof.ProvedBounds`
    from :func:`preactivation_bounds` or :func:`tighten_layerwise`); otherwise the checker widens them to
    what it can re-derive. The bounds returned are the certificate checker's values; the status is
    OPTIMAL only when every row solved to optimality.
    """
    if spec.C.shape[1] != net.out_dim:
        raise ValueError(f"spec has {spec.C.shape[1]} logit columns, network has {net.out_dim} outputs")
    if preact is None:
        preact = preactivation_bounds(net, box, options.bounds, options)
        if options.lp_layerwise:
            preact = tighten_layerwise(net, box, preact, options)
    bounds, cert, _ = solve_rows(net, box, spec.C, spec.d, preact, options)
    return bounds, _overall(cert.statuses), cert


def certify_lp(net: Network, prop: Property, options: Options) -> MethodResult:
    """Method "lp": CERTIFIED when the checked LP bounds prove every group; FALSIFIED when an LP
    solution's input is a real counterexample on ``net``; otherwise UNKNOWN."""
    t0 = time.perf_counter()
    spec = prop.output
    preact = preactivation_bounds(net, prop.box, options.bounds, options)
    if options.lp_layerwise:
        preact = tighten_layerwise(net, prop.box, preact, options)
    bounds, cert, xs = solve_rows(net, prop.box, spec.C, spec.d, preact, options)
    status = _overall(cert.statuses)
    bound = group_bound(spec.groups, bounds)
    extra = {"bounds": options.bounds, "layerwise": options.lp_layerwise, "primal": cert.primal.tolist(), "certificate": cert}
    if np.all(np.isfinite(bounds)) and spec.holds(bounds):
        verdict, cex, msg = Verdict.CERTIFIED, None, "checked LP dual bound > 0 for every group"
    else:
        cex = _counterexample(net, prop, xs)
        verdict = Verdict.FALSIFIED if cex is not None else Verdict.UNKNOWN
        msg = "LP solution is a counterexample" if cex is not None else f"LP bound {bound:.4g} does not certify"
    return MethodResult("lp", verdict, bound, bounds, time.perf_counter() - t0, status, msg, cex, extra)


def _counterexample(net: Network, prop: Property, xs: list[np.ndarray | None]) -> np.ndarray | None:
    for x in xs:
        if x is None:
            continue
        x = np.clip(x, prop.box.lower, prop.box.upper)
        if prop.output.violated(net.forward(x[None]))[0]:
            return x
    return None


def _overall(statuses: tuple[SolverStatus, ...]) -> SolverStatus:
    bad = [s for s in statuses if s is not SolverStatus.OPTIMAL]
    return bad[0] if bad else SolverStatus.OPTIMAL


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts]) if parts else np.zeros(0)
