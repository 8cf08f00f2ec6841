"""The SDP standard form the SDP solvers consume: one PSD block with an *arrow* structure.

A relaxation emits an :class:`ArrowSDP`; the interior-point solver (:mod:`verify.solvers.sdp_ipm`)
works on this form only, and the dual multipliers it returns are indexed by the form's constraints.

The variable is ``X >= 0`` (PSD) of side ``n = k + t``: a *head* of ``k`` indices (index 0 is the
constant 1) and a *tail* of ``t`` indices that are coupled to each other only through the diagonal.
The problem::

    minimize    o^T X e_0
    subject to  X_00 = 1                                   y_0 = gamma (free)
                X_ii <= 1               i in box            y_i = -mu_i <= 0   (one slack each)
                q_r^T X e_0 >= 0        r in ge_rows        y_r = lam_r >= 0   (one slack each)
                q_r^T X (e_0 + e_p) = 0 r in eq_rows, p = eq_head[r] (a head index)   y_r = -nu_r (free)

with ``q_r`` the dense rows of ``rows``. Every constraint matrix is ``sym(p q^T)`` with ``p`` a unit
vector of the head (or ``e_0 + e_p``) and ``q`` a unit vector (the diagonal constraints) or a dense row,
so ``Z = C - A^T(y)`` is nonzero only in its head rows/columns and on its diagonal: its tail block is the
diagonal ``mu_tail`` (every tail index must be boxed). Constraint order in ``y``:
``[gamma, box (nb), ge (ng), eq (ne)]``.

Sound bound (:func:`form_bound`): for any ``y`` with ``mu >= 0``, ``lam >= 0`` and every feasible ``X``,
``o^T X e_0 = <Z, X> + b^T y + (slack terms >= 0)`` and ``<Z, X> >= <S, X_hh> >= min(0, lambda_min(S)) tr(X_hh)``
with ``S`` the Schur complement of the diagonal tail block, and ``tr(X_hh) <= 1 + (boxed head indices)``
(if some head index is unboxed, ``S`` must be PSD). Solvers use it to keep the best point; the
independent checker of :mod:`verify.certificate` recomputes the certificate's bound from the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.linalg as sla

_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True, eq=False)
class ArrowSDP:
    """One margin's SDP in the arrow standard form (module doc); all arrays float64 / int.

    Attributes:
        k: head size (index 0 is the constant); the tail is ``n - k``.
        o: objective row ``(n,)``.
        rows: dense constraint rows ``(R, n)``.
        box: indices ``>= 1`` with ``X_ii <= 1`` (every tail index must be among them), sorted.
        ge_rows: rows ``r`` with ``q_r^T X e_0 >= 0``.
        eq_rows, eq_head: rows ``r`` and head indices ``p`` with ``q_r^T X (e_0 + e_p) = 0``.
    """

    k: int
    o: np.ndarray
    rows: np.ndarray
    box: np.ndarray
    ge_rows: np.ndarray
    eq_rows: np.ndarray
    eq_head: np.ndarray

    def __post_init__(self) -> None:
        n = self.o.shape[0]
        if self.rows.ndim != 2 or self.rows.shape[1] != n:
            raise ValueError(f"constraint rows have shape {self.rows.shape}, expected (R, {n})")
        if not np.all(np.isin(np.arange(self.k, n), self.box)):
            raise ValueError("every tail index of an arrow SDP must be boxed")
        if self.eq_rows.shape != self.eq_head.shape or np.any((self.eq_head < 1) | (self.eq_head >= self.k)):
            raise ValueError("equality rows need one head index (1 <= p < k) each")

    @property
    def n(self) -> int:
        return int(self.o.shape[0])

    @cached_property
    def _unique_heads(self) -> bool:
        return np.unique(self.eq_head).size == self.eq_head.size

    @property
    def t(self) -> int:
        return self.n - self.k

    @property
    def m(self) -> int:
        """Number of constraints (length of ``y``)."""
        return 1 + self.box.size + self.ge_rows.size + self.eq_rows.size

    @property
    def diag_index(self) -> np.ndarray:
        """The matrix index of each diagonal constraint (``0`` and the boxed indices), ``(1 + nb,)``."""
        return np.concatenate([[0], self.box]).astype(int)

    @property
    def dense_p(self) -> np.ndarray:
        """Head index ``p`` of each dense constraint's second vector ``e_0 + e_p`` (0 when it is ``e_0``)."""
        return np.concatenate([np.zeros(self.ge_rows.size, dtype=int), self.eq_head]).astype(int)

    @property
    def dense_q(self) -> np.ndarray:
        """Row of ``rows`` used by each dense constraint, ge then eq."""
        return np.concatenate([self.ge_rows, self.eq_rows]).astype(int)

    @property
    def b(self) -> np.ndarray:
        return np.concatenate([[1.0], np.ones(self.box.size), np.zeros(self.ge_rows.size + self.eq_rows.size)])

    @property
    def slack_con(self) -> np.ndarray:
        """Constraints with a slack: the boxes (coefficient +1) and the ge rows (coefficient -1)."""
        nb, ng = self.box.size, self.ge_rows.size
        return np.concatenate([1 + np.arange(nb), 1 + nb + np.arange(ng)])

    @property
    def slack_coef(self) -> np.ndarray:
        return np.concatenate([np.ones(self.box.size), -np.ones(self.ge_rows.size)])

    def slack_dual(self, y: np.ndarray) -> np.ndarray:
        """Duals of the slacks (``mu`` of the boxes, ``lam`` of the ge rows); must stay ``> 0``."""
        return -self.slack_coef * y[self.slack_con]

    def dual(self, y: np.ndarray) -> "Arrow":
        """``Z = C - A^T(y)`` (an :class:`Arrow`)."""
        return self.adjoint(-y, objective=True)

    def adjoint(self, y: np.ndarray, objective: bool = False) -> "Arrow":
        """``A^T(y) = sum_i y_i A_i`` (plus ``C`` when ``objective``), as an :class:`Arrow`."""
        k, n = self.k, self.n
        nb, ng = self.box.size, self.ge_rows.size
        diag = np.zeros(n)
        diag[self.diag_index] = y[: 1 + nb]
        yd = y[1 + nb :]
        first = yd @ self.rows[self.dense_q]  # sum_a y_a q_a, enters as sym(e_0 q_a^T)
        if objective:
            first = first + self.o
        h = np.zeros((k, n))
        h[0] += 0.5 * first
        h[:, 0] += 0.5 * first[:k]
        ye = yd[ng:]
        if ye.size:  # sym(e_p q^T) for the eq rows
            qe = 0.5 * ye[:, None] * self.rows[self.eq_rows]
            if self._unique_heads:
                h[self.eq_head] += qe
                h[:, self.eq_head] += qe[:, :k].T  # the symmetric head-head part (column p)
            else:
                np.add.at(h, self.eq_head, qe)
                np.add.at(h.T, self.eq_head, qe[:, :k])
        h[np.arange(k), np.arange(k)] += diag[:k]
        return Arrow(h, diag[k:])

    def apply(self, head: np.ndarray, tail_diag: np.ndarray) -> np.ndarray:
        """``A(X)`` for a symmetric ``X`` given by its head rows ``(k, n)`` and tail diagonal ``(t,)``."""
        k = self.k
        diag = np.concatenate([np.diag(head[:, :k]), tail_diag])
        nb = self.box.size
        out = np.empty(self.m)
        out[: 1 + nb] = diag[self.diag_index]
        col0 = head[0]
        dq = self.rows[self.dense_q] @ col0
        ne = self.eq_rows.size
        if ne:
            dq[self.ge_rows.size :] += np.sum(self.rows[self.eq_rows] * head[self.eq_head], axis=1)
        out[1 + nb :] = dq
        return out

    def dense_constraints(self) -> list[np.ndarray]:
        """Every ``A_i`` as a dense matrix (for tests and small problems only)."""
        return [self.adjoint(e).dense() for e in np.eye(self.m)]


