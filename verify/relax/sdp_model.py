"""The SDP relaxation of Raghunathan, Steinhardt & Liang (2018) in scaled coordinates: built from a network
(:func:`build_relaxation`) and emitted, per margin, as the arrow standard form the solvers consume
(:meth:`SDPRelaxation.form`, :mod:`verify.solvers.sdp_form`); the solvers' multipliers come back as
:class:`Multipliers` (the families the certificate and its checker use).

Variables (scaled so that every one lies in ``[-1, 1]``): ``v = [1; xh; zh]`` where

* ``xh`` (``n0`` values): the free inputs, ``x = center + radius * xh`` (inputs with zero radius are
  constants folded into the biases);
* ``zh`` (``N`` values): the *unstable* hidden neurons (``l < 0 < u``), ``z = h (1 + zh)`` with
  ``h = u / 2`` (so ``z`` in ``[0, u]``). Always-inactive neurons (``u <= 0``) are removed,
  always-active ones (``l >= 0``) substituted by their affine pre-activation.

Every unstable neuron ``j`` has a pre-activation that is affine in ``v``: ``s_j = a0_j + ax_j xh + az_j zh``
(``az`` strictly lower triangular in the layer order). With ``g_j = h_j (e_0 + e_j) - a_j``
(so ``g_j^T v = z_j - s_j``) the relaxation of ``P = v v^T`` is::

    minimize   <sym(e_0 o^T), P>                   (the margin c^T y + d = o^T v)
    s.t.       P >= 0 (PSD),  P_00 = 1,  P_kk <= 1  (every scaled box, k >= 1)
               g_j^T P e_0 >= 0                     (z >= s; z >= 0 is implied by the box)
               <sym((e_0 + e_j) g_j^T), P> = 0      (z (z - s) = 0)

Optional triangle cuts (:meth:`SDPRelaxation.triangle_rows`): ``tau_j^T P e_0 >= 0`` with
``tau_j^T v = u_j (s_j - l_j) / (u_j - l_j) - z_j``, multipliers ``kappa >= 0``.

Dual bound (:func:`dual_bound`, the form's :func:`~verify.solvers.sdp_form.form_bound`): for multipliers
``mu_x > 0``, ``mu_z >= 0``, ``lam >= 0``, any ``nu``, ``gamma`` let ``M`` be the Lagrangian's matrix. Its input block is ``diag(mu_x)``, so with
``M = [[Myy, B], [B^T, diag(mu_x)]]`` and the Schur complement ``S = Myy - B diag(1/mu_x) B^T`` of side
``1 + N``::

    margin >= gamma - sum(mu) + (1 + N) * min(0, lambda_min(S))

for every feasible ``P`` (``<M, P> >= <S, P_yy> >= min(0, lambda_min(S)) tr(P_yy)`` and
``tr(P_yy) <= 1 + N``). So any multipliers give a sound bound; ``lambda_min`` is computed by a dense
float64 eigensolver and lowered by a rounding allowance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from verify.network import Network
from verify.solvers.sdp_form import ArrowSDP, form_bound
from verify.spec import InputBox

log = logging.getLogger(__name__)

Bounds = list[tuple[np.ndarray, np.ndarray]]


class SDPBuildError(ValueError):
    """The network, box and pre-activation bounds do not fit together."""


@dataclass(frozen=True, eq=False)
class SDPRelaxation:
    """One input box's SDP relaxation, shared by all margins (shapes in the module doc).

    Attributes:
        free: indices of the free inputs ``(n0,)``; x_center ``(in_dim,)``; x_radius ``(n0,)``.
        h: half upper bound of every unstable neuron ``(N,)``; layer, unit: where each sits ``(N,)``.
        a0, ax, az: pre-activations of the unstable neurons, ``(N,)``, ``(N, n0)``, ``(N, N)``.
        out0, outx, outz: the logits, ``(n_out,)``, ``(n_out, n0)``, ``(n_out, N)``.
        hidden_bounds: the pre-activation bounds of the hidden layers used to build it.
        stable: per hidden layer ``(n_active, n_inactive)``.
    """

    free: np.ndarray
    x_center: np.ndarray
    x_radius: np.ndarray
    h: np.ndarray
    layer: np.ndarray
    unit: np.ndarray
    a0: np.ndarray
    ax: np.ndarray
    az: np.ndarray
    out0: np.ndarray
    outx: np.ndarray
    outz: np.ndarray
    hidden_bounds: tuple[tuple[np.ndarray, np.ndarray], ...]
    stable: tuple[tuple[int, int], ...]

    @property
    def n0(self) -> int:
        return int(self.free.shape[0])

    def triangle_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Triangle cuts ``z <= u (s - l) / (u - l)`` as rows ``tau_j`` with ``tau_j^T v >= 0``, split as
        ``(tau0 (N,), taux (N, n0), tauz (N, N))``."""
        lo = np.array([self.hidden_bounds[i][0][j] for i, j in zip(self.layer, self.unit)])
        up = 2.0 * self.h
        alpha = up / (up - lo)
        n = self.n_unstable
        tau0 = alpha * (self.a0 - lo) - self.h
        taux = alpha[:, None] * self.ax
        tauz = alpha[:, None] * self.az - np.diag(self.h) if n else np.zeros((0, 0))
        return tau0, taux, tauz

    @property
    def n_unstable(self) -> int:
        return int(self.h.shape[0])

    def objective(self, c: np.ndarray, d: float) -> tuple[float, np.ndarray, np.ndarray]:
        """The margin ``c^T y + d`` as ``(o0, ox (n0,), oz (N,))`` in scaled coordinates."""
        c = np.asarray(c, dtype=np.float64).ravel()
        return float(c @ self.out0 + d), c @ self.outx, c @ self.outz

    def form(self, obj: tuple[float, np.ndarray, np.ndarray], triangle: bool = False) -> ArrowSDP:
        """This relaxation for the objective ``obj`` as an :class:`ArrowSDP` over ``v = [1, zh, xh]`` (head
        ``[1, zh]``, tail ``xh``): rows ``g_j`` (ge and eq rows) then, with ``triangle``, ``tau_j`` (ge rows)."""
        n0, nz = self.n0, self.n_unstable
        n = 1 + nz + n0
        g = np.zeros((nz, n))
        g[:, 0], g[:, 1 : 1 + nz], g[:, 1 + nz :] = self.h - self.a0, np.diag(self.h) - self.az, -self.ax
        parts = [g]
        if triangle and nz:
            t0, tx, tz = self.triangle_rows()
            tau = np.zeros((nz, n))
            tau[:, 0], tau[:, 1 : 1 + nz], tau[:, 1 + nz :] = t0, tz, tx
            parts.append(tau)
        rows = np.concatenate(parts, axis=0) if nz else np.zeros((0, n))
        o = np.concatenate([[obj[0]], obj[2], obj[1]])
        return ArrowSDP(1 + nz, o, rows, np.arange(1, n), np.arange(rows.shape[0]), np.arange(nz), 1 + np.arange(nz))

    def multipliers_of(self, y: np.ndarray, triangle: bool = False) -> "Multipliers":
        """The multipliers of :meth:`form`'s constraints ``y`` in this relaxation's terms."""
        n0, nz = self.n0, self.n_unstable
        n = 1 + nz + n0
        ng = 2 * nz if triangle else nz
        ge = y[n : n + ng]
        return Multipliers(-y[1 + nz : n], -y[1 : 1 + nz], ge[:nz].copy(), -y[n + ng : n + ng + nz],
                           float(y[0]), ge[nz:].copy() if triangle else np.zeros(0))

    def y_of(self, m: "Multipliers", triangle: bool = False) -> np.ndarray:
        """The inverse of :meth:`multipliers_of`."""
        kappa = (m.kappa if m.kappa.size else np.zeros(self.n_unstable)) if triangle else np.zeros(0)
        return np.concatenate([[m.gamma], -m.mu_z, -m.mu_x, m.lam, kappa, -m.nu])


