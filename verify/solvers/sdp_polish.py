"""First-order polish of the SDP dual bound: L-BFGS-B on a smoothed dual function.

For multipliers ``theta`` (see :mod:`verify.solvers.sdp_problem`) the sound dual function is::

    F(theta) = gamma - sum(mu_x) - sum(mu_z) + (1 + N) * min(0, lambda_min(S(theta)))

(nonsmooth, concave). We maximize the smooth lower approximation that replaces ``min(0, lambda_min(S))``
by ``-t log(1 + sum_i exp(-lambda_i / t))`` (never above it) for a decreasing sequence of temperatures
``t``, each stage an L-BFGS-B run warm-started from the previous one. One value-and-gradient costs one
dense ``eigh`` of side ``1 + N`` plus a few ``O(N^2 + N n0)`` products: the gradient of the smoothed
term with respect to ``S`` is ``W = V diag(w) V^T`` (softmax weights ``w``), pushed back through
``S = Myy - B diag(1/mu_x) B^T``.

The caller recomputes the sound bound with :func:`verify.solvers.sdp_problem.dual_bound` from the returned
multipliers; the smoothing only steers the search.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.linalg as sla
from scipy.optimize import OptimizeResult, minimize

from verify.solvers.sdp_problem import Multipliers, SDPRelaxation, best_gamma, dual_blocks, dual_bound

log = logging.getLogger(__name__)


class SmoothedDual:
    """Value and gradient of the smoothed dual function over the packed multipliers
    ``[mu_x (n0), mu_z (N), lam (N), nu (N), kappa (k), gamma]``."""

    def __init__(self, rel: SDPRelaxation, obj: tuple[float, np.ndarray, np.ndarray], triangle: bool) -> None:
        self.rel, self.obj, self.triangle = rel, obj, triangle
        self.n0, self.n = rel.n0, rel.n_unstable
        self.k = self.n if triangle else 0
        self.g0 = rel.h - rel.a0
        self.gz = np.diag(rel.h) - rel.az
        self.tri = rel.triangle_rows() if triangle else None
        self.t = 1.0

    def unpack(self, th: np.ndarray) -> Multipliers:
        return Multipliers.unpack(th, self.n0, self.n, self.triangle)

    def __call__(self, th: np.ndarray) -> tuple[float, np.ndarray]:
        """``(-F_t(theta), -grad)`` (for a minimizer)."""
        m = self.unpack(th)
        n0, n, t = self.n0, self.n, self.t
        myy, b = dual_blocks(self.rel, self.obj, m)
        c = b / m.mu_x
        s = myy - c @ b.T
        s = 0.5 * (s + s.T)
        try:
            lam, vec = sla.eigh(s, driver="evd")
        except (np.linalg.LinAlgError, ValueError):
            return np.inf, np.zeros_like(th)
        z = -lam / t
        zmax = max(0.0, float(z.max()))
        e = np.exp(z - zmax)
        tot = np.exp(-zmax) + e.sum()
        smin = -t * (zmax + np.log(tot))
        w = e / tot
        gm = (vec * w) @ vec.T  # d smin / d S
        hm = gm @ c  # (1+N, n0)
        p = n + 1
        val = m.gamma - m.mu_x.sum() - m.mu_z.sum() + p * smin
        g00, g0r, gzz, h0, hz = gm[0, 0], gm[0, 1:], gm[1:, 1:], hm[0], hm[1:]
        ax = self.rel.ax
        dw = p * (g00 * self.g0 + self.gz @ g0r + ax @ h0)
        grad = np.empty_like(th)
        grad[:n0] = -1.0 + p * np.sum(c * hm, axis=0)
        grad[n0 : n0 + n] = -1.0 + p * np.diag(gzz)
        grad[n0 + n : n0 + 2 * n] = -dw
        grad[n0 + 2 * n : n0 + 3 * n] = dw + p * (g0r * self.g0 + np.sum(gzz * self.gz, axis=1) + np.sum(hz * ax, axis=1))
        if self.k:
            t0, tx, tz = self.tri
            grad[n0 + 3 * n : n0 + 3 * n + self.k] = -p * (g00 * t0 + tz @ g0r - tx @ h0)
        grad[-1] = 1.0 - p * g00
        return -float(val), -grad


TEMPS = (3e-3, 3e-4, 3e-5, 3e-6, 1e-6)  # smoothing temperatures (margin units per unit trace)
STAGE_ITERS = 2000  # L-BFGS-B iterations per temperature
CHECK_EVERY = 25  # L-BFGS-B iterations between two sound-bound checks (best point kept; target stop)


def polish(rel: SDPRelaxation, obj: tuple[float, np.ndarray, np.ndarray], start: Multipliers, deadline: float,
           target: float | None = None, triangle: bool = False, temps: tuple[float, ...] = TEMPS,
           iters: int = STAGE_ITERS) -> tuple[Multipliers, float]:
    """Improve ``start`` by L-BFGS-B on the smoothed dual at each temperature of ``temps`` (absolute:
    margin units per unit trace), until ``deadline`` (a ``time.perf_counter()`` value)
    or until the sound bound exceeds ``target``.

    Returns ``(multipliers, sound bound)``: the best point by :func:`dual_bound` (``start`` if none beats it).
    """
    fun = SmoothedDual(rel, obj, triangle)
    best = start
    best_bound = dual_bound(rel, obj, start)
    th = start.pack()
    n0, n = rel.n0, rel.n_unstable
    k = n if triangle else 0
    floor = 1e-12 * (1.0 + float(np.abs(th[:n0]).max(initial=0.0)))
    bnds = [(floor, None)] * n0 + [(0.0, None)] * (2 * n) + [(None, None)] * n + [(0.0, None)] * k + [(None, None)]
    th = np.clip(th, [lo if lo is not None else -np.inf for lo, _ in bnds], None)
    calls = [0]
    hit: list[tuple[Multipliers, float]] = []  # the best sound point seen inside the current stage

    def stop(intermediate_result: OptimizeResult) -> None:
        calls[0] += 1
        if calls[0] % CHECK_EVERY == 0:
            cand = best_gamma(rel, obj, fun.unpack(intermediate_result.x))
            bound = dual_bound(rel, obj, cand)
            if not hit or bound > hit[-1][1]:
                hit.append((cand, bound))
            if target is not None and bound > target:
                raise StopIteration
        if time.perf_counter() > deadline:
            raise StopIteration

    for t in temps:
        if time.perf_counter() > deadline or (target is not None and best_bound > target):
            break
        fun.t = t
        res = minimize(fun, th, jac=True, method="L-BFGS-B", bounds=bnds,
                       options={"maxiter": iters, "maxcor": 50, "ftol": 1e-15, "gtol": 1e-12}, callback=stop)
        th = res.x
        cand = best_gamma(rel, obj, fun.unpack(th))
        bound = dual_bound(rel, obj, cand)
        if hit and hit[-1][1] > bound:
            cand, bound = hit[-1]
        log.debug("SDP polish: t %.0e, %d evals, smoothed %.7g, bound %.7g", t, res.nfev, -res.fun, bound)
        if bound > best_bound:
            best, best_bound = cand, bound
            th = cand.pack()
    return best, best_bound
