"""CROWN / DeepPoly-style backward linear bound propagation in torch.

Batched over ``N`` input boxes and over many output rows at once, differentiable with respect to
the chain's ``W``/``b`` (and the box), any float dtype.

Notation: ``z_k = W_k h_{k-1} + b_k`` is layer ``k``'s pre-activation (``h_{-1} = x``), and
``h_k = relu(z_k)`` for every layer but the last (``z_L`` are the logits). A *linear spec* on
``z_k`` is ``A z_k + c`` with ``A`` of shape ``(N, R, n_k)`` (or ``(R, n_k)`` shared over the batch)
and ``c`` of shape ``(N, R)``; :func:`backward_lower` lower-bounds it over the input box by
back-substitution, relaxing each unstable ReLU (``l < 0 < u``) by

* upper line ``relu(z) <= u/(u-l) (z - l)``, and
* lower line ``relu(z) >= alpha z`` with ``alpha`` in ``[0, 1]`` (CROWN's adaptive choice:
  ``alpha = 1`` if ``u > -l`` else ``0``; alpha-CROWN optimizes it).

Stable neurons are exact (slope 1 or 0). An upper bound is the negated lower bound of ``-A``.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

Chain = Sequence[tuple[Tensor, Tensor]]
Bounds = list[tuple[Tensor, Tensor]]


class Relaxation(NamedTuple):
    """Per-neuron ReLU relaxation for pre-activation bounds ``l, u``, all ``(N, n)``.

    The upper line is ``up_slope * z + up_offset``; ``crown_alpha`` is CROWN's adaptive lower slope
    (exact 1/0 for stable neurons); ``unstable`` is a bool mask of ``l < 0 < u``.
    """

    unstable: Tensor
    up_slope: Tensor
    up_offset: Tensor
    crown_alpha: Tensor

    def lower_slopes(self, alpha: Tensor | None) -> Tensor:
        """``alpha`` (``(N, R, n)``) on unstable neurons, exact on stable ones; CROWN's ``(N, 1, n)`` if None."""
        if alpha is None:
            return self.crown_alpha[:, None, :]
        return torch.where(self.unstable[:, None, :], alpha, self.crown_alpha[:, None, :])


def relu_relaxation(l: Tensor, u: Tensor) -> Relaxation:
    """The :class:`Relaxation` of ReLU on ``[l, u]`` (shapes ``(N, n)``)."""
    unstable = (l < 0) & (u > 0)
    active = (l >= 0).to(u.dtype)
    denom = torch.where(unstable, u - l, torch.ones_like(u))
    up_slope = torch.where(unstable, u / denom, active)
    up_offset = torch.where(unstable, -up_slope * l, torch.zeros_like(l))
    crown_alpha = torch.where(unstable, (u > -l).to(u.dtype), active)
    return Relaxation(unstable, up_slope, up_offset, crown_alpha)


