"""Structured linear algebra for the arrow SDP form (:mod:`verify.solvers.sdp_form`).

Two kinds of symmetric ``n x n`` matrices (head of size ``k``, tail ``t = n - k``) appear:

* :class:`~verify.solvers.sdp_form.Arrow`: nonzero only in the head rows/columns and on the diagonal
  (the dual matrix ``Z``, the constraint combinations ``A^T(y)``);
* :class:`Completed`: ``Psi K Psi^T + diag(0, j)`` with ``Psi = [I_k; P]`` (``P`` of shape ``(t, k)``).
  ``Z^{-1}`` for an arrow ``Z`` is one (``K = S^{-1}``, ``P = -D^{-1} Z_th``, ``j = 1/d``), and so is the
  *maximum-determinant completion* of a primal iterate given only on the arrow pattern (head rows and
  tail diagonal): ``K = X_hh``, ``P = X_th X_hh^{-1}``, ``j = X_tt,ii - (X_th X_hh^{-1} X_ht)_ii``.

Only the pattern of the primal matters to the constraints, so the interior-point method keeps the
primal iterate on the pattern and works with its completion (the completion method of Fukuda, Kojima,
Murota & Nakata, SIAM J. Optim. 2000): on the central path ``X = mu Z^{-1}`` *is* that completion. Every
product then costs ``O(n k^2)`` instead of ``O(n^2 k)``; only the Newton (Schur) matrix stays dense.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from verify.solvers.sdp_form import Arrow, ArrowSDP

LANCZOS = 20  # Lanczos steps for the largest feasible step


class Pattern:
    """A symmetric matrix known on the arrow pattern: head rows ``h`` ``(k, n)`` and tail diagonal ``d``."""

    def __init__(self, h: np.ndarray, d: np.ndarray) -> None:
        self.h, self.d = h, d
        self.k = h.shape[0]

    def plus(self, other: "Pattern", a: float = 1.0) -> "Pattern":
        return Pattern(self.h + a * other.h, self.d + a * other.d)

    def scaled(self, a: float) -> "Pattern":
        return Pattern(a * self.h, a * self.d)

    def inner(self, z: Arrow) -> float:
        """``<X, Z>`` for an arrow ``Z`` (which is zero off the pattern)."""
        k = self.k
        return float(np.sum(self.h * z.h) + np.sum(self.h[:, k:] * z.h[:, k:]) + self.d @ z.d)

    def trace(self) -> float:
        return float(np.trace(self.h[:, : self.k]) + self.d.sum())


class Completed:
    """``M = Psi K Psi^T + diag(0, j)``, ``Psi = [I_k; P]`` (see the module doc)."""

    def __init__(self, p: np.ndarray, kmat: np.ndarray, j: np.ndarray, chol: np.ndarray | None = None,
                 root: np.ndarray | None = None) -> None:
        self.p, self.kmat, self.j = p, kmat, j
        self.k = kmat.shape[0]
        self.chol = chol  # lower Cholesky factor of K when known (for whitening)
        self.root = chol if root is None else root  # any F with F F^T = K (for dense())

    @staticmethod
    def from_pattern(x: Pattern) -> "Completed":
        """The maximum-determinant completion of ``x``; raises ``LinAlgError`` when ``x`` is not
        positive-definite completable (``X_hh`` not PD or a tail Schur complement ``<= 0``)."""
        k = x.k
        xhh = 0.5 * (x.h[:, :k] + x.h[:, :k].T)
        lh = sla.cholesky(xhh, lower=True, check_finite=True)
        e = sla.cho_solve((lh, True), x.h[:, k:], check_finite=False)  # X_hh^{-1} X_ht
        delta = x.d - np.sum(x.h[:, k:] * e, axis=0)
        if not np.all(delta > 0):
            raise np.linalg.LinAlgError("tail Schur complement not positive")
        return Completed(e.T, xhh, delta, lh)

    def apply(self, v: np.ndarray) -> np.ndarray:
        """``M v`` for ``v`` of shape ``(n,)`` or ``(n, r)``."""
        k = self.k
        b = self.kmat @ (v[:k] + self.p.T @ v[k:])
        return np.concatenate([b, self.p @ b + (self.j * v[k:].T).T], axis=0)

    def cols_h(self) -> np.ndarray:
        """The head columns ``M[:, :k] = Psi K`` ``(n, k)``."""
        return np.concatenate([self.kmat, self.p @ self.kmat], axis=0)

    def pattern(self) -> Pattern:
        pk = self.p @ self.kmat
        return Pattern(np.concatenate([self.kmat, pk.T], axis=1), self.j + np.sum(pk * self.p, axis=1))

    def dense(self, lower_only: bool = False) -> np.ndarray:
        """The full matrix (with ``lower_only``, only its lower triangle is valid: half the work)."""
        psi = np.concatenate([np.eye(self.k), self.p], axis=0)
        if self.root is not None:
            f = psi @ self.root
            out = sla.blas.dsyrk(1.0, f, lower=1) if lower_only else f @ f.T
        else:
            out = psi @ (self.kmat @ psi.T)
        k = self.k
        out[np.arange(k, out.shape[0]), np.arange(k, out.shape[0])] += self.j
        return out

    def whiten(self, v: np.ndarray) -> np.ndarray:
        """``L^{-1} v`` for ``M = L L^T``, ``L = [[L_K, 0], [P L_K, diag(sqrt j)]]`` (needs ``chol``)."""
        k = self.k
        wh = sla.solve_triangular(self.chol, v[:k], lower=True, check_finite=False)
        return np.concatenate([wh, (v[k:] - self.p @ v[:k]) / np.sqrt(self.j)])

    def whiten_t(self, w: np.ndarray) -> np.ndarray:
        """``L^{-T} w`` (the adjoint of :meth:`whiten`)."""
        k = self.k
        wt = w[k:] / np.sqrt(self.j)
        wh = sla.solve_triangular(self.chol, w[:k], lower=True, trans="T", check_finite=False) - self.p.T @ wt
        return np.concatenate([wh, wt])


class ArrowFactor:
    """``Z = [[Z_hh, B], [B^T, diag(d)]]`` factored through ``S = Z_hh - B diag(1/d) B^T``: ``Z = L L^T`` with
    ``L = [[chol(S), B diag(d)^{-1/2}], [0, diag(d)^{1/2}]]``. Raises ``LinAlgError`` when ``Z`` is not PD."""

    def __init__(self, z: Arrow) -> None:
        k = z.k
        if np.any(~(z.d > 0)):
            raise np.linalg.LinAlgError("tail block not positive")
        self.k, self.d, self.b = k, z.d, z.h[:, k:]
        self.bd = self.b / z.d
        s = z.h[:, :k] - self.bd @ self.b.T
        self.ls = sla.cholesky(0.5 * (s + s.T), lower=True, check_finite=True)

    def inverse(self) -> Completed:
        """``Z^{-1}`` as a :class:`Completed` (``K = S^{-1}``, ``P = -D^{-1} B^T``, ``j = 1/d``)."""
        linv = sla.solve_triangular(self.ls, np.eye(self.k), lower=True, check_finite=False)
        sinv = linv.T @ linv
        return Completed(-self.bd.T, 0.5 * (sinv + sinv.T), 1.0 / self.d, root=linv.T)

    def whiten(self, v: np.ndarray) -> np.ndarray:
        """``L^{-1} v``."""
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


def sym_product_pattern(a_apply, a_pat: Pattern, w: Arrow, b: Completed) -> Pattern:  # type: ignore[no-untyped-def]
    """The pattern of ``sym(A W B)`` for a symmetric ``A`` (given by ``a_apply(V) = A V`` and its pattern), an
    arrow ``W`` and a :class:`Completed` ``B``, in ``O(n k^2)``.

    Head rows: ``(A W B)_{h,:} = (B W A_{:,h})^T`` and ``(B W A)_{h,:} = (A W B_{:,h})^T``. Tail diagonal:
    ``B_{:,i} = Psi K P_i^T + j_i e_i`` gives ``(A W B)_ii = (A W Psi K)_i . P_i + j_i (A_{i,h} . W_{h,i} + A_ii W_ii)``.
    """
    k = a_pat.k
    y1 = a_apply(w.apply(b.cols_h()))  # A W B_{:,h}, (n, k)
    y2 = b.apply(w.apply(a_pat.h.T))  # B W A_{:,h}
    head = 0.5 * (y1.T + y2.T)
    head[:, :k] = 0.5 * (head[:, :k] + head[:, :k].T)
    tail = np.sum(y1[k:] * b.p, axis=1) + b.j * (np.sum(a_pat.h[:, k:] * w.h[:, k:], axis=0) + a_pat.d * w.d)
    return Pattern(head, tail)


def schur_matrix(form: ArrowSDP, x: Completed, zi: Completed, ratio: np.ndarray) -> np.ndarray:
    """The lower triangle (all a Cholesky factorization reads) of the Newton matrix ``M_ij = tr(A_i X A_j Z^{-1})``
    plus the slacks' diagonal ``x_l / z_l``, by blocks: the diagonal constraints (``X o Z^{-1}`` on their
    indices), the dense ones (products with the rows, once per distinct row), and their coupling."""
    di = form.diag_index
    nd = di.size
    full = nd == form.n
    xd, zd = x.dense(lower_only=True), zi.dense(lower_only=True)
    mat = np.zeros((form.m, form.m))
    if full:
        np.multiply(xd, zd, out=mat[:nd, :nd])
    else:
        low = np.tril(xd) + np.tril(xd, -1).T
        mat[:nd, :nd] = np.tril(low[np.ix_(di, di)] * (np.tril(zd) + np.tril(zd, -1).T)[np.ix_(di, di)])
    xp, xq, xpp, xpq, xqq = _dense_parts(form, x)
    zp, zq, zpp, zpq, zqq = _dense_parts(form, zi)
    cross = 0.5 * (xp * zq + xq * zp)
    mat[nd:, :nd] = (cross if full else cross[di]).T
    mat[nd:, nd:] = 0.25 * (xpq.T * zpq + xpq * zpq.T + xqq * zpp + xpp * zqq)
    mat[form.slack_con, form.slack_con] += ratio
    return mat


def _dense_parts(form: ArrowSDP, mat: Completed):  # type: ignore[no-untyped-def]
    """For the dense constraints (``p_a = e_0`` or ``e_0 + e_p``, ``q_a`` a row): ``M P``, ``M Q`` ``(n, nd)``
    and ``P^T M P``, ``P^T M Q``, ``Q^T M Q`` ``(nd, nd)``; products with a row are formed once per row."""
    p, q = form.dense_p, form.dense_q
    mr = mat.apply(form.rows.T)  # (n, R)
    mq = mr[:, q]
    cols = mat.cols_h()
    mp = cols[:, np.zeros(p.size, dtype=int)] + np.where(p > 0, cols[:, p], 0.0)
    pmp = mp[np.zeros(p.size, dtype=int)] + np.where(p[:, None] > 0, mp[p], 0.0)
    pmq = mq[np.zeros(p.size, dtype=int)] + np.where(p[:, None] > 0, mq[p], 0.0)
    qmq = (form.rows @ mr)[np.ix_(q, q)]
    return mp, mq, pmp, pmq, qmq


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


def step_to_boundary(whiten, whiten_t, matvec, n: int) -> float:  # type: ignore[no-untyped-def]
    """Estimate of the largest ``a`` with ``Y + a D`` PSD, ``Y = L L^T`` given by its whitening maps and ``D`` by
    ``matvec`` (an over-estimate at worst: the caller checks the step it takes)."""
    lmin = lanczos_min(lambda v: whiten(matvec(whiten_t(v))), n)
    return np.inf if lmin >= 0 else -1.0 / lmin


def _secular_brackets(lam: np.ndarray, g2: np.ndarray, c: np.ndarray, iters: int, low: np.ndarray | None = None,
                      top: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bisection brackets of the smallest root of ``f(mu) = mu - c - sum_j g2_j / (mu - lam_j)`` (increasing on
    ``(-inf, lam_0)``), one column per problem."""
    if top is None:
        top = np.full(c.shape, lam[0])
        low = np.minimum(lam[0], c) - np.sqrt(g2.sum(axis=0)) - 1.0
    for _ in range(iters):
        mid = 0.5 * (low + top)
        f = mid - c - np.sum(g2 / (mid[None, :] - lam[:, None]), axis=0)
        neg = f < 0
        low, top = np.where(neg, mid, low), np.where(neg, top, mid)
    return low, top


