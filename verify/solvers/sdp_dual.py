"""Scalable SDP backend: a structured dual-scaling interior-point method in numpy.

We maximize ``gamma - sum(mu)`` over the multipliers of :mod:`verify.relax.sdp_model` subject to
``Z = M(theta) >= 0`` (PSD) and ``mu_z, lam (, kappa) >= 0``, using Newton steps on the barrier
``phi_t = b^T theta + t (log det M + sum log mu_z + sum log lam)`` with ``t = (upper - bound) / (RHO n)``
(dual scaling, as in Benson & Ye's DSDP): ``upper`` starts at the margin of the box centre (a real
point, so above the SDP optimum) and is lowered whenever the primal estimate ``t K (Z - A(d)) K`` of
the Newton step ``d`` is PSD (exactly when ``theta - d`` is dual feasible).

Structure exploited: every multiplier enters ``M`` as ``sym(p q^T)`` with ``p`` a unit vector (or
``e_0 + e_z``) and ``q`` a unit vector or a constraint row ``g_j`` / triangle row ``tau_j``;
``log det M = sum log mu_x + log det S`` with ``S`` the Schur complement of side ``1 + N`` (the input
block is diagonal). The Newton matrix ``H_ab = tr(K A_a K A_b)`` (``K = M^{-1}``, formed from
``S^{-1}``) is assembled from gathers of ``K`` and ``K G^T``: ``O(n^2 N + N n m + m^3)`` per step,
``m = n0 + 3N (+N) + 1`` multipliers. BLAS runs single-threaded (much faster on a loaded machine).

When a target is given (certification), the best linear dual point (``nu = 0``: one LP, the triangle
LP's Lagrangian when the cuts are on) is tried first and returned when it already certifies.

Every iterate has ``M`` strictly positive definite, so every iterate is a valid dual point; the bound
reported is recomputed rigorously by :func:`verify.relax.sdp_model.dual_bound`. Stopping early
(time limit, iteration cap, target reached) only weakens it.

Large relaxations: on MNIST-size problems the Newton matrix is nearly singular near the optimum and
the barrier crawls. The Newton phase therefore gets at most ``BARRIER_SHARE`` of the time limit (after
``MIN_NEWTON`` steps); if it has not converged, the best point so far (barrier iterate or linear start)
is handed to :func:`verify.solvers.sdp_polish.polish` (L-BFGS-B on a smoothed dual function, one dense
``eigh`` of side ``1 + N`` per evaluation) for the rest of the time. On rsl18 pgd_nn (N = 122) this
reaches 10.56 on margin 0 in 18 s and 10.68 in 60 s, against 6.98 for 300 Newton steps, but 1e-3 of the optimum
(about 11.09) is still not reached within a minute (see bench/bench_sdp.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
from threadpoolctl import threadpool_limits

from verify.relax.sdp_model import Multipliers, SDPRelaxation, best_gamma, dual_bound
from verify.results import SolverStatus
from verify.solvers.sdp_polish import polish

log = logging.getLogger(__name__)

FULL_DEC = 1.0  # full Newton steps only when the decrement is below this
RIDGE = 1e-14  # Levenberg-Marquardt damping of the (Jacobi-scaled) Newton matrix
START = 0.02  # the starting point's barrier parameter, relative to the objective's size
RHO = 3.0  # the barrier parameter is (upper - bound) / (RHO * (n + 2N))
BARRIER_SHARE = 0.3  # share of the time limit for the Newton phase; the rest goes to the first-order polish
MIN_NEWTON = 5  # Newton steps always allowed before the time share applies


@dataclass(frozen=True)
class DualSolution:
    """``bound``: sound lower bound on the margin; ``multipliers``: the point it was computed at;
    ``gap``: best primal value found minus ``bound`` (advisory: the primal point is only as exact as
    the Newton system; NaN when the linear start was returned)."""

    bound: float
    multipliers: Multipliers
    status: SolverStatus
    iterations: int
    time_s: float
    gap: float


class _Barrier:
    """Dual matrix, barrier value and Newton system for one margin, in the order ``[1, z, x]``."""

    def __init__(self, rel: SDPRelaxation, obj: tuple[float, np.ndarray, np.ndarray], triangle: bool = False) -> None:
        self.n0, self.n = rel.n0, rel.n_unstable
        n0, n = self.n0, self.n
        self.dim = 1 + n + n0
        g = np.zeros((n, self.dim))
        g[:, 0] = rel.h - rel.a0
        g[:, 1 : 1 + n] = np.diag(rel.h) - rel.az
        g[:, 1 + n :] = -rel.ax
        self.g = g
        self.k = n if triangle else 0
        tau = np.zeros((self.k, self.dim))
        if triangle:
            t0, tx, tz = rel.triangle_rows()
            tau[:, 0], tau[:, 1 : 1 + n], tau[:, 1 + n :] = t0, tz, tx
        self.tau = tau
        self.o = np.concatenate([[obj[0]], obj[2], obj[1]])
        self.zi = 1 + np.arange(n)
        self.m = n0 + 3 * n + self.k + 1
        self.b = np.concatenate([-np.ones(n0 + n), np.zeros(2 * n + self.k), [1.0]])
        # variables kept positive by a log barrier: mu_z, lam, kappa (mu_x > 0 comes from log det M)
        self.pos = np.concatenate([np.arange(n0, n0 + 2 * n), np.arange(n0 + 3 * n, n0 + 3 * n + self.k)])

    def split(self, th: np.ndarray) -> tuple[np.ndarray, ...]:
        n0, n, k = self.n0, self.n, self.k
        return (th[:n0], th[n0 : n0 + n], th[n0 + n : n0 + 2 * n], th[n0 + 2 * n : n0 + 3 * n],
                th[n0 + 3 * n : n0 + 3 * n + k], th[-1])

    def matrix(self, th: np.ndarray) -> np.ndarray:
        mu_x, mu_z, lam, nu, kappa, gamma = self.split(th)
        n = self.n
        row = 0.5 * self.o + 0.5 * ((nu - lam) @ self.g) - 0.5 * (kappa @ self.tau)
        mat = np.zeros((self.dim, self.dim))
        mat[0, :] += row
        mat[:, 0] += row
        vg = 0.5 * nu[:, None] * self.g
        mat[1 : 1 + n, :] += vg
        mat[:, 1 : 1 + n] += vg.T
        mat[0, 0] -= gamma
        idx = np.arange(1, self.dim)
        mat[idx, idx] += np.concatenate([mu_z, mu_x])
        return mat

    def factor(self, th: np.ndarray) -> tuple[float, np.ndarray] | None:
        """``(log det M, S's Cholesky factor)`` or None when ``M`` is not positive definite."""
        mu_x = th[: self.n0]
        if np.any(mu_x <= 0) or np.any(th[self.pos] <= 0):
            return None
        mat = self.matrix(th)
        k = 1 + self.n
        bs = mat[:k, k:] / np.sqrt(mu_x)
        s = mat[:k, :k] - bs @ bs.T
        try:
            chol = sla.cholesky(s, lower=True, check_finite=True)
        except (np.linalg.LinAlgError, ValueError):
            return None
        logdet = float(np.sum(np.log(mu_x)) + 2.0 * np.sum(np.log(np.diag(chol))))
        return logdet, chol

    def phi(self, th: np.ndarray, t: float) -> float:
        f = self.factor(th)
        if f is None:
            return -np.inf
        bar = f[0] + np.sum(np.log(th[self.pos]))
        return float(self.b @ th + t * bar)

    def system(self, th: np.ndarray, chol: np.ndarray) -> tuple[tuple, np.ndarray]:
        """Cholesky factor of the Hessian ``H`` of ``-log det Z`` and its gradient ``c`` (``Z`` with the
        ``mu_z``, ``lam`` slack blocks); the Newton direction of ``phi_t / t`` is ``H^{-1} (b / t + c)``."""
        n0, n, k = self.n0, self.n, 1 + self.n
        mu_x = th[:n0]
        mat = self.matrix(th)
        bd = mat[:k, k:] / mu_x  # B D^{-1}
        sinv = sla.cho_solve((chol, True), np.eye(k))
        kk = np.empty((self.dim, self.dim))
        kk[:k, :k] = sinv
        kyx = -sinv @ bd
        kk[:k, k:] = kyx
        kk[k:, :k] = kyx.T
        kk[k:, k:] = bd.T @ (sinv @ bd)
        kk[k + np.arange(n0), k + np.arange(n0)] += 1.0 / mu_x
        kg = kk @ self.g.T  # (dim, N)
        kt = kk @ self.tau.T  # (dim, k)
        zi, xi, kc = self.zi, k + np.arange(n0), self.k
        # K q_a for every variable a: mu_x, mu_z, lam, nu, kappa, gamma
        kq = np.concatenate([kk[:, xi], kk[:, zi], -kg, kg, -kt, -kk[:, :1]], axis=1)
        # p_a^T X for a matrix X with dim rows
        def p_rows(x: np.ndarray) -> np.ndarray:
            return np.concatenate([x[xi], x[zi], np.repeat(x[:1], n, 0), x[:1] + x[zi], np.repeat(x[:1], kc, 0), x[:1]], axis=0)
        pkq = p_rows(kq)
        e0 = kk[:, :1]
        kp = np.concatenate([kk[:, xi], kk[:, zi], np.repeat(e0, n, 1), e0 + kk[:, zi], np.repeat(e0, kc, 1), e0], axis=1)
        pkp = p_rows(kp)
        gkq = self.g @ kq
        qkq = np.concatenate([kq[xi], kq[zi], -gkq, gkq, -(self.tau @ kq), -kq[:1]], axis=0)
        hess = 0.5 * (pkp * qkq + pkq * pkq.T)
        cvec = np.diag(pkq).copy()
        pos = self.pos
        cvec[pos] += 1.0 / th[pos]
        hess[pos, pos] += 1.0 / th[pos] ** 2
        hess = 0.5 * (hess + hess.T)
        dsc = 1.0 / np.sqrt(np.maximum(np.diag(hess), 1e-300))  # Jacobi scaling before the factorization
        hs = hess * dsc[:, None] * dsc[None, :]
        for ridge in (RIDGE, 1e3 * RIDGE, 1e6 * RIDGE):
            try:
                return (sla.cho_factor(hs + ridge * np.eye(self.m), lower=True), dsc), cvec
            except (np.linalg.LinAlgError, ValueError):
                log.debug("SDP dual: Newton matrix not positive definite; ridge %.0e", ridge * 1e3)
        raise np.linalg.LinAlgError("Newton matrix not positive definite")


def strict_start(rel: SDPRelaxation, obj: tuple[float, np.ndarray, np.ndarray], t: float,
                 triangle: bool = False) -> Multipliers:
    """A strictly feasible dual point near the central path for a large barrier parameter ``t``:
    ``mu = t``, ``lam`` a small multiple of ``t``, ``nu = 0``, ``gamma`` leaving ``S >= t I``-ish."""
    n = rel.n_unstable
    from verify.relax.sdp_model import dual_blocks  # local: only the start needs the blocks

    gnorm = np.sqrt((rel.h - rel.a0) ** 2 + np.sum(rel.ax**2, 1) + np.sum(rel.az**2, 1) + rel.h**2)
    lam = t / (1.0 + gnorm) / max(np.sqrt(n), 1.0)
    mu_x = np.full(rel.n0, t)
    mu_z = np.full(n, t)
    if triangle:
        t0, tx, tz = rel.triangle_rows()
        kappa = t / (1.0 + np.sqrt(t0**2 + np.sum(tx**2, 1) + np.sum(tz**2, 1))) / max(np.sqrt(n), 1.0)
    else:
        kappa = np.zeros(0)
    m = Multipliers(mu_x, mu_z, lam, np.zeros(n), 0.0, kappa)
    myy, b = dual_blocks(rel, obj, m)
    s = myy - (b / mu_x) @ b.T
    q, r = s[0, 1:], s[1:, 1:]
    gamma = float(s[0, 0] - q @ np.linalg.solve(r, q) - t) if n else float(s[0, 0] - t)
    return m.with_gamma(gamma)


def linear_start(rel: SDPRelaxation, obj: tuple[float, np.ndarray, np.ndarray], triangle: bool) -> Multipliers | None:
    """The best dual point with ``nu = 0`` (a linear Lagrangian: the LP relaxation without the SDP
    terms, over the scaled box), found by one LP: maximize ``c_0 - sum_k |c_k|`` with
    ``c = o - sum_j lam_j g_j - sum_j kappa_j tau_j``. None when the LP solver fails."""
    from scipy.optimize import linprog

    n0, n = rel.n0, rel.n_unstable
    k = n if triangle else 0
    rows = [np.concatenate([(rel.h - rel.a0)[:, None], -rel.ax, np.diag(rel.h) - rel.az], axis=1)]  # g_j
    if triangle:
        t0, tx, tz = rel.triangle_rows()
        rows.append(np.concatenate([t0[:, None], tx, tz], axis=1))
    lin = np.concatenate(rows, axis=0)  # (n + k, 1 + n0 + n); c = o - lin^T y
    o = np.concatenate([[obj[0]], obj[1], obj[2]])
    nv, ns = n + k, n0 + n
    # variables [y (nv) >= 0, s (ns) >= 0]; maximize o_0 - lin[:, 0] @ y - sum(s), s >= |o_k - lin[:, k] @ y|
    cost = np.concatenate([lin[:, 0], np.ones(ns)])
    a_ub = np.block([[-lin[:, 1:].T, -np.eye(ns)], [lin[:, 1:].T, -np.eye(ns)]])
    b_ub = np.concatenate([-o[1:], o[1:]])
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=(0, None), method="highs")
    if res.status != 0 or res.x is None:
        return None
    y = np.maximum(res.x[:nv], 0.0)
    c = o - lin.T @ y
    scale = 1e-9 * (1.0 + float(np.abs(o).sum()))
    mu = np.abs(c[1:]) / 2.0 + scale
    lam, kappa = y[:n] + scale, (y[n:] + scale if triangle else np.zeros(0))
    m = Multipliers(mu[:n0], mu[n0:], lam, np.zeros(n), 0.0, kappa)
    return best_gamma(rel, obj, m)


