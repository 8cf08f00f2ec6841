"""Floating-point error allowances of every sound bound: the analysis in one place.

Every bound we report is computed in float64 and then lowered by an allowance that covers the
rounding errors of its own computation, so that it holds for the real numbers it is about. The
model and the results used are the classical ones of N. J. Higham, *Accuracy and Stability of
Numerical Algorithms*, 2nd ed., SIAM 2002 (cited as [H] below).

Model ([H] 2.2). IEEE float64, round to nearest: ``fl(a op b) = (a op b)(1 + d)`` with
``|d| <= u = 2^-53`` (:data:`UNIT`; for float32 ``u = 2^-24``), no overflow or underflow (a result
that overflows is NaN or inf, and every checker turns a non-finite value into "not proved").

Chains of roundings ([H] Lemma 3.1). ``prod_{i<=k} (1 + d_i)^{+-1} = 1 + t`` with
``|t| <= gamma_k = k u / (1 - k u)`` (:func:`gamma`) when ``k u < 1``.

Sums and dot products ([H] 3.1, eq. (3.4)-(3.5)). For a sum or dot product of ``n`` terms, in any
order, ``|fl(x^T y) - x^T y| <= gamma_n |x|^T |y|``; entrywise the same for matrix products
``|fl(AB) - AB| <= gamma_n |A| |B|`` ([H] 3.5), ``n`` the inner dimension.

Longer computations. A value that is a sum of products, each term of which passed through at most
``K`` roundings (every dot product it went through counts with its length, every elementwise
operation with one), differs from the exact value by at most ``gamma_K S``, ``S`` the same
computation carried out on the absolute values of all terms. That is how every allowance here is
built: ``K`` counts the chain (``in_dim + widths + a few per layer``), ``S`` comes from magnitudes.

Safety factor. Every allowance is doubled (:data:`SAFETY`): the derivations bound each piece
separately (lower and upper bounds, intermediate bounds carried into later layers, relaxation
slopes such as ``u / (u - l)`` that are themselves rounded) and the factor 2 covers their sum. The
constants ``2 k u``, ``4 k u``, ``8 u`` and ``32 n u`` that the SDP checker writes out are this rule:
``k`` roundings, doubled; ``4`` and ``8`` count the two to four operations of one constraint entry.

Eigenvalues ([H] 2nd ed. 15; also J. Demmel, *Applied Numerical Linear Algebra*, 5.2). A symmetric
eigensolver that is backward stable (LAPACK ``syevd``/``syev``) returns eigenvalues of ``S + E`` with
``||E||_2 <= p(n) u ||S||_2``, so by Weyl's inequality each computed eigenvalue is within
``p(n) u ||S||_2`` of an exact one. We take ``p(n) = 16 n`` (a generous version of the LAPACK error
bound), double it and bound ``||S||_2 <= ||S||_F``: :func:`eigenvalue_allowance`.

Forward error of the network ([H] 3.5 applied layer by layer): :func:`forward_allowance`, so that a
bound on the exact network also holds for the network as float64 evaluates it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from verify.network import Network
    from verify.spec import InputBox

#: unit roundoff of float64
UNIT = 2.0**-53
#: factor applied on top of every allowance (see the module doc)
SAFETY = 2.0


def gamma(k: int, unit: float = UNIT) -> float:
    """``gamma_k = k u / (1 - k u)``: relative error bound of ``k`` chained roundings ([H] Lemma 3.1)."""
    return k * unit / (1.0 - k * unit)


def chain_gamma(dims: "list[int] | tuple[int, ...]", n_layers: int, unit: float = UNIT) -> float:
    """``gamma_K`` for a layer-by-layer computation: ``K = sum(dims) + 4 n_layers`` (each layer's dot
    products of length ``dims[i]`` plus a few elementwise operations per layer)."""
    return gamma(int(sum(dims)) + 4 * n_layers, unit)


def eigenvalue_allowance(s: np.ndarray) -> float:
    """Bound on ``|computed - exact|`` for every eigenvalue of the symmetric matrix ``s`` by LAPACK:
    ``SAFETY * 16 n u ||s||_F`` (see the module doc)."""
    return SAFETY * 16.0 * s.shape[0] * UNIT * float(np.linalg.norm(s))


def forward_allowance(net: "Network", box: "InputBox", upper: tuple[np.ndarray, ...], C: np.ndarray) -> np.ndarray:
    """Bound ``(m,)`` on ``|C (f_float64(x) - f_exact(x))|`` over the box, so bounds hold for the float64 network.

    Layer ``i`` adds at most ``gamma_{n+2} (|W_i| |z| + |b_i|)`` ([H] 3.5; ``n`` its input width) and
    earlier errors pass through ``|W_i|`` (ReLU is 1-Lipschitz); ``|z_i| <= relu(u_i)`` with ``upper``
    the sound upper pre-activation bounds of the hidden layers.
    """
    zmax = np.maximum(np.abs(box.lower), np.abs(box.upper))
    err = np.zeros_like(zmax)
    for i, layer in enumerate(net.layers):
        g = gamma(layer.in_dim + 2)
        w_abs = abs(layer.weight)
        err = np.asarray(w_abs @ err).ravel() + g * (np.asarray(w_abs @ zmax).ravel() + np.abs(layer.bias))
        if i < len(net.layers) - 1:
            zmax = np.maximum(upper[i], 0.0)
    return SAFETY * (np.abs(C) @ err)