def max_completable_step(x: Completed, dx: Pattern, iters: int = 50) -> float:
    """The largest ``a`` such that the pattern ``X + a dX`` is still positive-definite completable, for ``x`` the
    completion of ``X`` (``inf`` when every ``a > 0`` is).

    The pattern is PD-completable iff every clique matrix ``C_i = [[X_hh, X_h,i], [X_i,h, X_ii]]`` (head plus
    one tail index) is PD. With ``C_i = L_i L_i^T`` the whitened direction ``L_i^{-1} dC_i L_i^{-T}`` is the
    bordered matrix ``[[A, b_i], [b_i^T, c_i]]`` with the same ``A = L_h^{-1} dX_hh L_h^{-T}`` for every ``i``, so
    one eigendecomposition of ``A`` and a secular equation per ``i`` (bisection, vectorized: a few steps for
    all ``i``, then ``iters`` for those that may hold the minimum) give each clique's smallest eigenvalue
    ``lam_i`` (from below); the step is ``-1 / min_i lam_i``.
    """
    k = x.k
    lh = x.chol
    e = x.p.T  # (k, t) = X_hh^{-1} X_ht
    delta = x.j
    dhh, dht = dx.h[:, :k], dx.h[:, k:]
    tmp = sla.solve_triangular(lh, dhh, lower=True, check_finite=False)
    a = sla.solve_triangular(lh, tmp.T, lower=True, check_finite=False)
    lam, vec = sla.eigh(0.5 * (a + a.T))
    de = dhh @ e
    sq = np.sqrt(delta)
    bmat = sla.solve_triangular(lh, dht - de, lower=True, check_finite=False) / sq
    c = (dx.d - 2.0 * np.sum(e * dht, axis=0) + np.sum(e * de, axis=0)) / delta
    g2 = (vec.T @ bmat) ** 2  # (k, t)
    low, top = _secular_brackets(lam, g2, c, 12)
    rows = np.flatnonzero(low <= np.min(top)) if low.size else low.astype(int)  # the cliques that may be smallest
    if rows.size:
        low[rows], top[rows] = _secular_brackets(lam, g2[:, rows], c[rows], iters, low[rows], top[rows])
    smallest = float(min(np.min(low) if low.size else np.inf, lam[0]))
    return np.inf if smallest >= 0 else -1.0 / smallest


def ratio_step(v: np.ndarray, dv: np.ndarray) -> float:
    neg = dv < 0
    return float(np.min(-v[neg] / dv[neg])) if np.any(neg) else np.inf