class Arrow:
    """A symmetric matrix that is nonzero only in its first ``k`` rows/columns and on its diagonal:
    head rows ``h`` ``(k, n)`` (their head block symmetric) and the tail diagonal ``d`` ``(n - k,)``."""

    def __init__(self, h: np.ndarray, d: np.ndarray) -> None:
        self.h, self.d = h, d
        self.k = h.shape[0]

    def apply(self, v: np.ndarray) -> np.ndarray:
        """``W v`` for ``v`` of shape ``(n,)`` or ``(n, r)``."""
        k = self.k
        out = np.empty_like(v, dtype=np.float64)
        out[:k] = self.h @ v
        out[k:] = self.h[:, k:].T @ v[:k] + (self.d * v[k:].T).T
        return out

    def scaled(self, a: float) -> "Arrow":
        return Arrow(a * self.h, a * self.d)

    def plus(self, other: "Arrow", a: float = 1.0) -> "Arrow":
        """``self + a * other``."""
        return Arrow(self.h + a * other.h, self.d + a * other.d)

    def dense(self) -> np.ndarray:
        k = self.k
        n = self.h.shape[1]
        out = np.zeros((n, n))
        out[:k] = self.h
        out[k:, :k] = self.h[:, k:].T
        out[np.arange(k, n), np.arange(k, n)] = self.d
        return out


