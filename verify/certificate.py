"""Independent numpy checkers for relaxation certificates.

LP section
----------
:class:`LPCertificate` holds the multipliers of the triangle LP; the bound is the LP's Lagrangian at
those multipliers, minimized over the variable boxes in closed form (:mod:`verify.lp_dual`).

Bounds. Neither checker takes the pre-activation bounds stored in a certificate on trust:
:func:`usable_bounds` re-derives sound bounds with the numpy code of :mod:`verify.bounds_check`
(interval arithmetic, CROWN back-substitution, and the tightening steps the certificate's
:class:`~verify.bounds_proof.BoundsProof` carries: alpha-CROWN slopes, LP-layerwise multipliers) and
uses the hull of the stored and the re-derived bounds. Stored bounds that the proof supports come back
as given; tighter ones are widened to what the checker can prove. No bound is accepted because it
contains sampled points (the sample test below only catches gross errors early with a clear message).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from verify.bounds_check import confirmed_bounds
from verify.bounds_proof import BoundsProof
from verify.lp_dual import CertificateError, check_shapes, lagrangian_value
from verify.network import Network
from verify.results import SolverStatus
from verify.rounding import UNIT, eigenvalue_allowance, forward_allowance
from verify.spec import InputBox

__all__ = ["CertificateError", "LPCertificate", "SDPCertificate", "SDPChecker", "check_lp_certificate", "check_lp_certificate_all",
           "check_sdp_certificate", "lagrangian_bounds", "usable_bounds"]

_UNIT = UNIT  # the SDP section's allowances below follow the rules of verify.rounding


@dataclass(frozen=True, eq=False)
class LPCertificate:
    """Dual multipliers of the triangle LP for ``m`` margin rows.

    Attributes:
        C, d: the margin rows ``C y + d`` the multipliers were computed for, ``(m, n_out)`` and ``(m,)``.
        lower, upper: pre-activation bounds of every *hidden* layer, each ``(n_i,)``.
        lam, alpha, beta, gamma: one ``(m, n_i)`` array per hidden layer (see the module doc).
        statuses: the solver's status per row; primal: the solver's primal objective per row
            (advisory only, never used as a bound).
        bounds_proof: how ``lower/upper`` were made and what the checker needs to re-derive them
            (see :func:`usable_bounds`).
    """

    C: np.ndarray
    d: np.ndarray
    lower: tuple[np.ndarray, ...]
    upper: tuple[np.ndarray, ...]
    lam: tuple[np.ndarray, ...]
    alpha: tuple[np.ndarray, ...]
    beta: tuple[np.ndarray, ...]
    gamma: tuple[np.ndarray, ...]
    statuses: tuple[SolverStatus, ...]
    primal: np.ndarray
    bounds_proof: BoundsProof = field(default_factory=BoundsProof)

    @property
    def n_rows(self) -> int:
        return int(self.C.shape[0])


def check_lp_certificate(
    net: Network, box: InputBox, spec_row: tuple[np.ndarray, float], cert: LPCertificate, index: int | None = None
) -> float:
    """Sound lower bound on ``c^T f(x) + d`` over ``box`` from the multipliers of row ``index`` of ``cert``.

    ``spec_row`` is ``(c, d)`` with ``c`` of shape ``(n_out,)``. When ``index`` is None the row of
    ``cert`` made for exactly this ``(c, d)`` is used. Returns ``-inf`` for non-finite multipliers;
    raises :class:`CertificateError` when shapes do not match or the bounds are not plausible.
    """
    c = np.asarray(spec_row[0], dtype=np.float64).ravel()
    d = float(spec_row[1])
    if index is None:
        hits = np.flatnonzero(np.all(cert.C == c, axis=1) & (cert.d == d))
        if hits.size == 0:
            raise CertificateError("the certificate holds no multipliers for this margin row")
        index = int(hits[0])
    if not 0 <= index < cert.n_rows:
        raise CertificateError(f"row index {index} out of range for a certificate of {cert.n_rows} rows")
    mults = tuple(tuple(a[index : index + 1] for a in group) for group in (cert.lam, cert.alpha, cert.beta, cert.gamma))
    return float(lagrangian_bounds(net, box, c[None], np.array([d]), cert.lower, cert.upper, *mults, cert.bounds_proof)[0])


def check_lp_certificate_all(net: Network, box: InputBox, C: np.ndarray, d: np.ndarray, cert: LPCertificate) -> np.ndarray:
    """Checked lower bounds ``(m,)`` for all rows ``C y + d``, row ``k`` using the certificate's row ``k``."""
    C = np.atleast_2d(np.asarray(C, dtype=np.float64))
    d = np.asarray(d, dtype=np.float64).ravel()
    if C.shape[0] != cert.n_rows or d.shape != (cert.n_rows,):
        raise CertificateError(f"{C.shape[0]} margin rows but the certificate has {cert.n_rows}")
    return lagrangian_bounds(net, box, C, d, cert.lower, cert.upper, cert.lam, cert.alpha, cert.beta, cert.gamma,
                             cert.bounds_proof)