def backward_lower(
    chain: Chain,
    k: int,
    A: Tensor,
    c: Tensor,
    bounds: Bounds,
    lower: Tensor,
    upper: Tensor,
    alphas: Sequence[Tensor | None] | None = None,
    relax: Sequence[Relaxation] | None = None,
    extra: Sequence[Tensor | None] | None = None,
    trace: list[Tensor] | None = None,
) -> Tensor:
    """Lower bound of ``A z_k + c`` over the box, shape ``(N, R)``.

    Args:
        chain: the network's ``(W, b)`` pairs.
        k: the layer whose pre-activation ``z_k`` the spec reads.
        A: ``(N, R, n_k)`` or ``(R, n_k)``; c: ``(N, R)`` (or broadcastable).
        bounds: pre-activation bounds ``(l_j, u_j)`` of shape ``(N, n_j)`` for every ``j < k``.
        lower, upper: the input box, ``(N, in_dim)``.
        alphas: optional lower slopes per layer ``j < k``, each ``(N, R, n_j)`` or None (CROWN).
        relax: the bounds' relaxations, if already computed (``[relu_relaxation(*b) for b in bounds]``).
        extra: optional terms added to the coefficients on ``z_j`` (``(N, R, n_j)`` or None per layer
            ``j < k``): Lagrange terms of split constraints (beta-CROWN); the caller is responsible for
            their validity (e.g. ``-beta z_j`` with ``beta >= 0`` on a domain where ``z_j >= 0``).
        trace: if given, receives the coefficients on ``h_{j}`` (``(N, R, n_j)``) for ``j = k-1 .. 0``,
            then the coefficients on the input ``(N, R, in_dim)`` (branching heuristics, primal points).
    """
    relax = relax if relax is not None else [relu_relaxation(l, u) for l, u in bounds[:k]]
    const = c
    center, radius = (upper + lower) / 2, (upper - lower) / 2
    for j in range(k, 0, -1):
        w, b = chain[j]
        const = const + A @ b
        A = A @ w  # now on h_{j-1} = relu(z_{j-1})
        if trace is not None:
            trace.append(A)
        rel = relax[j - 1]
        lo_slope = rel.lower_slopes(None if alphas is None else alphas[j - 1])
        neg = A.clamp(max=0)
        const = const + (neg @ rel.up_offset[:, :, None])[..., 0]
        # pos * lo + neg * up  ==  A * lo + neg * (up - lo): one pass fewer
        A = torch.addcmul(A * lo_slope, neg, rel.up_slope[:, None, :] - lo_slope)
        if extra is not None and extra[j - 1] is not None:
            A = A + extra[j - 1]
    w, b = chain[0]
    const = const + A @ b + (A @ (center @ w.T)[:, :, None])[..., 0]
    if trace is not None:
        trace.append(A @ w)
    return const - _radius_term(A, w, radius)


def _radius_term(A: Tensor, w: Tensor, radius: Tensor) -> Tensor:
    """``sum_i |(A W_0)_{n r i}| radius_{n i}``, shape ``(N, R)``: the box's contribution.

    ``A W_0`` is the largest tensor of the whole computation, ``(N, R, in_dim)``; without autograd
    its absolute value is taken in place.
    """
    prod = A @ w
    prod = prod.abs() if torch.is_grad_enabled() and prod.requires_grad else prod.abs_()
    return (prod @ radius[:, :, None])[..., 0]


