"""Scalable SDP backend: a primal-dual interior-point method (HKM direction, Mehrotra predictor-corrector)
on the arrow standard form of :mod:`verify.solvers.sdp_form`.

For ``(P) minimize <C, X> s.t. A(X) (+ slacks) = b, X >= 0`` and ``(D) maximize b^T y s.t. Z = C - A^T(y) >= 0``
(slack duals ``>= 0``), the dual iterates stay exactly feasible (``Z`` is recomputed from ``y``), so every
iterate is a valid dual point: the best sound bound seen (:func:`verify.solvers.sdp_form.form_bound`) is
kept and returned, and stopping early (time limit, target reached, numerical trouble) only weakens it.

Structure used (:mod:`verify.solvers.sdp_linalg`): ``Z`` is an arrow (dense head of side ``k``, diagonal
tail), factored through its Schur complement of side ``k``; the primal iterate is kept on the arrow
pattern only (the constraints see nothing else) and completed to its maximum-determinant completion,
which is ``mu Z^{-1}`` on the central path. The HKM direction ``dX = sigma mu Z^{-1} - X + sym(X W Z^{-1})``
(and Mehrotra's corrector ``sym(dX dZ Z^{-1})``) is formed on the pattern in ``O(n k^2)``; the Newton matrix
``M_ij = tr(A_i X A_j Z^{-1})`` (dense, side ``m``) and its Cholesky factor are the ``O(n^2 k + m^3)`` part.
Step lengths come from Lanczos on the whitened directions and are checked by factorizations.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from verify.results import SolverStatus
from verify.solvers.sdp_form import Arrow, ArrowSDP, best_gamma, form_bound, shift_objective
from verify.solvers.sdp_linalg import (
    ArrowFactor,
    Completed,
    Pattern,
    max_completable_step,
    ratio_step,
    schur_matrix,
    step_to_boundary,
    sym_product_pattern,
)

log = logging.getLogger(__name__)

STEP = 0.9  # fraction of the largest feasible step (raised towards 1 as steps get long)
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
    STALLED = "the gap stopped shrinking (below 1e-5): converged to the attainable accuracy"

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
    StopReason.STALLED: SolverStatus.OPTIMAL_INACCURATE,
}
STALL_ITERATIONS = 8  # iterations without halving the smallest relative gap seen: a stall


WARM_GAP = 0.5  # the iterate kept as a warm start: the first with a relative gap below this


@dataclass(frozen=True, eq=False)
class WarmStart:
    """An iterate of one solve, to start a solve of the same constraints with another objective:
    ``o`` the objective row it was made for, ``x`` the primal pattern, ``xl`` the primal slacks, ``y``."""

    o: np.ndarray
    x: Pattern
    xl: np.ndarray
    y: np.ndarray

    def fits(self, form: ArrowSDP) -> bool:
        return self.y.shape == (form.m,) and self.x.h.shape == (form.k, form.n) and self.xl.shape == form.slack_con.shape


@dataclass(frozen=True)
class IPMResult:
    """``bound``: best sound lower bound seen; ``y``: where (the form's multipliers); ``primal``: the primal
    objective of the last iterate (an estimate of the SDP optimum when ``infeasibility`` is small);
    ``converged``: the relative gap and primal infeasibility fell below the tolerance; ``reason`` says why it
    stopped (``detail``: the numerical error behind NUMERICAL_TROUBLE, else empty). ``warm``: the first iterate
    with a relative gap below ``WARM_GAP`` (a warm start for the same constraints with another objective)."""

    bound: float
    y: np.ndarray
    primal: float
    infeasibility: float
    iterations: int
    converged: bool
    reason: StopReason
    detail: str = ""
    warm: WarmStart | None = None


def solve_ipm(form: ArrowSDP, y_start: np.ndarray, deadline: float, target: float | None = None, tol: float = 1e-7,
              max_iter: int = 80, warm: WarmStart | None = None) -> IPMResult:
    """Run the primal-dual method from the strictly dual-feasible ``y_start`` until the relative gap and
    primal infeasibility are below ``tol``, ``deadline`` (a ``time.perf_counter()`` value) passes, the sound
    bound exceeds ``target``, or a nearly feasible primal point shows that the target is out of reach.
    The primal starts on the central path of ``y_start`` (``X = mu Z^{-1}``); with ``warm`` (an iterate of the
    same constraints under another objective, see :func:`verify.solvers.sdp_form.shift_objective`) it starts
    from that iterate instead (about a third fewer iterations on MNIST networks).
    """
    y = np.asarray(y_start, dtype=np.float64).copy()
    x_start = None
    if warm is not None and warm.fits(form):
        try:
            y_warm = shift_objective(form, warm.o, warm.y)
            ArrowFactor(form.dual(y_warm))
            if np.all(form.slack_dual(y_warm) > 0):
                y, x_start = y_warm, (warm.x, warm.xl)
        except (np.linalg.LinAlgError, ValueError) as err:
            log.debug("SDP ipm: warm start refused (%s)", err)
    best, best_bound = y.copy(), form_bound(form, y)
    try:
        zf = ArrowFactor(form.dual(y))
        zl = form.slack_dual(y)
        if not np.all(zl > 0):
            raise ValueError("slack multipliers not positive")
    except (np.linalg.LinAlgError, ValueError):
        return IPMResult(best_bound, best, np.nan, np.inf, 0, False, StopReason.INFEASIBLE_START)
    if x_start is None:
        x = zf.inverse().pattern()
        xl = 1.0 / zl
        scale0 = form.n / x.trace()
        x, xl = x.scaled(scale0), scale0 * xl
    else:
        x, xl = x_start
    xc_next, zf_next = None, zf
    reason, detail, converged, pobj, pinf, it = StopReason.ITERATION_LIMIT, "", False, np.nan, np.inf, 0
    t_start, last_info = time.perf_counter(), 0.0
    gaps: list[float] = []
    keep: WarmStart | None = None
    for it in range(max_iter + 1):  # it = steps taken so far
        z = form.dual(y)
        zl = form.slack_dual(y)
        try:
            zf = zf_next if zf_next is not None else ArrowFactor(z)
            xc = xc_next if xc_next is not None else Completed.from_pattern(x)
        except (np.linalg.LinAlgError, ValueError):
            reason = StopReason.LOST_DEFINITENESS
            break
        zi = zf.inverse()
        ratio = xl / zl
        pobj, dobj, pinf, mu, relgap = _measures(form, x, xl, y, z, zl)
        if it > 0 and (relgap < 1e-2 or (target is not None and dobj > target)):
            cand = best_gamma(form, y)
            bound = form_bound(form, cand)
            if bound > best_bound:
                best, best_bound = cand, bound
        elapsed = time.perf_counter() - t_start
        level = logging.INFO if elapsed - last_info > PROGRESS_EVERY else logging.DEBUG
        last_info = elapsed if level == logging.INFO else last_info
        log.log(level, "SDP ipm: iteration %d, %.1fs: sound bound %.8g, dual %.8g, primal %.8g, rel. gap %.1e, "
                "primal infeasibility %.1e", it, elapsed, best_bound, dobj, pobj, relgap, pinf)
        gaps.append(relgap)
        if keep is None and relgap < WARM_GAP:
            keep = WarmStart(form.o.copy(), x, xl.copy(), y.copy())
        stop = _stop_reason(pobj, pinf, relgap, best_bound, tol, target, deadline) or _stalled(gaps)
        if stop is not None or it == max_iter:
            reason, converged = stop or reason, stop is StopReason.CONVERGED
            break
        try:
            mfac = sla.cho_factor(schur_matrix(form, xc, zi, ratio), lower=True, check_finite=True)
        except (np.linalg.LinAlgError, ValueError):
            reason = StopReason.SCHUR_NOT_PD
            break
        ctx = _Context(form, mfac, x, xc, xl, zf, zi, zl, ratio)
        try:
            dy, dx, dxl, ap, ad, sigma = _predictor_corrector(ctx, z, mu)
        except (np.linalg.LinAlgError, ValueError) as err:  # non-finite numbers: numerical trouble
            reason, detail = StopReason.NUMERICAL_TROUBLE, str(err)
            break
        frac = STEP + (1.0 - STEP) * 0.5 * min(ap, ad)
        (ap, xc_next), (ad, zf_next) = (_feasible(lambda a: Completed.from_pattern(x.plus(dx, a)), frac * ap),
                                         _feasible(lambda a: ArrowFactor(form.dual(y + a * dy)), frac * ad))
        log.debug("SDP ipm: steps %.3f %.3f, sigma %.3f", ap, ad, sigma)
        if ap == 0.0 and ad == 0.0:
            reason = StopReason.NO_PROGRESS
            break
        x = x.plus(dx, ap) if ap > 0 else x
        xl = xl + ap * dxl
        y = y + ad * dy
        if ap == 0.0:
            xc_next = None
        if ad == 0.0:
            zf_next = None
    if reason not in (StopReason.CONVERGED, StopReason.TARGET_REACHED):  # the last iterate may be the best point
        cand = best_gamma(form, y)
        bound = form_bound(form, cand)
        if bound > best_bound:
            best, best_bound = cand, bound
    return IPMResult(best_bound, best, pobj, pinf, it, converged, reason, detail, keep)


def _predictor_corrector(ctx: "_Context", z: Arrow, mu: float) -> tuple:
    """Mehrotra's predictor-corrector: ``(dy, dX, dxl, primal step, dual step, sigma)``, the steps being
    estimates of the largest feasible ones (capped at 1)."""
    form = ctx.form
    pred = ctx.direction(0.0, None)
    ap, ad = ctx.steps(pred)
    _, pdx, pdxl, pdz, pdzl, _ = pred
    nl = ctx.xl.size
    mu_aff = (ctx.x.plus(pdx, ap).inner(z.plus(pdz, ad)) + (ctx.xl + ap * pdxl) @ (ctx.zl + ad * pdzl)) / (form.n + nl)
    sigma = float(np.clip((mu_aff / mu) ** 3, 0.0, 1.0))
    corr = ctx.direction(sigma * mu, pred)
    ap, ad = ctx.steps(corr)
    dy, dx, dxl = corr[0], corr[1], corr[2]
    if not (np.isfinite(ap) and np.isfinite(ad) and np.all(np.isfinite(dy))):
        raise ValueError("non-finite direction")
    return dy, dx, dxl, ap, ad, sigma


def _measures(form: ArrowSDP, x: Pattern, xl: np.ndarray, y: np.ndarray, z: Arrow,
              zl: np.ndarray) -> tuple[float, float, float, float, float]:
    """``(primal objective, dual objective, relative primal infeasibility, mu, relative gap)``."""
    b = form.b
    ax = form.apply(x.h, x.d)
    ax[form.slack_con] += form.slack_coef * xl
    pobj, dobj = float(form.o @ x.h[0]), float(b @ y)
    pinf = float(np.linalg.norm(b - ax)) / (1.0 + float(np.linalg.norm(b)))
    mu = (x.inner(z) + float(xl @ zl)) / (form.n + xl.size)
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


def _stalled(gaps: list[float]) -> StopReason | None:
    """STALLED when the gap is already below 1e-5 and the last ``STALL_ITERATIONS`` iterations did not halve the
    smallest relative gap seen before them (rounding limits the attainable accuracy); None otherwise."""
    if len(gaps) <= STALL_ITERATIONS or not gaps[-1] < 1e-5:
        return None
    return StopReason.STALLED if min(gaps[-STALL_ITERATIONS:]) > 0.5 * min(gaps[:-STALL_ITERATIONS]) else None


def _feasible(point, step: float, tries: int = 30) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    """``step`` shrunk by 0.8 until ``point(step)`` (a factorization) succeeds, with that factor; ``(0, None)``
    when none does (the slacks were handled by the ratio test)."""
    for _ in range(tries):
        try:
            return step, point(step)
        except (np.linalg.LinAlgError, ValueError):
            step *= 0.8
    return 0.0, None


class _Context:
    """One iteration's data for the HKM directions."""

    def __init__(self, form: ArrowSDP, mfac: tuple, x: Pattern, xc: Completed, xl: np.ndarray, zf: ArrowFactor,
                 zi: Completed, zl: np.ndarray, ratio: np.ndarray) -> None:
        self.form, self.mfac, self.x, self.xc, self.xl, self.zf, self.zi, self.zl = form, mfac, x, xc, xl, zf, zi, zl
        self.ratio = ratio
        self.zi_pat = zi.pattern()
        self.azinv = form.apply(self.zi_pat.h, self.zi_pat.d)

    def direction(self, smu: float, corr: tuple | None) -> tuple:
        """``(dy, dX, dxl, dZ, dzl, dX as an operator)``: the HKM direction towards ``smu`` (``sigma * mu``)
        and, for the corrector, with Mehrotra's second-order term from the predictor ``corr``."""
        form, xc, zi = self.form, self.xc, self.zi
        rhs = form.b - smu * self.azinv
        lp_target = smu / self.zl
        rhs[form.slack_con] -= form.slack_coef * lp_target
        cmat, lcorr = None, np.zeros(self.xl.size)
        if corr is not None:
            _, cdx, cdxl, cdz, cdzl, cdx_apply = corr
            cmat = sym_product_pattern(cdx_apply, cdx, cdz, zi)  # sym(dX dZ Z^{-1}) on the pattern
            lcorr = cdxl * cdzl / self.zl
            rhs += form.apply(cmat.h, cmat.d)
            rhs[form.slack_con] += form.slack_coef * lcorr
        dy = sla.cho_solve(self.mfac, rhs, check_finite=False)
        w = form.adjoint(dy)
        dzl = -form.slack_coef * dy[form.slack_con]
        dx = sym_product_pattern(xc.apply, self.x, w, zi).plus(self.x, -1.0).plus(self.zi_pat, smu)
        if cmat is not None:
            dx = dx.plus(cmat, -1.0)
        dxl = lp_target - self.xl - self.ratio * dzl - lcorr

        def dx_apply(v: np.ndarray) -> np.ndarray:  # the full HKM dX (no corrector term) applied to v
            ziv = zi.apply(v)
            xv = xc.apply(v)
            return smu * ziv - xv + 0.5 * (xc.apply(w.apply(ziv)) + zi.apply(w.apply(xv)))

        return dy, dx, dxl, w.scaled(-1.0), dzl, dx_apply

    def steps(self, d: tuple) -> tuple[float, float]:
        """Largest primal and dual steps (estimates, capped at 1) along the direction ``d``."""
        _, dx, dxl, dz, dzl, _ = d
        n = self.form.n
        ap = min(1.0, max_completable_step(self.xc, dx), ratio_step(self.xl, dxl))
        ad = min(1.0, step_to_boundary(self.zf.whiten, self.zf.whiten_t, dz.apply, n), ratio_step(self.zl, dzl))
        return ap, ad