def lagrangian_bounds(
    net: Network,
    box: InputBox,
    C: np.ndarray,
    d: np.ndarray,
    lower: tuple[np.ndarray, ...],
    upper: tuple[np.ndarray, ...],
    lam: tuple[np.ndarray, ...],
    alpha: tuple[np.ndarray, ...],
    beta: tuple[np.ndarray, ...],
    gamma: tuple[np.ndarray, ...],
    bounds_proof: BoundsProof | None = None,
) -> np.ndarray:
    """The Lagrangian of the triangle LP minimized over the variable boxes, rounding-safe; ``(m,)``.

    The pre-activation bounds are first re-derived independently (:func:`usable_bounds`, with the
    steps of ``bounds_proof``); see :func:`verify.lp_dual.lagrangian_value` for the rest.
    """
    check_shapes(net, box, C, lower, upper, (lam, alpha, beta, gamma))
    lower, upper = usable_bounds(net, box, lower, upper, bounds_proof)
    return lagrangian_value(net, box, C, d, lower, upper, lam, alpha, beta, gamma)


def usable_bounds(net: Network, box: InputBox, lower, upper, proof: BoundsProof | None):  # type: ignore[no-untyped-def]
    """The bounds a checker may use: the hull of the stored ones and the ones :mod:`verify.bounds_check`
    re-derives itself (interval, CROWN, and the steps of ``proof``), layer by layer. Sound whatever the
    certificate says; equal to the stored bounds where the proof supports them. Stored bounds that
    exclude sampled points of the box are refused at once (:class:`CertificateError`)."""
    _bounds_contain_samples(net, box, lower, upper)
    return confirmed_bounds(net, box, tuple(lower), tuple(upper), proof)


# ---------------------------------------------------------------------------------------------------
# SDP section
# ---------------------------------------------------------------------------------------------------
# The SDP relaxation (verify.relax.sdp_model) in scaled coordinates v = [1; xh; zh]: free inputs
# x = centre + radius * xh, unstable neurons z = (u / 2) (1 + zh). For multipliers mu >= 0 (box
# rows P_kk <= 1), lam >= 0 (z >= s), nu (z (z - s) = 0) and gamma, with M the Lagrangian's matrix,
# every P of the relaxation gives  margin = <M, P> + gamma - sum(mu) + (slacks >= 0)  and
# <M, P> >= (1 + N) min(0, lambda_min(S)), S the Schur complement of the (diagonal) input block.
# This checker rebuilds M from the network, the box and the stored bounds with its own code and
# bounds lambda_min(S) from below by a dense eigensolver minus a rounding allowance.