def interval_affine(w: Tensor, b: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Interval image ``(N, out)`` of the box ``[lo, hi]`` (``(N, in)``) under ``x -> W x + b``."""
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    c = mid @ w.T + b
    r = rad @ w.abs().T
    return c - r, c + r


#: cap on the largest temporary, ``(inputs, rows, in_dim)``, in float64 elements (16 MB; twice as
#: many float32 elements): batches are cut into chunks below it, as fresh allocations above the
#: allocator's reuse threshold cost page faults that dominated the run time otherwise
CHUNK_ELEMENTS = 1 << 21


def chunk_budget(x: Tensor) -> int:
    """:data:`CHUNK_ELEMENTS` scaled to ``x``'s element size."""
    return CHUNK_ELEMENTS * 8 // x.element_size()


def batch_chunks(chain: Chain, lower: Tensor, upper: Tensor) -> list[Tensor]:
    """Split a batch into index chunks whose largest temporary stays below :data:`CHUNK_ELEMENTS`.

    With several chunks, inputs are ordered by their number of interval-arithmetic unstable
    neurons, so that inputs of similar cost share a chunk and the per-input padding of
    :func:`_rows_to_refine` stays small.
    """
    n = lower.shape[0]
    widest = max([int(w.shape[0]) for w, _ in chain[1:-1]] + [int(chain[-1][0].shape[0])])
    step = max(1, chunk_budget(lower) // (2 * widest * int(chain[0][0].shape[1])))
    if n <= step:
        return [torch.arange(n, device=lower.device)]
    with torch.no_grad():
        score = torch.zeros(n, device=lower.device)
        lo, hi = lower.detach(), upper.detach()
        for w, b in chain[:-1]:
            lo, hi = interval_affine(w.detach(), b.detach(), lo, hi)
            score += ((lo < 0) & (hi > 0)).sum(dim=1)
            lo, hi = torch.relu(lo), torch.relu(hi)
    order = torch.argsort(score, stable=True)
    return list(torch.split(order, step))


def gather_chunks(parts: list[Tensor], chunks: list[Tensor]) -> Tensor:
    """Inverse of :func:`batch_chunks`: concatenate per-chunk results back into batch order."""
    if len(parts) == 1:
        return parts[0]
    inverse = torch.argsort(torch.cat(chunks))
    return torch.cat(parts)[inverse]


def crown_bounds(
    chain: Chain, lower: Tensor, upper: Tensor, n_layers: int | None = None, all_rows: bool = False
) -> Bounds:
    """CROWN pre-activation bounds of every layer (the last is the logits).

    Args:
        chain: ``[(W_0, b_0), ..., (W_L, b_L)]``, ``W_i`` of shape ``(out, in)``; ReLU between layers.
        lower, upper: the input box, shape ``(N, in_dim)``.
        n_layers: compute only the first ``n_layers`` layers' bounds (default: all).
        all_rows: back-substitute every neuron, not only the unstable ones (tighter bounds on
            stable neurons, which only matter to consumers such as the SDP; slower).

    Returns:
        ``[(l_0, u_0), ...]`` of shape ``(N, out_i)``. Each layer's bounds are CROWN's intersected
        with interval arithmetic from the previous layer's bounds, so they are never looser than
        IBP's. Unless ``all_rows``, a neuron's bounds are refined only in the inputs where this
        interval check leaves it unstable (stable neurons are exact in the next relaxation either
        way), so each input's result does not depend on the rest of the batch. Not
        rounding-safe; see :func:`verify.bounds.margins.layer_slack`.
    """
    chunks = batch_chunks(chain, lower, upper)
    parts = [_crown_bounds(chain, lower[ix], upper[ix], n_layers, all_rows) for ix in chunks]
    return [
        (gather_chunks([p[k][0] for p in parts], chunks), gather_chunks([p[k][1] for p in parts], chunks))
        for k in range(len(parts[0]))
    ]


def _crown_bounds(chain: Chain, lower: Tensor, upper: Tensor, n_layers: int | None, all_rows: bool) -> Bounds:
    n_layers = len(chain) if n_layers is None else n_layers
    bounds: Bounds = []
    for k in range(n_layers):
        w, b = chain[k]
        if k == 0:
            bounds.append(interval_affine(w, b, lower, upper))
            continue
        l_prev, u_prev = bounds[k - 1]
        lo, hi = interval_affine(w, b, torch.relu(l_prev), torch.relu(u_prev))
        idx, refine = _rows_to_refine(lo, hi, all_rows or k == len(chain) - 1)
        if idx.numel():
            lo, hi = _refine(chain, k, idx, refine, bounds, lower, upper, lo, hi)
        bounds.append((lo, hi))
    return bounds


def _rows_to_refine(lo: Tensor, hi: Tensor, every: bool) -> tuple[Tensor, Tensor]:
    """Per input, the neurons to back-substitute: ``(N, r)`` indices (the unstable ones first, padded
    with stable ones up to the batch's largest count; or all) and an ``(N, r)`` mask of the entries
    whose bounds are to be replaced."""
    n, width = lo.shape
    if every:
        idx = torch.arange(width, device=lo.device).expand(n, width)
        return idx, torch.ones(n, width, dtype=torch.bool, device=lo.device)
    unstable = (lo < 0) & (hi > 0)
    r = int(unstable.sum(dim=1).max()) if n else 0
    idx = torch.argsort((~unstable).to(torch.int8), dim=1, stable=True)[:, :r]
    return idx, unstable.gather(1, idx)


def _refine(chain: Chain, k: int, idx: Tensor, mask: Tensor, bounds: Bounds, lower: Tensor, upper: Tensor,
            lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Intersect ``lo, hi`` (``(N, n_k)``) with CROWN bounds at the ``(N, r)`` neurons ``idx`` where ``mask``."""
    n, r = idx.shape
    eye = torch.zeros(n, r, lo.shape[1], dtype=lo.dtype, device=lo.device).scatter_(2, idx[:, :, None], 1.0)
    c = torch.zeros(n, 2 * r, dtype=lo.dtype, device=lo.device)
    val = backward_lower(chain, k, torch.cat([eye, -eye], dim=1), c, bounds, lower, upper)
    old_lo, old_hi = lo.gather(1, idx), hi.gather(1, idx)
    new_lo = torch.where(mask, torch.maximum(old_lo, val[:, :r]), old_lo)
    new_hi = torch.where(mask, torch.minimum(old_hi, -val[:, r:]), old_hi)
    return lo.scatter(1, idx, new_lo), hi.scatter(1, idx, new_hi)


def identity_spec(w: Tensor, rows: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Spec ``[I_rows; -I_rows]`` on ``z_k`` (``(2R, n_k)``) and zero constants ``(n, 2R)``."""
    eye = torch.zeros(rows.numel(), w.shape[0], dtype=w.dtype, device=w.device)
    eye[torch.arange(rows.numel(), device=w.device), rows] = 1.0
    return torch.cat([eye, -eye]), torch.zeros(n, 2 * rows.numel(), dtype=w.dtype, device=w.device)


def fold_margins(chain: Chain, C: Tensor, d: Tensor | None, n: int) -> tuple[Tensor, Tensor]:
    """Normalize a margin matrix: ``C`` ``(m, n_out)`` or ``(N, m, n_out)`` -> ``(N, m, n_out)``, ``d`` -> ``(N, m)``."""
    w = chain[-1][0]
    C = C.to(dtype=w.dtype, device=w.device)
    if C.dim() == 2:
        C = C.expand(n, *C.shape)
    if C.dim() != 3 or C.shape[0] != n or C.shape[2] != w.shape[0]:
        raise ValueError(f"margin matrix C has shape {tuple(C.shape)}; expected (m, {w.shape[0]}) or ({n}, m, {w.shape[0]})")
    if d is None:
        d = torch.zeros(C.shape[:2], dtype=w.dtype, device=w.device)
    d = torch.as_tensor(d, dtype=w.dtype, device=w.device).expand(C.shape[:2])
    return C, d


def interval_margins(chain: Chain, C: Tensor, d: Tensor, bounds: Bounds, lower: Tensor, upper: Tensor) -> Tensor:
    """Interval lower bound of ``C z_L + d`` with ``C`` folded into the last layer: ``(N, m)``.

    ``bounds`` must hold layers ``0..L-1`` (``C``: ``(N, m, n_out)``, ``d``: ``(N, m)``).
    """
    w, b = chain[-1]
    if len(chain) == 1:
        lo, hi = lower, upper
    else:
        lo, hi = torch.relu(bounds[-1][0]), torch.relu(bounds[-1][1])
    A = C @ w
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    return d + C @ b + (A @ mid[:, :, None])[..., 0] - (A.abs() @ rad[:, :, None])[..., 0]


def crown_margins(chain: Chain, C: Tensor, d: Tensor, bounds: Bounds, lower: Tensor, upper: Tensor) -> Tensor:
    """CROWN lower bound of ``C z_L + d``, never looser than :func:`interval_margins`: ``(N, m)``."""
    L = len(chain) - 1
    val = backward_lower(chain, L, C, d, bounds, lower, upper)
    return torch.maximum(val, interval_margins(chain, C, d, bounds, lower, upper))