@dataclass(frozen=True, eq=False)
class Multipliers:
    """Dual multipliers for one margin: ``mu_x (n0,) > 0``, ``mu_z (N,) >= 0``, ``lam (N,) >= 0``,
    ``nu (N,)``, ``gamma`` (scalar), and ``kappa`` (``(N,) >= 0`` for the triangle cuts, or empty)."""

    mu_x: np.ndarray
    mu_z: np.ndarray
    lam: np.ndarray
    nu: np.ndarray
    gamma: float
    kappa: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def pack(self) -> np.ndarray:
        """``[mu_x, mu_z, lam, nu, kappa, gamma]``."""
        return np.concatenate([self.mu_x, self.mu_z, self.lam, self.nu, self.kappa, [self.gamma]])

    @staticmethod
    def unpack(theta: np.ndarray, n0: int, n: int, triangle: bool = False) -> "Multipliers":
        t = np.asarray(theta, dtype=np.float64)
        k = n if triangle else 0
        return Multipliers(t[:n0].copy(), t[n0 : n0 + n].copy(), t[n0 + n : n0 + 2 * n].copy(),
                           t[n0 + 2 * n : n0 + 3 * n].copy(), float(t[-1]), t[n0 + 3 * n : n0 + 3 * n + k].copy())

    def with_gamma(self, gamma: float) -> "Multipliers":
        return Multipliers(self.mu_x, self.mu_z, self.lam, self.nu, float(gamma), self.kappa)


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


def dual_blocks(rel: SDPRelaxation, obj: tuple[float, np.ndarray, np.ndarray], m: Multipliers) -> tuple[np.ndarray, np.ndarray]:
    """``Myy`` ``(1+N, 1+N)`` and ``B`` ``(1+N, n0)`` of the dual matrix (module doc), numpy float64."""
    o0, ox, oz = obj
    g0 = rel.h - rel.a0
    gz = np.diag(rel.h) - rel.az
    w = m.nu - m.lam
    n = rel.n_unstable
    myy = np.zeros((n + 1, n + 1))
    myy[0, 0] = o0 - m.gamma + w @ g0
    row = 0.5 * (oz + gz.T @ w) + 0.5 * m.nu * g0
    myy[0, 1:], myy[1:, 0] = row, row
    vg = m.nu[:, None] * gz
    myy[1:, 1:] = 0.5 * (vg + vg.T) + np.diag(m.mu_z)
    b = np.empty((n + 1, rel.n0))
    b[0] = 0.5 * (ox - rel.ax.T @ w)
    b[1:] = -0.5 * m.nu[:, None] * rel.ax
    if m.kappa.size:  # - sum_j kappa_j sym(e_0 tau_j^T)
        t0, tx, tz = rel.triangle_rows()
        myy[0, 0] -= m.kappa @ t0
        myy[0, 1:] -= 0.5 * (m.kappa @ tz)
        myy[1:, 0] -= 0.5 * (m.kappa @ tz)
        b[0] -= 0.5 * (m.kappa @ tx)
    return myy, b


def dual_bound(rel: SDPRelaxation, obj: tuple[float, np.ndarray, np.ndarray], m: Multipliers) -> float:
    """Sound lower bound on the relaxation's minimum (hence on the margin) from any multipliers: the form's
    bound (:func:`verify.solvers.sdp_form.form_bound`) at ``m`` (with the triangle cuts when ``m.kappa`` is set)."""
    triangle = m.kappa.size > 0
    return form_bound(rel.form(obj, triangle), rel.y_of(m, triangle))