@dataclass(frozen=True, eq=False)
class SDPCertificate:
    """Dual multipliers of the scaled SDP relaxation for one margin row ``c^T y + d``.

    The variable order is fixed by the data: free inputs are those with a positive box radius (in
    index order); unstable neurons are those with ``lower < 0 < upper`` in ``hidden_lower/upper``,
    layer by layer, in index order (see :mod:`verify.relax.sdp_model`).

    Attributes:
        c: ``(n_out,)``; d: scalar offset.
        hidden_lower, hidden_upper: pre-activation bounds of every hidden layer used by the relaxation.
        mu_x ``(n0,)``, mu_z ``(N,)``, lam ``(N,)``, nu ``(N,)``, gamma: the multipliers.
        claimed: the bound the solver computed (advisory; the checker recomputes it).
        backend, status: which solver produced it and how it ended.
        kappa: ``(N,) >= 0`` multipliers of the triangle cuts ``z <= u (s - l) / (u - l)``, or empty.
        bounds_proof: how ``hidden_lower/upper`` were made and what the checker needs to re-derive them
            (see :func:`usable_bounds`).
        message: why the solver stopped, in words (advisory).
        primal: the solver's primal objective when nearly feasible (advisory: the SDP optimum lies between
            the checked bound and it, up to the primal infeasibility; NaN when unknown).
    """

    c: np.ndarray
    d: float
    hidden_lower: tuple[np.ndarray, ...]
    hidden_upper: tuple[np.ndarray, ...]
    mu_x: np.ndarray
    mu_z: np.ndarray
    lam: np.ndarray
    nu: np.ndarray
    gamma: float
    claimed: float
    backend: str = "dual"
    status: SolverStatus = SolverStatus.OPTIMAL
    kappa: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bounds_proof: BoundsProof = field(default_factory=BoundsProof)
    message: str = ""
    primal: float = float("nan")


def check_sdp_certificate(net: Network, box: InputBox, c_row: np.ndarray, d_row: float, cert: SDPCertificate) -> float:
    """Sound lower bound on ``c_row^T f(x) + d_row`` over ``box`` from an SDP certificate.

    Returns ``-inf`` for non-finite multipliers or an input multiplier that is 0 where it is needed;
    raises :class:`CertificateError` when the row, shapes or bounds do not fit (bounds must contain the
    network's pre-activations at the box centre and at a few sampled points of the box). To check many
    rows of one input, build one :class:`SDPChecker` and call :meth:`SDPChecker.check` per row.
    """
    return SDPChecker(net, box, cert.hidden_lower, cert.hidden_upper, cert.bounds_proof).check(c_row, d_row, cert)


