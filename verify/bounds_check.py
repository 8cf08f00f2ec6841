"""Independent (numpy) confirmation of pre-activation bounds for the certificate checkers.

A certificate carries the pre-activation bounds its relaxation was built on. The checkers do not take
them on trust: :func:`confirmed_bounds` derives its own bounds layer by layer (interval arithmetic
intersected with a CROWN-style back-substitution, written here in numpy independently of
``verify.bounds``) and returns the *hull* of the given and the derived bounds. The hull contains the
derived bounds, which are sound by induction (each layer uses the already-confirmed earlier layers), so
the relaxation built from it is valid whatever the certificate says; bounds that were right come back
unchanged up to rounding, wrong ones are widened (which can only weaken the checked bound).
"""

from __future__ import annotations

import numpy as np

from verify.network import Network
from verify.rounding import SAFETY, chain_gamma
from verify.spec import InputBox



def confirmed_bounds(
    net: Network, box: InputBox, lower: tuple[np.ndarray, ...], upper: tuple[np.ndarray, ...]
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Hull of the given hidden-layer bounds and independently derived sound ones; each ``(n_i,)``."""
    n_hidden = len(net.layers) - 1
    if len(lower) != n_hidden or len(upper) != n_hidden:
        raise ValueError(f"bounds for {len(lower)} hidden layers, network has {n_hidden}")
    weights = [layer.dense_weight() for layer in net.layers[:n_hidden]]
    gamma = _gamma(net)
    out_l: list[np.ndarray] = []
    out_u: list[np.ndarray] = []
    z_lo, z_hi = box.lower, box.upper
    mag = np.maximum(np.abs(box.lower), np.abs(box.upper))
    for k in range(n_hidden):
        w, b = weights[k], net.layers[k].bias
        mag = np.abs(w) @ mag + np.abs(b)
        mid, rad = (z_hi + z_lo) / 2, (z_hi - z_lo) / 2
        ibp_l, ibp_u = w @ mid + b - np.abs(w) @ rad, w @ mid + b + np.abs(w) @ rad
        back_l = _back_substitute(w, b, k, weights, net, out_l, out_u, box)
        back_u = -_back_substitute(-w, -b, k, weights, net, out_l, out_u, box)
        slack = SAFETY * (k + 2) * gamma * mag
        own_l, own_u = np.maximum(ibp_l, back_l) - slack, np.minimum(ibp_u, back_u) + slack
        given_l, given_u = np.asarray(lower[k], dtype=np.float64), np.asarray(upper[k], dtype=np.float64)
        if given_l.shape != own_l.shape or given_u.shape != own_u.shape:
            raise ValueError(f"bounds of hidden layer {k} have shape {given_l.shape}, expected {own_l.shape}")
        lo = np.where(np.isfinite(given_l), np.minimum(given_l, own_l), own_l)
        hi = np.where(np.isfinite(given_u), np.maximum(given_u, own_u), own_u)
        out_l.append(lo)
        out_u.append(hi)
        z_lo, z_hi = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
    return tuple(out_l), tuple(out_u)


def _back_substitute(a: np.ndarray, const: np.ndarray, k: int, weights, net, lows, highs, box) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Lower bound of ``a z_k + const`` over the box, relaxing each earlier ReLU with the confirmed bounds."""
    a, const = a.copy(), const.copy()
    for j in range(k - 1, -1, -1):
        l, u = lows[j], highs[j]
        unstable = (l < 0) & (u > 0)
        active = (l >= 0).astype(np.float64)
        up_slope = np.where(unstable, u / np.where(unstable, u - l, 1.0), active)
        up_off = np.where(unstable, -up_slope * l, 0.0)
        lo_slope = np.where(unstable, (u > -l).astype(np.float64), active)
        pos, neg = np.maximum(a, 0.0), np.minimum(a, 0.0)
        const = const + neg @ up_off
        a = pos * lo_slope + neg * up_slope
        const = const + a @ net.layers[j].bias
        a = a @ weights[j]
    mid, rad = box.center, box.radius
    return a @ mid - np.abs(a) @ rad + const


def _gamma(net: Network) -> float:
    return chain_gamma([net.in_dim, *net.hidden_dims], len(net.layers))
