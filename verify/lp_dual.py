"""The triangle LP's Lagrangian at given multipliers, minimized in closed form (numpy only).

The triangle LP (see :mod:`verify.relax.lp`) has variables ``x`` (input), and per hidden layer ``i``
the pre-activation ``s_i`` and post-activation ``z_i``. Every variable keeps a *box*:
``x`` in the input box, ``s_i`` in ``[l_i, u_i]``, ``z_i`` in ``[relu(l_i), relu(u_i)]``. The other
constraints are Lagrange-relaxed with the multipliers:

* ``lam_i`` (free): ``s_i - W_i z_{i-1} - b_i = 0`` (``z_{-1} = x``),
* ``alpha_i`` (free, active neurons ``l >= 0``): ``z_i - s_i = 0``,
* ``beta_i`` (``>= 0``, unstable neurons): ``s_i - z_i <= 0``,
* ``gamma_i`` (``>= 0``, unstable neurons): ``u (z - s + l) - l z <= 0`` (the triangle's upper side).

For *any* multipliers the Lagrangian minimized over the boxes is a lower bound on the LP, hence on
the margin ``c^T f(x) + d`` over the input box, provided the pre-activation bounds are sound. The
multipliers are projected onto their domains (wrong signs / wrong neurons are zeroed: the bound only
weakens), the minimum is evaluated in closed form, and a float64 rounding allowance proportional to
the magnitudes of all summed terms is subtracted, plus a forward-error allowance so the bound also
holds for the network evaluated in float64 (:mod:`verify.rounding`). It uses only numpy and the
:class:`Network`, not the code that built or solved the LP. The certificate checker
(:mod:`verify.certificate`) and the bounds checker (:mod:`verify.bounds_check`, for LP-tightened
bounds) call it with bounds they have confirmed themselves.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp

from verify.network import Network
from verify.rounding import SAFETY, forward_allowance, gamma as gamma_k
from verify.spec import InputBox

Arrays = Sequence[np.ndarray]


class CertificateError(ValueError):
    """A certificate (multipliers, bounds, proofs) does not fit the network / box / margin it is checked against."""


def lagrangian_value(
    net: Network, box: InputBox, C: np.ndarray, d: np.ndarray, lower: Arrays, upper: Arrays,
    lam: Arrays, alpha: Arrays, beta: Arrays, gamma: Arrays,
) -> np.ndarray:
    """Rounding-safe lower bounds ``(m,)`` on ``C f(x) + d`` over ``box`` from the multipliers.

    Args:
        C, d: margin rows ``(m, n_out)`` and offsets ``(m,)``.
        lower, upper: *sound* pre-activation bounds of every hidden layer, each ``(n_i,)`` (not
            checked here; see :func:`verify.certificate.lagrangian_bounds`).
        lam, alpha, beta, gamma: one ``(m, n_i)`` array per hidden layer (see the module doc).

    Returns ``-inf`` for rows whose value is not finite or when a multiplier is not finite; raises
    :class:`CertificateError` when shapes do not fit.
    """
    n_hidden = len(net.layers) - 1
    check_shapes(net, box, C, lower, upper, (lam, alpha, beta, gamma))
    m = C.shape[0]
    terms: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []  # (coef, mag, lo, hi)
    const = C @ net.layers[-1].bias + d
    const_mag = np.abs(C) @ np.abs(net.layers[-1].bias) + np.abs(d)
    nxt, nxt_mag = _rmatvec(net.layers[-1].weight, C), _rmatvec(abs(net.layers[-1].weight), np.abs(C))
    for i in range(n_hidden - 1, -1, -1):
        l, u = lower[i], upper[i]
        act, unst = l >= 0, (l < 0) & (u > 0)
        lm = lam[i]
        al = np.where(act, alpha[i], 0.0)
        be = np.where(unst, np.maximum(beta[i], 0.0), 0.0)
        ga = np.where(unst, np.maximum(gamma[i], 0.0), 0.0)
        r_z = al - be + ga * (u - l) + nxt
        mag_z = np.abs(al) + be + ga * np.abs(u - l) + nxt_mag
        terms.append((r_z, mag_z, np.maximum(l, 0.0), np.maximum(u, 0.0)))
        r_s = lm - al + be - ga * u
        terms.append((r_s, np.abs(lm) + np.abs(al) + be + ga * np.abs(u), l, u))
        b = net.layers[i].bias
        const = const - lm @ b + ga @ (u * l)
        const_mag = const_mag + np.abs(lm) @ np.abs(b) + ga @ np.abs(u * l)
        nxt = -_rmatvec(net.layers[i].weight, lm)
        nxt_mag = _rmatvec(abs(net.layers[i].weight), np.abs(lm))
    terms.append((nxt, nxt_mag, box.lower, box.upper))
    value = const.copy()
    abs_sum = np.abs(const) + const_mag
    coef_err = np.zeros(m)
    n_terms = 0
    for coef, mag, lo, hi in terms:
        piece = np.minimum(coef * lo, coef * hi)
        value = value + piece.sum(axis=1)
        abs_sum = abs_sum + np.abs(piece).sum(axis=1)
        coef_err = coef_err + mag @ np.maximum(np.abs(lo), np.abs(hi))
        n_terms += lo.size
    fan = max(max(layer.in_dim, layer.out_dim) for layer in net.layers) + 8
    slack = SAFETY * (gamma_k(fan) * coef_err + gamma_k(n_terms + 4 * n_hidden + 8) * abs_sum)
    out = value - slack - forward_allowance(net, box, upper, C)
    finite = np.all([np.all(np.isfinite(a)) for g in (lam, alpha, beta, gamma) for a in g])
    return np.where(np.isfinite(out) & finite, out, -np.inf)


def _rmatvec(w: np.ndarray | sp.spmatrix, rows: np.ndarray) -> np.ndarray:
    """``rows @ w`` for ``rows`` of shape ``(m, out)`` and ``w`` of shape ``(out, in)``; dense ``(m, in)``."""
    return np.asarray((w.T @ rows.T).T) if sp.issparse(w) else rows @ w


def check_shapes(net: Network, box: InputBox, C: np.ndarray, lower: Arrays, upper: Arrays, groups: tuple) -> None:
    """Raise :class:`CertificateError` unless box, rows, bounds and multiplier groups fit ``net``."""
    n_hidden = len(net.layers) - 1
    if box.dim != net.in_dim:
        raise CertificateError(f"box has {box.dim} inputs, network has {net.in_dim}")
    if C.ndim != 2 or C.shape[1] != net.out_dim:
        raise CertificateError(f"margin row has {C.shape[-1]} entries, network has {net.out_dim} outputs")
    if len(lower) != n_hidden or len(upper) != n_hidden:
        raise CertificateError(f"certificate has bounds for {len(lower)} hidden layers, network has {n_hidden}")
    for g in groups:
        if len(g) != n_hidden:
            raise CertificateError("certificate multiplier lists do not match the number of hidden layers")
        for i, a in enumerate(g):
            if a.shape != (C.shape[0], net.layers[i].out_dim):
                raise CertificateError(f"multipliers of hidden layer {i} have shape {a.shape}")