class SDPChecker:
    """The SDP checker for one network, input box and stored pre-activation bounds: the bounds are confirmed
    and the relaxation's rows (with their rounding errors) rebuilt from the network once, then
    :meth:`check` evaluates any certificate made with these bounds. Independent of the solver's code."""

    def __init__(self, net: Network, box: InputBox, lower, upper, proof: BoundsProof) -> None:  # type: ignore[no-untyped-def]
        if box.dim != net.in_dim:
            raise CertificateError(f"box has {box.dim} inputs; network has {net.in_dim}")
        lower, upper = tuple(np.asarray(a) for a in lower), tuple(np.asarray(a) for a in upper)
        if len(lower) != len(net.layers) - 1 or len(upper) != len(lower):
            raise CertificateError(f"certificate has bounds for {len(lower)} hidden layers, network has {len(net.layers) - 1}")
        self.net, self.box, self.stored, self.proof = net, box, (lower, upper), proof
        lower, upper = usable_bounds(net, box, lower, upper, proof)
        self.upper = upper
        self.unstable = [np.flatnonzero((np.asarray(l) < 0) & (np.asarray(u) > 0)) for l, u in zip(lower, upper)]
        self.n = int(sum(k.size for k in self.unstable))
        self.free = np.flatnonzero(box.upper - box.lower > 0)
        self.n0 = int(self.free.size)
        self.rows, self.errs, self.out, self.out_err = _sdp_rows(net, box, lower, upper, self.unstable, self.free)

    def fits(self, cert: SDPCertificate) -> bool:
        """Whether ``cert`` was made with this checker's stored bounds (and the same proof object)."""
        lower, upper = self.stored
        return (cert.bounds_proof is self.proof and len(cert.hidden_lower) == len(lower)
                and all(np.array_equal(a, b) for a, b in zip(cert.hidden_lower, lower))
                and all(np.array_equal(a, b) for a, b in zip(cert.hidden_upper, upper)))

    def check(self, c_row: np.ndarray, d_row: float, cert: SDPCertificate) -> float:
        """Sound lower bound on ``c_row^T f(x) + d_row`` over the box from ``cert`` (see :func:`check_sdp_certificate`)."""
        net, box, n, n0 = self.net, self.box, self.n, self.n0
        c = np.asarray(c_row, dtype=np.float64).ravel()
        d = float(d_row)
        if c.shape != (net.out_dim,):
            raise CertificateError(f"margin row has {c.size} entries; network has {net.out_dim} outputs")
        if not (np.array_equal(np.asarray(cert.c, dtype=np.float64).ravel(), c) and float(cert.d) == d):
            raise CertificateError("the SDP certificate was made for a different margin row")
        if not self.fits(cert):
            raise CertificateError("the SDP certificate was made with other pre-activation bounds than this checker's")
        mu_x, mu_z, lam, nu = (np.asarray(a, dtype=np.float64).ravel() for a in (cert.mu_x, cert.mu_z, cert.lam, cert.nu))
        if mu_x.shape != (n0,) or mu_z.shape != (n,) or lam.shape != (n,) or nu.shape != (n,):
            raise CertificateError(f"SDP multipliers do not fit {n0} free inputs and {n} unstable neurons")
        kappa = np.asarray(cert.kappa, dtype=np.float64).ravel()
        if kappa.size not in (0, n):
            raise CertificateError(f"{kappa.size} triangle multipliers for {n} unstable neurons")
        gamma = float(cert.gamma)
        if not (all(np.all(np.isfinite(a)) for a in (mu_x, mu_z, lam, nu, kappa)) and np.isfinite(gamma)):
            return -np.inf
        mu_x, mu_z, lam, kappa = np.maximum(mu_x, 0.0), np.maximum(mu_z, 0.0), np.maximum(lam, 0.0), np.maximum(kappa, 0.0)
        (g, tau), (g_err, tau_err) = self.rows, self.errs
        o = c @ self.out
        o[0] += d
        o_err = np.abs(c) @ self.out_err + (c.size + 2) * 2.0 * _UNIT * (np.abs(c) @ np.abs(self.out) + abs(d))
        mat, mag = _sdp_matrix(o, g, mu_x, mu_z, lam, nu, gamma, n0)
        if kappa.size:  # triangle cuts tau_j^T v >= 0 enter as - kappa_j sym(e_0 tau_j^T)
            first = 0.5 * (kappa @ tau)
            mat[0, :] -= first
            mat[:, 0] -= first
            mag[0, :] += 0.5 * (kappa @ np.abs(tau))
            mag[:, 0] += 0.5 * (kappa @ np.abs(tau))
        # the rows above are float64 images of the network's exact affine maps; for a real input the
        # exact rows' constraints hold, so the computed ones hold up to these errors (|v_k|, |P_kl| <= 1)
        slack = float(o_err.sum() + (lam + 2.0 * np.abs(nu)) @ g_err.sum(axis=1) + 4.0 * _UNIT * (mu_x.sum() + mu_z.sum()))
        if kappa.size:
            slack += float(kappa @ tau_err.sum(axis=1))
        # the relaxation describes the network in exact arithmetic; the float64 network differs by at most this
        forward = float(forward_allowance(net, box, self.upper, c[None])[0])
        return _sdp_value(mat, mag, mu_x, mu_z, gamma, n0, n) - slack - forward