def solve_dual(
    rel: SDPRelaxation,
    obj: tuple[float, np.ndarray, np.ndarray],
    time_limit: float,
    max_iter: int,
    target: float | None = None,
    tol: float = 1e-6,
    triangle: bool = False,
) -> DualSolution:
    """Maximize the dual bound for one margin objective ``(o0, ox, oz)`` (see the module doc).

    Args:
        time_limit: seconds; the best sound bound so far is returned when it runs out.
        max_iter: Newton steps in all.
        target: stop as soon as the rigorous bound exceeds it (e.g. 0 to certify), or when the
            estimated optimum (bound + gap) is clearly below it.
        tol: stop when the gap to the best primal value found is below ``tol * (1 + |bound|)``.
        triangle: add the triangle cuts ``z <= u (s - l) / (u - l)`` (multipliers ``kappa``).
    """
    with threadpool_limits(1):  # OpenBLAS threads slow these sizes down badly on a loaded machine
        return _solve(rel, obj, time_limit, max_iter, target, tol, triangle)


def _solve(rel: SDPRelaxation, obj: tuple[float, np.ndarray, np.ndarray], time_limit: float, max_iter: int,
           target: float | None, tol: float, triangle: bool) -> DualSolution:
    t0 = time.perf_counter()
    scale = 1.0 + float(abs(obj[0]) + np.abs(obj[1]).sum() + np.abs(obj[2]).sum())
    lin, lin_bound = None, -np.inf
    if rel.n_unstable:
        lin = linear_start(rel, obj, triangle)
        lin_bound = dual_bound(rel, obj, lin) if lin is not None else -np.inf
        log.debug("SDP dual: linear (LP-like) start bound %.6g, %.2fs", lin_bound, time.perf_counter() - t0)
        if lin is not None and target is not None and lin_bound > target:
            return DualSolution(lin_bound, lin, SolverStatus.OPTIMAL, 0, time.perf_counter() - t0, np.nan)
    if rel.n_unstable == 0:  # affine on the box: mu_x = |o_x| / 2 (and the best gamma) is optimal
        zero = np.zeros(0)
        m = Multipliers(np.abs(obj[1]) / 2 * (1 + 1e-9) + 1e-12 * scale, zero, zero, zero, 0.0, zero)
        m = best_gamma(rel, obj, m)
        return DualSolution(dual_bound(rel, obj, m), m, SolverStatus.OPTIMAL, 0, time.perf_counter() - t0, 0.0)
    m0 = strict_start(rel, obj, START * scale, triangle)
    bar = _Barrier(rel, obj, triangle)
    th = m0.pack()
    if bar.factor(th) is None:
        bound = dual_bound(rel, obj, m0)
        return DualSolution(bound, m0, SolverStatus.NUMERICAL_ERROR, 0, time.perf_counter() - t0, np.nan)
    n_bar = bar.dim + bar.pos.size
    rho = RHO * n_bar
    zbar = centre_margin(rel, obj) + 1e-6 * scale  # the SDP optimum is below any real margin
    status, iters, boost, fails = SolverStatus.ITERATION_LIMIT, 0, 1.0, 0
    value = float(bar.b @ th)
    while iters < max_iter:
        fac = bar.factor(th)
        if fac is None:
            log.debug("SDP dual: iterate lost positive definiteness")
            status = SolverStatus.NUMERICAL_ERROR
            break
        try:
            hfac, cvec = bar.system(th, fac[1])
        except (np.linalg.LinAlgError, ValueError) as err:
            log.debug("SDP dual: %s", err)
            status = SolverStatus.NUMERICAL_ERROR
            break
        u, w = _solve_scaled(hfac, bar.b), _solve_scaled(hfac, cvec)
        t = max(boost * (zbar - value) / rho, 1e-300)
        d = u / t + w
        if bar.factor(th - d) is not None:  # the primal estimate t K (Z - A(d)) K is feasible
            zbar = min(zbar, value + t * (n_bar - float(cvec @ d)))
            t = max(boost * (zbar - value) / rho, 1e-300)
            d = u / t + w
        dec = float((bar.b / t + cvec) @ d)
        s = _line_search(bar, th, d, t, dec)
        th = th + s * d
        value = float(bar.b @ th)
        iters += 1
        log.debug("SDP dual: it %d, bound %.7g, upper %.7g, step %.3g, dec %.3g, t %.3g, %.2fs", iters, value, zbar, s, dec, t,
                  time.perf_counter() - t0)
        if zbar - value < tol * (1.0 + abs(value)):
            status = SolverStatus.OPTIMAL
            break
        if target is not None and zbar < target:
            status = SolverStatus.OPTIMAL  # a primal point shows the SDP cannot reach the target
            break
        if target is not None and value > target and dual_bound(rel, obj, _unpack(th, rel, triangle)) > target:
            status = SolverStatus.OPTIMAL
            break
        if time.perf_counter() - t0 > time_limit:
            status = SolverStatus.TIME_LIMIT
            break
        if iters >= MIN_NEWTON and time.perf_counter() - t0 > BARRIER_SHARE * time_limit:
            status = SolverStatus.TIME_LIMIT  # the barrier stalls on large relaxations: polish instead
            break
        if s == 0.0:  # no progress: re-centre with a larger barrier parameter
            boost, fails = boost * 10.0, fails + 1
            if fails > 8:
                status = SolverStatus.NUMERICAL_ERROR
                break
        else:
            boost, fails = max(1.0, boost / 3.0), 0
    m = _unpack(th, rel, triangle)
    bound = dual_bound(rel, obj, m)
    polished = best_gamma(rel, obj, m)
    if polished is not m:
        m, bound = polished, dual_bound(rel, obj, polished)
    if lin is not None and lin_bound > bound:  # the IPM did not get past the linear (nu = 0) point
        m, bound = lin, lin_bound
    reached = target is not None and bound > target
    if status is not SolverStatus.OPTIMAL and not reached and np.isfinite(bound):
        m, bound = polish(rel, obj, m, t0 + time_limit, target, triangle)
        log.debug("SDP dual: polished bound %.7g, %.2fs", bound, time.perf_counter() - t0)
        if target is not None and bound > target:
            status = SolverStatus.OPTIMAL
    if not np.isfinite(bound):
        status = SolverStatus.NUMERICAL_ERROR
    gap = zbar - bound
    log.info("SDP dual: bound %.7g after %d Newton steps, primal %.7g, %.2fs, %s", bound, iters, zbar,
             time.perf_counter() - t0, status.value)
    return DualSolution(bound, m, status, iters, time.perf_counter() - t0, gap)


