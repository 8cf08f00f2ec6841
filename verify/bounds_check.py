"""Independent (numpy) re-derivation of pre-activation bounds for the certificate checkers.

A certificate carries the pre-activation bounds its relaxation was built on. The checkers do not take
them on trust: :func:`confirmed_bounds` derives its own bounds layer by layer, written here in numpy
independently of ``verify.bounds``:

* interval arithmetic from the confirmed bounds of the previous layer;
* a CROWN back-substitution (:func:`backsub_lower` with CROWN's lower slopes);
* the tightening steps of the certificate's :class:`~verify.bounds_proof.BoundsProof`, replayed on
  the checker's own confirmed earlier layers: alpha-CROWN slopes (back-substitution with the stored
  slopes clipped to ``[0, 1]``; any such slope is sound) and LP-layerwise multipliers (the
  Lagrangian of each tightening LP, :func:`verify.lp_dual.lagrangian_value`; any multipliers are sound).

Each derived bound is rounding-safe (:mod:`verify.rounding`). The result is the *hull* of the given and
the derived bounds: the derived bounds are sound by induction (each layer uses the already-confirmed
earlier layers), so the hull is sound whatever the certificate says; given bounds that the proof
supports come back unchanged, tighter (unproved) ones are widened, which can only weaken the bound
checked on top of them.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from verify.bounds_proof import BoundsProof, LPProof, SlopeProof
from verify.lp_dual import CertificateError, lagrangian_value
from verify.network import Network
from verify.rounding import SAFETY, chain_gamma
from verify.spec import InputBox

Arrays = Sequence[np.ndarray]
#: ``refine(k, lows, highs, l_k, u_k) -> (l_k, u_k)``: more tightening of hidden layer ``k`` given the confirmed
#: bounds ``lows``/``highs`` of layers ``< k`` (e.g. branch-and-bound lemmas, checked by their own checker)
Refine = Callable[[int, list, list, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def backsub_lower(
    net: Network,
    box: InputBox,
    A: np.ndarray,
    c: np.ndarray,
    lower: Arrays,
    upper: Arrays,
    slopes: Sequence[np.ndarray | None] | None = None,
) -> np.ndarray:
    """Rounding-safe lower bound ``(R,)`` of ``A z_k + c`` over ``box`` by back-substitution (numpy).

    ``z_k = W_k relu(z_{k-1}) + b_k`` is the pre-activation of layer ``k`` (``z_{-1}`` is the input
    ``x``, not relaxed), with ``k = len(lower)``: for the logits pass every hidden layer's bounds, for
    hidden layer ``k`` the bounds of layers ``0..k-1``.

    Args:
        net: the network; only its layers ``0..k`` are read.
        box: the input box.
        A: ``(R, n_k)`` spec rows on ``z_k``; c: ``(R,)`` offsets.
        lower, upper: sound pre-activation bounds ``(n_j,)`` of every layer ``j < k`` (e.g. the
            checker's confirmed ones, or split ones: a neuron fixed active has ``l >= 0``, fixed
            inactive ``u <= 0``). Each unstable ReLU (``l < 0 < u``) is relaxed by the upper line
            ``u (s - l) / (u - l)`` and a lower line ``alpha s``; stable ones are exact.
        slopes: optional lower slopes ``alpha`` per layer ``j < k``, each ``(R, n_j)`` or None; they are
            clipped to ``[0, 1]`` (any such slope is sound) and read on unstable neurons only. Default
            (and None entries): CROWN's ``alpha = 1 if u > -l else 0``.

    Returns:
        ``(R,)`` lower bounds: for every ``x`` in the box, ``A z_k(x) + c >= result`` in exact
        arithmetic, the float64 rounding of this computation already subtracted (:mod:`verify.rounding`).
        ``-inf`` where the value is not finite.
    """
    k = len(lower)
    A = np.atleast_2d(np.asarray(A, dtype=np.float64))
    c = np.asarray(c, dtype=np.float64).ravel()
    if len(upper) != k or k >= len(net.layers) or A.shape[1] != net.layers[k].out_dim or c.shape != (A.shape[0],):
        raise CertificateError(f"back-substitution spec of shape {A.shape} / {c.shape} does not fit layer {k} "
                               f"of {net.describe()} with bounds for {k} layers")
    slopes = list(slopes) if slopes is not None else [None] * k
    if len(slopes) != k:
        raise CertificateError(f"{len(slopes)} slope arrays for {k} earlier layers")
    a, const = A, c.copy()
    a_mag, const_mag = np.abs(A), np.abs(c)  # the same computation on absolute values: the rounding allowance
    for j in range(k, 0, -1):
        w, b = net.layers[j].dense_weight(), net.layers[j].bias
        const, const_mag = const + a @ b, const_mag + a_mag @ np.abs(b)
        a, a_mag = a @ w, a_mag @ np.abs(w)  # now on relu(z_{j-1})
        lo_slope, up_slope, up_off = _relaxation(lower[j - 1], upper[j - 1], slopes[j - 1], a.shape[0])
        neg = np.minimum(a, 0.0)
        const, const_mag = const + neg @ up_off, const_mag + a_mag @ np.abs(up_off)
        a = np.maximum(a, 0.0) * lo_slope + neg * up_slope
        a_mag = a_mag * np.maximum(lo_slope, up_slope)
    w, b = net.layers[0].dense_weight(), net.layers[0].bias
    const, const_mag = const + a @ b, const_mag + a_mag @ np.abs(b)
    a, a_mag = a @ w, a_mag @ np.abs(w)
    value = const + a @ box.center - np.abs(a) @ box.radius
    total = const_mag + a_mag @ np.maximum(np.abs(box.lower), np.abs(box.upper))
    dims = [net.in_dim, *(layer.out_dim for layer in net.layers[: k + 1])]
    out = value - SAFETY * chain_gamma(dims, k + 2) * total
    return np.where(np.isfinite(out), out, -np.inf)


def _relaxation(l: np.ndarray, u: np.ndarray, alpha: np.ndarray | None, rows: int):  # type: ignore[no-untyped-def]
    """Lower slopes ``(rows, n)`` (or ``(n,)``), upper slopes and upper offsets ``(n,)`` of ReLU on ``[l, u]``."""
    l, u = np.asarray(l, dtype=np.float64), np.asarray(u, dtype=np.float64)
    unstable = (l < 0) & (u > 0)
    active = (l >= 0).astype(np.float64)
    up_slope = np.where(unstable, u / np.where(unstable, u - l, 1.0), active)
    up_off = np.where(unstable, -up_slope * l, 0.0)
    crown = np.where(unstable, (u > -l).astype(np.float64), active)
    if alpha is None:
        return crown, up_slope, up_off
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.shape != (rows, l.size):
        raise CertificateError(f"lower slopes of shape {alpha.shape}, expected ({rows}, {l.size})")
    clipped = np.clip(np.nan_to_num(alpha, nan=0.0), 0.0, 1.0)
    return np.where(unstable, clipped, crown), up_slope, up_off


def confirmed_bounds(
    net: Network, box: InputBox, lower: Arrays, upper: Arrays, proof: BoundsProof | None = None,
    refine: Refine | None = None,
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Hull of the given hidden-layer bounds and independently derived sound ones; each ``(n_i,)``.

    The derived bounds of layer ``k`` are the best of interval arithmetic, CROWN back-substitution and
    the steps of ``proof`` for layer ``k``, all on the confirmed bounds of layers ``< k``; ``refine``
    (optional) then tightens them further with checks of its own on the same confirmed layers.
    """
    n_hidden = len(net.layers) - 1
    if len(lower) != n_hidden or len(upper) != n_hidden:
        raise CertificateError(f"bounds for {len(lower)} hidden layers, network has {n_hidden}")
    proof = proof or BoundsProof()
    gamma = chain_gamma([net.in_dim, *net.hidden_dims], len(net.layers))
    out_l: list[np.ndarray] = []
    out_u: list[np.ndarray] = []
    # CROWN is not monotone in the earlier layers' bounds (its lower slopes switch with them): on bounds
    # tightened by the proof's steps it can come out looser than on plain CROWN bounds, which is what a
    # tightening method starts from and keeps where its own steps do not beat it (measured: a neuron of
    # mnist-net_256x6 at u = -0.03 from CROWN, +0.05 from CROWN on alpha-CROWN's earlier layers). So when
    # there are steps, a plain CROWN chain runs alongside and every layer takes the better of both.
    crown_l: list[np.ndarray] = []
    crown_u: list[np.ndarray] = []
    z_lo, z_hi = box.lower, box.upper
    c_lo, c_hi = box.lower, box.upper
    mag = np.maximum(np.abs(box.lower), np.abs(box.upper))
    for k in range(n_hidden):
        w, b = net.layers[k].dense_weight(), net.layers[k].bias
        mag = np.abs(w) @ mag + np.abs(b)
        slack = SAFETY * (k + 2) * gamma * mag
        own_l, own_u = _interval(w, b, z_lo, z_hi, slack)
        rows = np.arange(w.shape[0])
        if k > 0:
            own_l, own_u = _tighten(own_l, own_u, rows, _backsub_rows(net, box, rows, out_l, out_u, None))
        if proof.steps:
            cl, cu = _interval(w, b, c_lo, c_hi, slack)
            if k > 0:
                cl, cu = _tighten(cl, cu, rows, _backsub_rows(net, box, rows, crown_l, crown_u, None))
            crown_l.append(cl)
            crown_u.append(cu)
            c_lo, c_hi = np.maximum(cl, 0.0), np.maximum(cu, 0.0)
            own_l, own_u = np.maximum(own_l, cl), np.minimum(own_u, cu)
        for step in proof.for_layer(k):
            own_l, own_u = _tighten(own_l, own_u, step.rows, _replay(net, box, step, out_l, out_u))
        if refine is not None:
            own_l, own_u = refine(k, out_l, out_u, own_l, own_u)
        given_l, given_u = np.asarray(lower[k], dtype=np.float64), np.asarray(upper[k], dtype=np.float64)
        if given_l.shape != own_l.shape or given_u.shape != own_u.shape:
            raise CertificateError(f"bounds of hidden layer {k} have shape {given_l.shape}, expected {own_l.shape}")
        lo = np.where(np.isfinite(given_l), np.minimum(given_l, own_l), own_l)
        hi = np.where(np.isfinite(given_u), np.maximum(given_u, own_u), own_u)
        out_l.append(lo)
        out_u.append(hi)
        z_lo, z_hi = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
    return tuple(out_l), tuple(out_u)