def _sdp_rows(net, box, lower, upper, unstable, free):  # type: ignore[no-untyped-def]
    """Constraint rows g_j (g_j^T v = z_j - s_j) and triangle rows tau_j (tau_j^T v = u (s - l) / (u - l) - z),
    each of length 1 + n0 + N, with entrywise error bounds; and the logits as rows over v with theirs."""
    n0, n = free.size, sum(k.size for k in unstable)
    dim = 1 + n0 + n
    cur = np.zeros((net.in_dim, dim))  # post-activations of the previous layer as rows over v
    cur[:, 0] = box.center
    cur[free, 1 + np.arange(n0)] = 0.5 * (box.upper - box.lower)[free]
    err = 2.0 * _UNIT * np.abs(cur)  # entrywise bound on |computed - exact|
    rows, taus, g_errs, tau_errs, pos = [], [], [], [], 1 + n0
    for i, layer in enumerate(net.layers[:-1]):
        pre, pre_err = _affine_with_error(layer.weight, layer.bias, cur, err)
        nxt = np.zeros_like(pre)
        nxt_err = np.zeros_like(pre)
        act = np.flatnonzero(np.asarray(lower[i]) >= 0)
        nxt[act], nxt_err[act] = pre[act], pre_err[act]
        for j in unstable[i]:
            half = 0.5 * float(upper[i][j])
            row = -pre[j].copy()
            row[0] += half
            row[pos] += half
            rows.append(row)
            g_errs.append(pre_err[j] + 2.0 * _UNIT * np.abs(row))
            lo, up = float(lower[i][j]), float(upper[i][j])
            tau = (up / (up - lo)) * pre[j]
            tau[0] -= up * lo / (up - lo) + half
            tau[pos] -= half
            taus.append(tau)
            tau_errs.append((up / (up - lo)) * pre_err[j] + 8.0 * _UNIT * (np.abs(tau) + np.abs(pre[j]) + abs(lo) + half))
            nxt[j, 0], nxt[j, pos] = half, half
            pos += 1
        cur, err = nxt, nxt_err
    last = net.layers[-1]
    out, out_err = _affine_with_error(last.weight, last.bias, cur, err)
    empty = np.zeros((0, dim))
    stack = lambda a: np.array(a) if a else empty  # noqa: E731
    return (stack(rows), stack(taus)), (stack(g_errs), stack(tau_errs)), out, out_err


def _affine_with_error(w, b, cur, err):  # type: ignore[no-untyped-def]
    """``W cur`` with ``b`` added to column 0, and an entrywise bound on its error given ``err`` on ``cur``."""
    pre = np.asarray(w @ cur)
    pre[:, 0] += b
    aw = abs(w)
    k = w.shape[1] + 2
    pre_err = np.asarray(aw @ err) + 2.0 * k * _UNIT * np.asarray(aw @ np.abs(cur))
    pre_err[:, 0] += 2.0 * k * _UNIT * np.abs(b)
    return pre, pre_err


def _sdp_matrix(o, g, mu_x, mu_z, lam, nu, gamma, n0):  # type: ignore[no-untyped-def]
    """The Lagrangian matrix M (dense, order [1, x, z]) and an entrywise bound on the magnitudes summed."""
    dim = o.size
    n = g.shape[0]
    zpos = 1 + n0 + np.arange(n)
    first = 0.5 * (o + (nu - lam) @ g)
    mag_first = 0.5 * (np.abs(o) + (np.abs(nu) + lam) @ np.abs(g))
    mat = np.zeros((dim, dim))
    mag = np.zeros((dim, dim))
    mat[0, :] += first
    mat[:, 0] += first
    mag[0, :] += mag_first
    mag[:, 0] += mag_first
    vg = 0.5 * nu[:, None] * g
    mat[zpos, :] += vg
    mat[:, zpos] += vg.T
    mag[zpos, :] += np.abs(vg)
    mag[:, zpos] += np.abs(vg).T
    mat[0, 0] -= gamma
    mag[0, 0] += abs(gamma)
    diag = np.concatenate([mu_x, mu_z])
    mat[np.arange(1, dim), np.arange(1, dim)] += diag
    mag[np.arange(1, dim), np.arange(1, dim)] += diag
    return mat, mag