def shift_objective(form: ArrowSDP, o_old: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Multipliers for ``form`` from multipliers ``y`` of the same constraints under the objective row ``o_old``
    (a warm start): ``gamma`` and the box multipliers move so that the new ``Z`` dominates the old one.

    With ``delta = o - o_old`` (``delta_0`` apart) ``sym(e_0 delta^T) >= -(tau/2) E_00 - (|delta|_1 / (2 tau)) diag(|delta|)``
    (``delta delta^T <= |delta|_1 diag(|delta|)``), so lowering ``gamma`` by ``tau/2 - delta_0`` and raising each box
    ``mu_i`` by ``|delta|_1 |delta_i| / (2 tau)`` keeps ``Z`` PD; ``tau = |delta|_1`` loses the least dual value.
    """
    d = form.o - o_old
    d0 = float(d[0])
    d[0] = 0.0
    l1 = float(np.abs(d).sum())
    out = np.asarray(y, dtype=np.float64).copy()
    if l1 == 0.0:
        out[0] += d0
        return out
    out[0] += d0 - 0.5 * l1
    out[1 : 1 + form.box.size] -= 0.5 * np.abs(d[form.box])
    rest = np.setdiff1d(np.arange(1, form.n), form.box)
    if rest.size and np.any(d[rest] != 0):  # an unboxed index cannot absorb its part: no warm start
        raise ValueError("the objective changed on an unboxed index")
    return out


def form_bound(form: ArrowSDP, y: np.ndarray) -> float:
    """Sound lower bound on the form's minimum from any ``y`` (module doc), float64 with rounding
    allowances; ``-inf`` when ``y`` is not usable (non-finite, or a zero tail multiplier where needed)."""
    if not np.all(np.isfinite(y)):
        return -np.inf
    y = project(form, y)
    z = form.dual(y)
    s, err = schur_of(z)
    if not np.isfinite(err):
        return -np.inf
    lmin = rigorous_lambda_min(s, err)
    if not np.isfinite(lmin):
        return -np.inf
    nb = form.box.size
    boxed_head = int(np.sum(form.box < form.k))
    mu_sum = float(-np.sum(y[1 : 1 + nb]))
    total = float(y[0]) - mu_sum
    if boxed_head < form.k - 1:  # an unboxed head index: no trace bound, S must be PSD
        trace = 0.0 if lmin >= 0 else np.inf
    else:
        trace = float(form.k)
    penalty = trace * min(0.0, lmin) if np.isfinite(trace) else -np.inf
    val = total + penalty - 4.0 * (form.n + 2) * _EPS * (abs(float(y[0])) + mu_sum)
    return float(val) if np.isfinite(val) else -np.inf


def project(form: ArrowSDP, y: np.ndarray) -> np.ndarray:
    """Clip the sign-constrained multipliers (boxes ``y <= 0``, ge rows ``y >= 0``) to their domains."""
    out = np.asarray(y, dtype=np.float64).copy()
    nb, ng = form.box.size, form.ge_rows.size
    out[1 : 1 + nb] = np.minimum(out[1 : 1 + nb], 0.0)
    out[1 + nb : 1 + nb + ng] = np.maximum(out[1 + nb : 1 + nb + ng], 0.0)
    return out


def schur_of(z: Arrow) -> tuple[np.ndarray, float]:
    """``S = Z_hh - Z_ht diag(1/d) Z_th`` and an upper bound on the 2-norm error of forming it; tail
    columns that are exactly zero are skipped (their ``d`` may be 0); a zero ``d`` with a nonzero column
    gives ``(S, inf)``."""
    k = z.k
    zht = z.h[:, k:]
    used = np.any(zht != 0.0, axis=0)
    if np.any(~(z.d[used] > 0)):
        return z.h[:, :k].copy(), np.inf
    bs = zht[:, used] / np.sqrt(z.d[used])
    zhh = z.h[:, :k]
    s = zhh - bs @ bs.T
    s = 0.5 * (s + s.T)
    abs_term = np.linalg.norm(np.abs(bs) @ np.abs(bs).T) + np.linalg.norm(zhh)
    return s, 4.0 * (int(used.sum()) + 4) * _EPS * abs_term


def rigorous_lambda_min(s: np.ndarray, form_err: float) -> float:
    """A float64 lower bound on the smallest eigenvalue of the exact matrix that ``s`` approximates within
    ``form_err`` (2-norm): dense LAPACK eigenvalues minus a backward-error allowance (Weyl)."""
    if not np.all(np.isfinite(s)) or not np.isfinite(form_err):
        return -np.inf
    lam = sla.eigh(s, eigvals_only=True, driver="ev")
    fro = float(np.linalg.norm(s))
    return float(lam[0]) - form_err - 16.0 * s.shape[0] * _EPS * fro - 1e-300


def best_gamma(form: ArrowSDP, y: np.ndarray) -> np.ndarray:
    """``y`` with ``gamma = y_0`` replaced by the largest value keeping ``S`` PSD (a Schur complement in
    its first row), when that gives a better sound bound; ``y`` otherwise."""
    y0 = project(form, y)
    y0[0] = 0.0
    s, err = schur_of(form.dual(y0))
    if not np.isfinite(err):
        return y
    if form.k == 1:
        cand = y0.copy()
        cand[0] = float(s[0, 0])
        return cand if form_bound(form, cand) > form_bound(form, y) else y
    r, q = s[1:, 1:], s[0, 1:]
    try:
        evals, evecs = sla.eigh(r, driver="evr")
    except (np.linalg.LinAlgError, ValueError):
        return y
    if evals[0] <= 1e-12 * max(1.0, abs(evals[-1])):
        return y
    w = evecs.T @ q
    gamma = float(s[0, 0] - np.sum(w * w / evals))
    gamma -= 1e-9 * max(1.0, abs(gamma))
    cand = y0.copy()
    cand[0] = gamma
    return cand if form_bound(form, cand) > form_bound(form, y) else y
