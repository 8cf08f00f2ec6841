"""First-order polish of the SDP dual bound: L-BFGS-B on a smoothed dual function of an arrow SDP form.

For multipliers ``y`` of an :class:`~verify.solvers.sdp_form.ArrowSDP` the sound dual function is::

    F(y) = b^T y + T * min(0, lambda_min(S(y)))

(``T`` the trace bound, ``S`` the Schur complement of ``Z = C - A^T(y)``'s diagonal tail; nonsmooth,
concave). We maximize the smooth lower approximation that replaces ``min(0, lambda_min(S))`` by
``-t log(1 + sum_i exp(-lambda_i / t))`` (never above it) for a decreasing sequence of temperatures
``t``, each stage an L-BFGS-B run warm-started from the previous one. One value-and-gradient costs one
dense ``eigh`` of side ``k`` plus a few ``O(n k)`` products: the gradient of the smoothed term with respect
to ``S`` is ``G = V diag(w) V^T`` (softmax weights ``w``), pushed back through ``S = Z_hh - B D^{-1} B^T`` to
an arrow-pattern matrix ``G_Z``, and ``dF/dy = b - T A(G_Z)``.

The caller's bound is :func:`verify.solvers.sdp_form.form_bound` of the returned multipliers; the
smoothing only steers the search.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.linalg as sla
from scipy.optimize import OptimizeResult, minimize

from verify.solvers.sdp_form import ArrowSDP, best_gamma, form_bound

log = logging.getLogger(__name__)


class SmoothedDual:
    """Value and gradient of the smoothed dual function of ``form`` over its multipliers ``y``."""

    def __init__(self, form: ArrowSDP) -> None:
        self.form = form
        self.trace = float(form.k)
        self.t = 1.0

    def __call__(self, y: np.ndarray) -> tuple[float, np.ndarray]:
        """``(-F_t(y), -grad)`` (for a minimizer)."""
        form, k, t = self.form, self.form.k, self.t
        z = form.dual(y)
        bd = z.h[:, k:] / z.d  # B D^{-1}
        s = z.h[:, :k] - bd @ z.h[:, k:].T
        s = 0.5 * (s + s.T)
        try:
            lam, vec = sla.eigh(s, driver="evd")
        except (np.linalg.LinAlgError, ValueError):
            return np.inf, np.zeros_like(y)
        e = -lam / t
        emax = max(0.0, float(e.max()))
        ex = np.exp(e - emax)
        tot = np.exp(-emax) + ex.sum()
        smin = -t * (emax + np.log(tot))
        g = (vec * (ex / tot)) @ vec.T  # d smin / d S
        gb = g @ bd
        head = np.concatenate([g, -gb], axis=1)  # d smin / d Z on the arrow pattern (head rows)
        tail = np.sum(bd * gb, axis=0)  # (D^{-1} B^T G B D^{-1})_ii
        val = float(form.b @ y) + self.trace * smin
        grad = form.b - self.trace * form.apply(head, tail)
        return -val, -grad


TEMPS = (3e-3, 3e-4, 3e-5, 3e-6, 1e-6)  # smoothing temperatures (margin units per unit trace)
STAGE_ITERS = 2000  # L-BFGS-B iterations per temperature
CHECK_EVERY = 25  # L-BFGS-B iterations between two sound-bound checks (best point kept; target stop)


def polish(form: ArrowSDP, start: np.ndarray, deadline: float, target: float | None = None,
           temps: tuple[float, ...] = TEMPS, iters: int = STAGE_ITERS) -> tuple[np.ndarray, float]:
    """Improve ``start`` by L-BFGS-B on the smoothed dual at each temperature of ``temps`` (absolute:
    margin units per unit trace), until ``deadline`` (a ``time.perf_counter()`` value)
    or until the sound bound exceeds ``target``.

    Returns ``(multipliers, sound bound)``: the best point by :func:`form_bound` (``start`` if none beats it).
    """
    fun = SmoothedDual(form)
    best = np.asarray(start, dtype=np.float64).copy()
    best_bound = form_bound(form, best)
    nb, ng = form.box.size, form.ge_rows.size
    tail = form.box >= form.k
    floor = 1e-12 * (1.0 + float(np.abs(best[1 : 1 + nb]).max(initial=0.0)))
    bnds = ([(None, None)] + [(None, -floor if t else 0.0) for t in tail] + [(0.0, None)] * ng
            + [(None, None)] * form.eq_rows.size)
    y = np.clip(best, [lo if lo is not None else -np.inf for lo, _ in bnds],
                [hi if hi is not None else np.inf for _, hi in bnds])
    calls = [0]
    hit: list[tuple[np.ndarray, float]] = []  # the best sound point seen inside the current stage

    def stop(intermediate_result: OptimizeResult) -> None:
        calls[0] += 1
        if calls[0] % CHECK_EVERY == 0:
            cand = best_gamma(form, intermediate_result.x)
            bound = form_bound(form, cand)
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
        res = minimize(fun, y, jac=True, method="L-BFGS-B", bounds=bnds,
                       options={"maxiter": iters, "maxcor": 50, "ftol": 1e-15, "gtol": 1e-12}, callback=stop)
        y = res.x
        cand = best_gamma(form, y)
        bound = form_bound(form, cand)
        if hit and hit[-1][1] > bound:
            cand, bound = hit[-1]
        log.debug("SDP polish: t %.0e, %d evals, smoothed %.7g, bound %.7g", t, res.nfev, -res.fun, bound)
        if bound > best_bound:
            best, best_bound = cand, bound
            y = cand.copy()
    return best, best_bound