def _sdp_value(mat, mag, mu_x, mu_z, gamma, n0, n) -> float:  # type: ignore[no-untyped-def]
    dim = mat.shape[0]
    xs = 1 + np.arange(n0)
    ys = np.concatenate([[0], 1 + n0 + np.arange(n)])
    xblock = mat[np.ix_(xs, xs)]
    if np.any(xblock - np.diag(np.diag(xblock)) != 0):
        raise CertificateError("the input block of the SDP dual matrix is not diagonal")
    cross = mat[np.ix_(ys, xs)]
    used = np.any(cross != 0, axis=0)
    if np.any(mu_x[used] <= 0):
        return -np.inf
    scaled = cross[:, used] / np.sqrt(mu_x[used])
    s = mat[np.ix_(ys, ys)] - scaled @ scaled.T
    s = 0.5 * (s + s.T)
    # rounding: M's entries are sums of up to 2N + 3 terms; S adds an n0-term dot product per entry
    abs_scaled = np.abs(cross[:, used]) / np.sqrt(mu_x[used])
    err_m = (2 * n + 4) * _UNIT * 2 * np.linalg.norm(mag[np.ix_(ys, ys)])
    err_s = (n0 + 4) * _UNIT * 2 * np.linalg.norm(abs_scaled @ abs_scaled.T)
    err_m += (2 * n + 4) * _UNIT * 2 * np.linalg.norm(mag[np.ix_(ys, xs)][:, used] / np.sqrt(mu_x[used])) * np.linalg.norm(abs_scaled) * 2
    if not np.all(np.isfinite(s)):
        return -np.inf
    lam_min = _eigvalsh_min(s)
    if not np.isfinite(lam_min):  # never let min(0.0, nan) == 0.0 pass a matrix as PSD
        return -np.inf
    err_eig = eigenvalue_allowance(s)
    lam_min -= err_m + err_s + err_eig
    total = gamma - float(mu_x.sum()) - float(mu_z.sum())
    err_sum = 4.0 * dim * _UNIT * (abs(gamma) + float(mu_x.sum()) + float(mu_z.sum()))
    value = total + (n + 1) * min(0.0, lam_min) - err_sum
    return float(value) if np.isfinite(value) else -np.inf


def _bounds_contain_samples(net: Network, box: InputBox, lower, upper) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    pts = np.vstack([box.center, rng.uniform(box.lower, box.upper, size=(8, box.dim))])
    h = pts
    for i, (l, u) in enumerate(zip(lower, upper)):
        l, u = np.asarray(l, dtype=np.float64), np.asarray(u, dtype=np.float64)
        if l.shape != (net.layers[i].out_dim,) or u.shape != l.shape:
            raise CertificateError(f"pre-activation bounds of layer {i} have the wrong shape")
        if not (np.all(np.isfinite(l)) and np.all(np.isfinite(u)) and np.all(l <= u)):
            raise CertificateError(f"pre-activation bounds of layer {i} are not finite intervals")
        h = net.layers[i].apply(h)
        tol = 1e-9 * (1.0 + np.abs(h))
        if np.any(h < l - tol) or np.any(h > u + tol):
            raise CertificateError(f"pre-activation bounds of layer {i} exclude points of the box: not sound")
        h = np.maximum(h, 0.0)


def _eigvalsh_min(s: np.ndarray) -> float:
    """Smallest eigenvalue by LAPACK (numpy), single-threaded (OpenBLAS threads are very slow here)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return float(np.linalg.eigvalsh(s)[0])
    with threadpool_limits(1):
        return float(np.linalg.eigvalsh(s)[0])