def _interval(w: np.ndarray, b: np.ndarray, z_lo: np.ndarray, z_hi: np.ndarray, slack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interval bounds of ``w z + b`` for ``z`` in ``[z_lo, z_hi]``, widened by ``slack``."""
    mid, rad = (z_hi + z_lo) / 2, (z_hi - z_lo) / 2
    return w @ mid + b - np.abs(w) @ rad - slack, w @ mid + b + np.abs(w) @ rad + slack


def _tighten(lo: np.ndarray, hi: np.ndarray, rows: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intersect ``[lo, hi]`` at ``rows`` with ``[vals[:R], -vals[R:]]`` (lower bounds of ``[I; -I]``)."""
    r = rows.size
    lo, hi = lo.copy(), hi.copy()
    lo[rows] = np.maximum(lo[rows], vals[:r])
    hi[rows] = np.minimum(hi[rows], -vals[r:])
    return lo, hi


def _identity_rows(n: int, rows: np.ndarray) -> np.ndarray:
    """``[I_rows; -I_rows]``, shape ``(2R, n)``."""
    eye = np.zeros((rows.size, n))
    eye[np.arange(rows.size), rows] = 1.0
    return np.vstack([eye, -eye])


def _backsub_rows(net, box, rows, lows, highs, slopes) -> np.ndarray:  # type: ignore[no-untyped-def]
    k = len(lows)
    return backsub_lower(net, box, _identity_rows(net.layers[k].out_dim, rows), np.zeros(2 * rows.size),
                         lows, highs, slopes)


def _replay(net: Network, box: InputBox, step: SlopeProof | LPProof, lows: list, highs: list) -> np.ndarray:
    """Lower bounds ``(2R,)`` of ``[I_rows; -I_rows] z_k`` from one proof step, on the confirmed layers ``< k``."""
    k = len(lows)
    rows = np.asarray(step.rows, dtype=np.int64).ravel()
    if rows.size and (rows.min() < 0 or rows.max() >= net.layers[k].out_dim):
        raise CertificateError(f"proof step for hidden layer {k} names neurons outside the layer")
    if isinstance(step, SlopeProof):
        return _backsub_rows(net, box, rows, lows, highs, step.slopes)
    if isinstance(step, LPProof):
        sub = Network(net.layers[: k + 1], net.input_shape, net.domain_lower, net.domain_upper, net.name)
        C = _identity_rows(net.layers[k].out_dim, rows)
        return lagrangian_value(sub, box, C, np.zeros(2 * rows.size), lows, highs, step.lam, step.alpha, step.beta,
                                step.gamma)
    raise CertificateError(f"unknown bounds proof step {type(step).__name__}")
