"""Scalable SDP backend: a primal-dual interior-point method (HKM direction, Mehrotra predictor-corrector).

The relaxation of :mod:`verify.solvers.sdp_problem` in standard form, variable order ``v = [1, z, x]``
(side ``n = 1 + N + n0``)::

    (P)  minimize <C, X>  s.t.  A_i(X) + (slack_i) = b_i,  X >= 0 (PSD),  slacks >= 0
    (D)  maximize b^T y   s.t.  Z = C - sum_i y_i A_i >= 0,  slack duals >= 0

with one constraint per multiplier: ``gamma`` (``X_00 = 1``), the box of every variable (``X_kk + s_k = 1``,
dual ``y_k = -mu_k``), ``lam_j`` (``g_j^T X e_0 - r_j = 0``), ``nu_j`` (``<sym((e_0 + e_j) g_j^T), X> = 0``,
``y = -nu``) and, with triangle cuts, ``kappa_j`` (``tau_j^T X e_0 - q_j = 0``). Every ``A_i`` is
``sym(p_i q_i^T)`` with ``p_i`` a unit vector (or ``e_0 + e_j``) and ``q_i`` a unit vector or a dense row
``g_j`` / ``tau_j``, so the Schur matrix ``M_ij = tr(A_i X A_j Z^{-1})`` is assembled from gathers of
``X``, ``Z^{-1}`` and their products with the dense rows: ``O(n^2 N + N n m)`` plus an ``m x m`` Cholesky
(``m = n + 2N (+N)``) per iteration.

The dual iterates stay exactly feasible (``Z`` is recomputed from ``y``; the primal may be infeasible),
so every iterate is a valid dual point: the bound reported is recomputed rigorously from the multipliers
by :func:`verify.solvers.sdp_problem.dual_bound` and the best one seen is kept. Stopping early (time limit,
target reached, numerical trouble) only weakens it. Unlike a dual-only barrier method the primal
iterate keeps the Newton system well scaled near the optimum: about 20-40 iterations to a relative
gap of 1e-7.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from verify.results import SolverStatus
from verify.solvers.sdp_problem import Multipliers, SDPRelaxation, best_gamma, dual_bound

log = logging.getLogger(__name__)

STEP = 0.9  # fraction of the largest feasible step (raised towards 1 as steps get long)
LANCZOS = 20  # Lanczos steps for the largest feasible step
PROGRESS_EVERY = 5.0  # seconds between two progress lines at INFO level (every iteration at DEBUG)


class StopReason(enum.Enum):
    """Why the interior-point method stopped: ``message`` says it in words (for logs and users),
    ``status`` is the solver status it maps to (only the first three count as solved)."""

    CONVERGED = "converged"
    TARGET_REACHED = "target reached"
    TARGET_OUT_OF_REACH = "a nearly feasible primal point is below the target"
    TIME_LIMIT = "time limit"
    ITERATION_LIMIT = "iteration limit"
    INFEASIBLE_START = "the start is not strictly dual feasible"
    LOST_DEFINITENESS = "iterate lost positive definiteness"
    SCHUR_NOT_PD = "Schur matrix not positive definite"
    NUMERICAL_TROUBLE = "numerical trouble (non-finite direction or step)"
    NO_PROGRESS = "no progress"

    @property
    def message(self) -> str:
        return self.value

    @property
    def status(self) -> SolverStatus:
        return _REASON_STATUS.get(self, SolverStatus.NUMERICAL_ERROR)


_REASON_STATUS = {
    StopReason.CONVERGED: SolverStatus.OPTIMAL,
    StopReason.TARGET_REACHED: SolverStatus.OPTIMAL,
    StopReason.TARGET_OUT_OF_REACH: SolverStatus.OPTIMAL,
    StopReason.TIME_LIMIT: SolverStatus.TIME_LIMIT,
    StopReason.ITERATION_LIMIT: SolverStatus.ITERATION_LIMIT,
}


@dataclass(frozen=True)
class IPMResult:
    """``bound``: best sound lower bound seen; ``multipliers``: where; ``primal``: the primal objective of
    the last iterate (an estimate of the SDP optimum when ``infeasibility`` is small); ``converged``: the
    relative gap and primal infeasibility fell below the tolerance; ``reason`` says why it stopped
    (``detail``: the numerical error behind NUMERICAL_TROUBLE, else empty)."""

    bound: float
    multipliers: Multipliers
    primal: float
    infeasibility: float
    iterations: int
    converged: bool
    reason: StopReason
    detail: str = ""


class SDPStandardForm:
    """Constraint data of one margin's SDP in the order ``[gamma, box (n - 1), lam, nu, kappa]``."""

    def __init__(self, rel: SDPRelaxation, obj: tuple[float, np.ndarray, np.ndarray], triangle: bool) -> None:
        n0, nz = rel.n0, rel.n_unstable
        n = 1 + nz + n0
        g = np.zeros((nz, n))
        g[:, 0], g[:, 1 : 1 + nz], g[:, 1 + nz :] = rel.h - rel.a0, np.diag(rel.h) - rel.az, -rel.ax
        kt = nz if triangle else 0
        tau = np.zeros((kt, n))
        if triangle:
            t0, tx, tz = rel.triangle_rows()
            tau[:, 0], tau[:, 1 : 1 + nz], tau[:, 1 + nz :] = t0, tz, tx
        self.n0, self.nz, self.kt, self.n = n0, nz, kt, n
        self.rows = np.concatenate([g, tau], axis=0)  # dense q-vectors
        self.m = n + 2 * nz + kt
        nd = 2 * nz + kt
        self.qrow = np.concatenate([np.arange(nz), np.arange(nz), nz + np.arange(kt)])  # dense constraints' rows
        self.b = np.concatenate([[1.0], np.ones(n - 1), np.zeros(nd)])
        # one slack per LP-cone variable: box (+1), lam and kappa (-1)
        self.slack_con = np.concatenate([np.arange(1, n), n + np.arange(nz), n + 2 * nz + np.arange(kt)])
        self.slack_coef = np.concatenate([np.ones(n - 1), -np.ones(nz), -np.ones(kt)])
        o = np.concatenate([[obj[0]], obj[2], obj[1]])
        c = np.zeros((n, n))
        c[0, :] += 0.5 * o
        c[:, 0] += 0.5 * o
        self.c = c

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        """``sum_i y_i A_i`` (dense, symmetric)."""
        n, nz = self.n, self.nz
        yd = y[n:]
        u = yd @ self.rows[self.qrow]
        w = np.zeros((n, n))
        w[0, :] += 0.5 * u
        w[:, 0] += 0.5 * u
        v = 0.5 * y[n + nz : n + 2 * nz, None] * self.rows[:nz]
        w[1 : 1 + nz, :] += v
        w[:, 1 : 1 + nz] += v.T
        w[np.arange(n), np.arange(n)] += y[:n]
        return w

    def apply(self, w: np.ndarray) -> np.ndarray:
        """``A_i(W) = p_i^T W q_i`` for a symmetric ``W``."""
        n, nz = self.n, self.nz
        out = np.empty(self.m)
        out[:n] = np.diag(w)
        r0 = self.rows @ w[0]
        out[n:] = r0[self.qrow]
        out[n + nz : n + 2 * nz] += np.sum(w[1 : 1 + nz] * self.rows[:nz], axis=1)
        return out

    def slack_dual(self, y: np.ndarray) -> np.ndarray:
        """Dual slacks of the LP-cone variables: ``-coef * y`` (``mu`` for the box, ``lam``, ``kappa``)."""
        return -self.slack_coef * y[self.slack_con]

    def dual_matrix(self, y: np.ndarray) -> np.ndarray:
        return self.c - self.adjoint(y)

    def _dense_parts(self, ymat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For the dense constraints (``p_a`` in ``{e_0, e_0 + e_j}``, ``q_a`` a row): ``Y P``, ``Y Q`` (``n x nd``)
        and ``P^T Y P``, ``P^T Y Q``, ``Q^T Y Q`` (``nd x nd``). The rows ``g_j`` serve two constraints each
        (``lam_j`` and ``nu_j``), so the products are formed once per distinct row."""
        nz, nd, q = self.nz, self.qrow.size, self.qrow
        yr = ymat @ self.rows.T  # (n, nz + kt)
        yq = yr[:, q]
        yp = np.repeat(ymat[:, :1], nd, axis=1)
        yp[:, nz : 2 * nz] += ymat[:, 1 : 1 + nz]
        pyp = np.repeat(yp[:1], nd, axis=0)
        pyp[nz : 2 * nz] += yp[1 : 1 + nz]
        pyq = np.repeat(yq[:1], nd, axis=0)
        pyq[nz : 2 * nz] += yq[1 : 1 + nz]
        ryr = self.rows @ yr
        return yp, yq, pyp, pyq, ryr[np.ix_(q, q)]

    def schur_matrix(self, x: np.ndarray, zinv: np.ndarray, ratio: np.ndarray) -> np.ndarray:
        """``M_ij = tr(A_i X A_j Z^{-1})`` plus the diagonal LP part ``x_l / z_l``, by blocks: the unit
        constraints (``A = e_i e_i^T``: ``X o Z^{-1}``), the dense ones, and their coupling."""
        n = self.n
        xp, xq, xpp, xpq, xqq = self._dense_parts(x)
        zp, zq, zpp, zpq, zqq = self._dense_parts(zinv)
        mat = np.empty((self.m, self.m))
        mat[:n, :n] = x * zinv
        cross = 0.5 * (xp * zq + xq * zp)
        mat[:n, n:] = cross
        mat[n:, :n] = cross.T
        mat[n:, n:] = 0.25 * (xpq.T * zpq + xpq * zpq.T + xqq * zpp + xpp * zqq)
        mat[self.slack_con, self.slack_con] += ratio
        return 0.5 * (mat + mat.T)

    def multipliers(self, y: np.ndarray) -> Multipliers:
        n, nz, kt = self.n, self.nz, self.kt
        return Multipliers(-y[1 + nz : n], -y[1 : 1 + nz], y[n : n + nz].copy(), -y[n + nz : n + 2 * nz],
                           float(y[0]), y[n + 2 * nz : n + 2 * nz + kt].copy())

    def from_multipliers(self, m: Multipliers) -> np.ndarray:
        return np.concatenate([[m.gamma], -m.mu_z, -m.mu_x, m.lam, -m.nu, m.kappa if self.kt else np.zeros(0)])


class ArrowFactor:
    """``Z = [[Zyy, B], [B^T, diag(d)]]`` (the ``y = [1, z]`` block first, then the inputs) through the Schur
    complement ``S = Zyy - B diag(1/d) B^T``: ``Z^{-1} = J + U S^{-1} U^T`` with ``J = diag(0, 1/d)`` and
    ``U = [I; -diag(1/d) B^T]``; and ``Z = L L^T`` with ``L = [[chol(S), B diag(d)^{-1/2}], [0, diag(d)^{1/2}]]``
    up to the ordering (inputs eliminated first)."""

    def __init__(self, z: np.ndarray, k: int) -> None:
        self.k = k
        d = np.diag(z)[k:].copy()
        if np.any(~(d > 0)):
            raise np.linalg.LinAlgError("input block not positive")
        self.d, self.b = d, z[:k, k:]
        self.bd = self.b / d  # B D^{-1}
        s = z[:k, :k] - self.bd @ self.b.T
        self.ls = sla.cholesky(0.5 * (s + s.T), lower=True, check_finite=False)
        self.sinv = sla.cho_solve((self.ls, True), np.eye(k), check_finite=False)

    def inverse(self) -> np.ndarray:
        k = self.k
        u = np.concatenate([np.eye(k), -self.bd.T], axis=0)
        out = u @ (self.sinv @ u.T)
        out[np.arange(k, out.shape[0]), np.arange(k, out.shape[0])] += 1.0 / self.d
        return 0.5 * (out + out.T)

    def times_inverse(self, y: np.ndarray) -> np.ndarray:
        """``Y Z^{-1}`` for a dense ``Y`` (rows arbitrary), in ``O(rows * n * k)``."""
        k = self.k
        yu = y[:, :k] - y[:, k:] @ self.bd.T
        out = (yu @ self.sinv) @ np.concatenate([np.eye(k), -self.bd], axis=1)
        out[:, k:] += y[:, k:] / self.d
        return out

    def whiten(self, v: np.ndarray) -> np.ndarray:
        """``L^{-1} v`` (``Z = L L^T``, inputs first)."""
        k = self.k
        wx = v[k:] / np.sqrt(self.d)
        wy = sla.solve_triangular(self.ls, v[:k] - self.bd @ v[k:], lower=True, check_finite=False)
        return np.concatenate([wy, wx])

    def whiten_t(self, w: np.ndarray) -> np.ndarray:
        """``L^{-T} w`` (the adjoint of :meth:`whiten`)."""
        k = self.k
        uy = sla.solve_triangular(self.ls, w[:k], lower=True, trans="T", check_finite=False)
        ux = w[k:] / np.sqrt(self.d) - self.bd.T @ uy
        return np.concatenate([uy, ux])


def times_structured(y: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """``Y W`` for a symmetric ``W`` whose off-diagonal entries all lie in its first ``k`` rows / columns."""
    wd = np.diag(w)
    out = y * wd
    w0 = w[:k].copy()
    w0[np.arange(k), np.arange(k)] = 0.0
    out += y[:, :k] @ w0
    out[:, :k] += y[:, k:] @ w0[:, k:].T
    return out


def lanczos_min(matvec, n: int, steps: int = LANCZOS) -> float:  # type: ignore[no-untyped-def]
    """Smallest Ritz value of a symmetric operator after ``steps`` Lanczos steps with full
    reorthogonalization (never below the smallest eigenvalue; close to it for these spectra)."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal(n)
    q /= np.linalg.norm(q)
    steps = min(steps, n)
    basis = np.zeros((steps, n))
    alpha, beta = np.zeros(steps), np.zeros(steps)
    for j in range(steps):
        basis[j] = q
        w = matvec(q)
        alpha[j] = q @ w
        w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        w -= basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta[j] = np.linalg.norm(w)
        if beta[j] < 1e-12 * (abs(alpha[j]) + 1.0):
            steps = j + 1
            break
        q = w / beta[j]
    return float(sla.eigh_tridiagonal(alpha[:steps], beta[: steps - 1], eigvals_only=True,
                                      select="i", select_range=(0, 0))[0])


def step_to_boundary(whiten, whiten_t, d: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    """Estimate of the largest ``a`` with ``Y + a D`` PSD, ``Y = L L^T`` (an over-estimate at worst:
    the caller checks the step it takes)."""
    lmin = lanczos_min(lambda v: whiten(d @ whiten_t(v)), d.shape[0])
    return np.inf if lmin >= 0 else -1.0 / lmin


def ratio_step(v: np.ndarray, dv: np.ndarray) -> float:
    neg = dv < 0
    return float(np.min(-v[neg] / dv[neg])) if np.any(neg) else np.inf


def solve_ipm(rel: SDPRelaxation, obj: tuple[float, np.ndarray, np.ndarray], start: Multipliers, deadline: float,
              target: float | None = None, tol: float = 1e-7, max_iter: int = 80, triangle: bool = False) -> IPMResult:
    """Run the primal-dual method from the strictly dual-feasible ``start`` until the relative gap and
    primal infeasibility are below ``tol``, ``deadline`` (a ``time.perf_counter()`` value) passes, the sound
    bound exceeds ``target``, or a nearly feasible primal point shows that the target is out of reach.
    The primal starts on the central path of ``start`` (``X = mu Z^{-1}``).
    """
    sf = SDPStandardForm(rel, obj, triangle)
    k = 1 + sf.nz
    y = sf.from_multipliers(start)
    best, best_bound = start, dual_bound(rel, obj, start)
    try:
        zf = ArrowFactor(sf.dual_matrix(y), k)
        if not np.all(sf.slack_dual(y) > 0):
            raise ValueError("slack multipliers not positive")
    except (np.linalg.LinAlgError, ValueError):
        return IPMResult(best_bound, best, np.nan, np.inf, 0, False, StopReason.INFEASIBLE_START)
    x = zf.inverse()
    xl = 1.0 / sf.slack_dual(y)
    scale0 = sf.n / np.trace(x)
    x, xl = scale0 * x, scale0 * xl
    lx_next, zf_next = None, None
    reason, detail, converged, pobj, pinf, it = StopReason.ITERATION_LIMIT, "", False, np.nan, np.inf, 0
    t_start, last_info = time.perf_counter(), 0.0
    for it in range(max_iter + 1):  # it = steps taken so far
        z = sf.dual_matrix(y)
        zl = sf.slack_dual(y)
        try:
            zf = zf_next if zf_next is not None else ArrowFactor(z, k)
            lx = lx_next if lx_next is not None else sla.cholesky(x, lower=True, check_finite=False)
        except (np.linalg.LinAlgError, ValueError):
            reason = StopReason.LOST_DEFINITENESS
            break
        zinv = zf.inverse()
        ratio = xl / zl
        pobj, dobj, pinf, mu, relgap = _measures(sf, x, xl, y, z, zl)
        if it > 0 and (relgap < 1e-2 or (target is not None and dobj > target)):
            cand = best_gamma(rel, obj, sf.multipliers(y))
            bound = dual_bound(rel, obj, cand)
            if bound > best_bound:
                best, best_bound = cand, bound
        elapsed = time.perf_counter() - t_start
        level = logging.INFO if elapsed - last_info > PROGRESS_EVERY else logging.DEBUG
        last_info = elapsed if level == logging.INFO else last_info
        log.log(level, "SDP ipm: iteration %d, %.1fs: sound bound %.8g, dual %.8g, primal %.8g, rel. gap %.1e, "
                "primal infeasibility %.1e", it, elapsed, best_bound, dobj, pobj, relgap, pinf)
        stop = _stop_reason(pobj, pinf, relgap, best_bound, tol, target, deadline)
        if stop is not None or it == max_iter:
            reason, converged = stop or reason, stop is StopReason.CONVERGED
            break
        try:
            mfac = sla.cho_factor(sf.schur_matrix(x, zinv, ratio), lower=True, check_finite=True)
        except (np.linalg.LinAlgError, ValueError):
            reason = StopReason.SCHUR_NOT_PD
            break
        try:
            dy, dx, dxl, ap, ad, sigma = _predictor_corrector(sf, mfac, x, xl, z, zf, zinv, zl, ratio, lx, mu, k)
        except (np.linalg.LinAlgError, ValueError) as err:  # non-finite numbers: numerical trouble
            reason, detail = StopReason.NUMERICAL_TROUBLE, str(err)
            break
        frac = STEP + (1.0 - STEP) * 0.5 * min(ap, ad)
        (ap, lx_next), (ad, zf_next) = (_feasible(lambda a: x + a * dx, frac * ap),
                                         _feasible(lambda a: sf.dual_matrix(y + a * dy), frac * ad, k))
        log.debug("SDP ipm: steps %.3f %.3f, sigma %.3f", ap, ad, sigma)
        if ap == 0.0 and ad == 0.0:
            reason = StopReason.NO_PROGRESS
            break
        x = x + ap * dx
        xl = xl + ap * dxl
        y = y + ad * dy
    if reason not in (StopReason.CONVERGED, StopReason.TARGET_REACHED):  # the last iterate may be the best point
        cand = best_gamma(rel, obj, sf.multipliers(y))
        bound = dual_bound(rel, obj, cand)
        if bound > best_bound:
            best, best_bound = cand, bound
    return IPMResult(best_bound, best, pobj, pinf, it, converged, reason, detail)


def _predictor_corrector(sf: SDPStandardForm, mfac: tuple, x: np.ndarray, xl: np.ndarray, z: np.ndarray,
                         zf: ArrowFactor, zinv: np.ndarray, zl: np.ndarray, ratio: np.ndarray, lx: np.ndarray,
                         mu: float, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, float]:
    """Mehrotra's predictor-corrector: ``(dy, dX, dxl, primal step, dual step, sigma)``, the steps being
    estimates of the largest feasible ones (capped at 1)."""
    ctx = _Context(sf, mfac, x, xl, zf, zinv, zl, ratio, sf.apply(zinv), k)
    wx = (lambda v: sla.solve_triangular(lx, v, lower=True, check_finite=False),
          lambda v: sla.solve_triangular(lx, v, lower=True, trans="T", check_finite=False))
    pred = ctx.direction(0.0, None)
    ap, ad = _steps(ctx, pred, wx)
    mu_aff = (np.sum((x + ap * pred[1]) * (z + ad * pred[3])) + (xl + ap * pred[2]) @ (zl + ad * pred[4])) / (sf.n + xl.size)
    sigma = float(np.clip((mu_aff / mu) ** 3, 0.0, 1.0))
    dy, dx, dxl, dz, dzl = ctx.direction(sigma * mu, pred)
    ap, ad = _steps(ctx, (dy, dx, dxl, dz, dzl), wx)
    if not (np.isfinite(ap) and np.isfinite(ad) and np.all(np.isfinite(dy))):
        raise ValueError("non-finite direction")
    return dy, dx, dxl, ap, ad, sigma


def _measures(sf: SDPStandardForm, x: np.ndarray, xl: np.ndarray, y: np.ndarray, z: np.ndarray,
              zl: np.ndarray) -> tuple[float, float, float, float, float]:
    """``(primal objective, dual objective, relative primal infeasibility, mu, relative gap)``."""
    ax = sf.apply(x)
    ax[sf.slack_con] += sf.slack_coef * xl
    pobj, dobj = float(np.sum(sf.c * x)), float(sf.b @ y)
    pinf = float(np.linalg.norm(sf.b - ax)) / (1.0 + float(np.linalg.norm(sf.b)))
    mu = float(np.sum(x * z) + xl @ zl) / (sf.n + xl.size)
    return pobj, dobj, pinf, mu, abs(pobj - dobj) / (1.0 + abs(pobj) + abs(dobj))


def _stop_reason(pobj: float, pinf: float, relgap: float, bound: float, tol: float, target: float | None,
                 deadline: float) -> StopReason | None:
    """Why to stop now, or None to go on."""
    if relgap < tol and pinf < tol:
        return StopReason.CONVERGED
    if target is not None and bound > target:
        return StopReason.TARGET_REACHED
    if target is not None and pinf < 1e-6 and relgap < 1e-3 and pobj < target - 1e-4 * (1.0 + abs(pobj)):
        return StopReason.TARGET_OUT_OF_REACH
    if time.perf_counter() > deadline:
        return StopReason.TIME_LIMIT
    return None


def _steps(ctx: "_Context", d: tuple, wx: tuple) -> tuple[float, float]:
    """Largest primal and dual steps (estimates, capped at 1) along the direction ``d``."""
    _, dx, dxl, dz, dzl = d
    ap = min(1.0, step_to_boundary(wx[0], wx[1], dx), ratio_step(ctx.xl, dxl))
    ad = min(1.0, step_to_boundary(ctx.zf.whiten, ctx.zf.whiten_t, dz), ratio_step(ctx.zl, dzl))
    return ap, ad


def _feasible(point, step: float, k: int | None = None, tries: int = 30) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    """``step`` shrunk by 0.8 until ``point(step)`` is positive definite (the dual through its arrow
    factor when ``k`` is given; the slacks were handled by the ratio test), with that factor;
    ``(0, None)`` when none is."""
    for _ in range(tries):
        try:
            mat = point(step)
            return step, (sla.cholesky(mat, lower=True, check_finite=False) if k is None else ArrowFactor(mat, k))
        except (np.linalg.LinAlgError, ValueError):
            step *= 0.8
    return 0.0, None


class _Context:
    """One iteration's data for the HKM directions."""

    def __init__(self, sf: SDPStandardForm, mfac: tuple, x: np.ndarray, xl: np.ndarray, zf: ArrowFactor,
                 zinv: np.ndarray, zl: np.ndarray, ratio: np.ndarray, azinv: np.ndarray, k: int) -> None:
        self.sf, self.mfac, self.x, self.xl, self.zf, self.zinv, self.zl = sf, mfac, x, xl, zf, zinv, zl
        self.ratio, self.azinv, self.k = ratio, azinv, k

    def direction(self, smu: float, corr: tuple | None) -> tuple[np.ndarray, ...]:
        """``(dy, dX, dxl, dZ, dzl)``: the HKM direction towards ``smu`` (``sigma * mu``) and, for the
        corrector, with Mehrotra's second-order term from the predictor ``corr``."""
        sf, k = self.sf, self.k
        rhs = sf.b - smu * self.azinv
        lp_target = smu / self.zl
        rhs[sf.slack_con] -= sf.slack_coef * lp_target
        cmat, lcorr = None, np.zeros(self.xl.size)
        if corr is not None:
            _, cdx, cdxl, cdz, cdzl = corr
            cmat = self.zf.times_inverse(times_structured(cdx, cdz, k))
            cmat = 0.5 * (cmat + cmat.T)
            lcorr = cdxl * cdzl / self.zl
            rhs += sf.apply(cmat)
            rhs[sf.slack_con] += sf.slack_coef * lcorr
        dy = sla.cho_solve(self.mfac, rhs, check_finite=False)
        w = sf.adjoint(dy)
        dzl = -sf.slack_coef * dy[sf.slack_con]
        xwz = self.zf.times_inverse(times_structured(self.x, w, k))
        dx = -self.x + 0.5 * (xwz + xwz.T) + smu * self.zinv
        if cmat is not None:
            dx -= cmat
        dxl = lp_target - self.xl - self.ratio * dzl - lcorr
        return dy, dx, dxl, -w, dzl
