"""Build the scaled SDP relaxation of Raghunathan, Steinhardt & Liang (2018) from a network and a box.

The problem's data, its variables and its dual bound are described in :mod:`verify.solvers.sdp_problem`
(where the solvers read them); this module turns a network, an input box and pre-activation bounds into
that data: free inputs scaled to ``[-1, 1]``, unstable neurons ``z = h (1 + zh)``, stable neurons removed
(inactive) or substituted by their affine pre-activation (active).
"""

from __future__ import annotations

import logging

import numpy as np

from verify.network import Network
from verify.solvers.sdp_problem import SDPRelaxation
from verify.spec import InputBox

log = logging.getLogger(__name__)

Bounds = list[tuple[np.ndarray, np.ndarray]]


class SDPBuildError(ValueError):
    """The network, box and pre-activation bounds do not fit together."""


def build_relaxation(net: Network, box: InputBox, preact: Bounds) -> SDPRelaxation:
    """Build the scaled relaxation of ``net`` over ``box`` from pre-activation bounds (one pair per layer)."""
    if box.dim != net.in_dim:
        raise SDPBuildError(f"input box has {box.dim} values but the network expects {net.in_dim}")
    if len(preact) < len(net.layers) - 1:
        raise SDPBuildError(f"need pre-activation bounds for {len(net.layers) - 1} hidden layers, got {len(preact)}")
    radius = box.radius
    free = np.flatnonzero(radius > 0)
    n0 = free.size
    # post-activation of the previous layer as an affine map of v: e0 + ex @ xh + ez @ zh
    e0 = box.center.copy()
    ex = np.zeros((net.in_dim, n0))
    ex[free, np.arange(n0)] = radius[free]
    ez = np.zeros((net.in_dim, 0))
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    hs, layers, units, stable, hidden = [], [], [], [], []
    for i, layer in enumerate(net.layers[:-1]):
        l, u = (np.asarray(b, dtype=np.float64) for b in preact[i])
        if l.shape != (layer.out_dim,) or u.shape != l.shape or not (np.all(np.isfinite(l)) and np.all(np.isfinite(u))):
            raise SDPBuildError(f"pre-activation bounds of layer {i} must be finite arrays of shape ({layer.out_dim},)")
        hidden.append((l.copy(), u.copy()))
        w = layer.dense_weight()
        s0, sx, sz = w @ e0 + layer.bias, w @ ex, w @ ez
        unst = np.flatnonzero((l < 0) & (u > 0))
        act = np.flatnonzero(l >= 0)
        stable.append((int(act.size), int(np.sum((u <= 0) & (l < 0)))))
        n_prev, k = ez.shape[1], unst.size
        rows.append((s0[unst], sx[unst], sz[unst]))
        h = u[unst] / 2.0
        hs.append(h)
        layers.append(np.full(k, i))
        units.append(unst)
        e0 = np.zeros(layer.out_dim)
        ex = np.zeros((layer.out_dim, n0))
        ez = np.zeros((layer.out_dim, n_prev + k))
        e0[act], ex[act], ez[act, :n_prev] = s0[act], sx[act], sz[act]
        e0[unst] = h
        ez[unst, n_prev + np.arange(k)] = h
    n = ez.shape[1]
    a0 = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0)
    ax = np.concatenate([r[1] for r in rows]) if rows else np.zeros((0, n0))
    az = np.zeros((n, n))
    start = 0
    for r in rows:
        k = r[0].size
        az[start : start + k, : r[2].shape[1]] = r[2]
        start += k
    last = net.layers[-1]
    w = last.dense_weight()
    rel = SDPRelaxation(
        free, box.center.copy(), radius[free].copy(), _cat(hs), _cat(layers).astype(int), _cat(units).astype(int),
        a0, ax, az, w @ e0 + last.bias, w @ ex, w @ ez, tuple(hidden), tuple(stable),
    )
    log.debug("SDP relaxation: %d free inputs, %d unstable neurons, stable (active, inactive) per layer %s",
              n0, n, stable)
    return rel


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)