def _solve_scaled(hfac: tuple, rhs: np.ndarray) -> np.ndarray:
    fac, dsc = hfac
    return dsc * sla.cho_solve(fac, dsc * rhs)


def centre_margin(rel: SDPRelaxation, obj: tuple[float, np.ndarray, np.ndarray]) -> float:
    """The margin at the box centre (``xh = 0``), evaluated through the relaxation's affine maps."""
    zh = np.zeros(rel.n_unstable)
    for j in range(rel.n_unstable):  # az is strictly lower triangular in layer order
        s = rel.a0[j] + rel.az[j] @ zh
        zh[j] = max(s, 0.0) / rel.h[j] - 1.0
    return float(obj[0] + obj[2] @ zh)


def _unpack(th: np.ndarray, rel: SDPRelaxation, triangle: bool) -> Multipliers:
    return Multipliers.unpack(th, rel.n0, rel.n_unstable, triangle)


def _line_search(bar: _Barrier, th: np.ndarray, step: np.ndarray, t: float, dec: float) -> float:
    """Step length along ``step``: the best value of ``phi_t`` among the damped Newton step
    ``1 / (1 + sqrt(dec))`` (which gains at least ``sqrt(dec) - log(1 + sqrt(dec))`` for a
    self-concordant barrier), the full step and fractions of the longest feasible step found by
    doubling; backtracking when none of them increases ``phi_t``."""
    f0 = bar.phi(th, t) / t
    damped = 1.0 / (1.0 + np.sqrt(max(dec, 0.0)))
    longest = damped
    while longest < 1.0 and bar.factor(th + 2.0 * longest * step) is not None:
        longest *= 2.0
    cands = sorted({min(c, 1.0) for c in (damped, 0.5 * longest, 0.8 * longest)} | ({1.0} if dec < FULL_DEC else set()))
    best_s, best_f = 0.0, f0
    for s in cands:
        f1 = bar.phi(th + s * step, t) / t
        if np.isfinite(f1) and f1 > best_f and f1 >= f0 + 0.01 * s * dec * (1.0 if s <= damped else 0.0):
            best_s, best_f = s, f1
    if best_s > 0:
        return best_s
    s = damped
    for _ in range(40):
        s *= 0.5
        f1 = bar.phi(th + s * step, t) / t
        if np.isfinite(f1) and f1 >= f0 + 0.01 * s * dec:
            return s
    return 0.0
