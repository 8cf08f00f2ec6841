"""alpha-CROWN: CROWN with the ReLU lower-line slopes optimized by projected Adam.

Any slope ``alpha`` in ``[0, 1]`` gives a sound lower line ``relu(z) >= alpha z``, so every iterate's
bound is sound; we keep, per input and per spec row, the best bound seen and the slopes that gave
it. Slopes are separate per input, per spec row and per neuron (shape ``(N, R, n_j)`` for layer
``j``). The search itself runs on detached tensors; when gradients are wanted (the chain or box
requires grad), the best slopes are evaluated once more with the live tensors, which reproduces the
best bound with a graph (the slopes are treated as constants, as in certified training practice).

:func:`alpha_margins` optimizes the slopes for the output margins only, on fixed hidden-layer
bounds (CROWN's: fast); :func:`alpha_crown_bounds` also tightens every layer's bounds in turn.
"""

from __future__ import annotations

import torch
from torch import Tensor

from verify.bounds.adam import ProjectedAdam
from verify.bounds.crown import (
    Bounds,
    Chain,
    backward_lower,
    crown_bounds,
    crown_margins,
    identity_spec,
    interval_affine,
    relu_relaxation,
)


def optimized_lower(
    chain: Chain,
    k: int,
    A: Tensor,
    c: Tensor,
    bounds: Bounds,
    lower: Tensor,
    upper: Tensor,
    steps: int,
    lr: float,
) -> Tensor:
    """Best lower bound of ``A z_k + c`` (shapes as in :func:`backward_lower`) over ``steps`` Adam steps.

    Starts from CROWN's adaptive slopes, so the result is never below CROWN's bound for the same
    intermediate ``bounds``. Returns ``(N, R)``; differentiable when the inputs require grad.
    """
    return _optimized(chain, k, A, c, bounds, lower, upper, steps, lr)[0]


def _optimized(chain: Chain, k: int, A: Tensor, c: Tensor, bounds: Bounds, lower: Tensor, upper: Tensor, steps: int,
               lr: float) -> tuple[Tensor, list[Tensor | None]]:
    """:func:`optimized_lower` and the slopes that gave it (per layer ``j < k``: ``(N, R, n_j)`` or None)."""
    best, alphas = _search(chain, k, A, c, bounds, lower, upper, steps, lr)
    if not _wants_grad(chain, bounds, lower, upper, A, c):
        return best, alphas
    return backward_lower(chain, k, A, c, bounds, lower, upper, alphas), alphas


def alpha_margins(
    chain: Chain, C: Tensor, d: Tensor, bounds: Bounds, lower: Tensor, upper: Tensor, steps: int, lr: float
) -> Tensor:
    """alpha-CROWN lower bound of ``C z_L + d`` (``C``: ``(N, m, n_out)``, ``d``: ``(N, m)``) -> ``(N, m)``.

    ``bounds`` holds layers ``0..L-1``. Never looser than :func:`crown_margins` with the same bounds.
    """
    L = len(chain) - 1
    crown = crown_margins(chain, C, d, bounds, lower, upper)
    return torch.maximum(crown, optimized_lower(chain, L, C, d, bounds, lower, upper, steps, lr))


def alpha_crown_bounds(
    chain: Chain,
    lower: Tensor,
    upper: Tensor,
    steps: int,
    lr: float,
    n_layers: int | None = None,
    start: Bounds | None = None,
    slopes: list | None = None,
) -> Bounds:
    """Pre-activation bounds with every layer's bounds tightened by alpha-CROWN, layer by layer.

    Starts from :func:`crown_bounds`; for each layer ``k >= 1`` in turn, the neurons still unstable
    (all of them for the logits) get slopes optimized for their own lower and upper bound, using
    the already-tightened bounds of layers ``< k``; the result is intersected with CROWN's and with
    interval arithmetic from the tightened layer ``k-1``. Shapes as in :func:`crown_bounds`.
    ``start``: precomputed ``crown_bounds`` (at least ``n_layers`` layers) to begin from.
    ``slopes``: if a list, ``(k, rows, alphas)`` is appended for every layer ``k`` optimized: the neuron
    indices ``rows`` ``(R,)`` and the best slopes per layer ``j < k`` (``(N, 2R, n_j)`` or None) of the
    spec ``[I_rows; -I_rows]`` (the proof the certificate checker replays, see :mod:`verify.bounds_proof`).
    Cost: ``steps`` backward passes with ``2 x (unstable rows)`` spec rows per layer.
    """
    n_layers = len(chain) if n_layers is None else n_layers
    bounds = list(start[:n_layers]) if start is not None else crown_bounds(chain, lower, upper, n_layers)
    for k in range(1, n_layers):
        w, b = chain[k]
        lo, hi = bounds[k]
        ilo, ihi = interval_affine(w, b, torch.relu(bounds[k - 1][0]), torch.relu(bounds[k - 1][1]))
        lo, hi = torch.maximum(lo, ilo), torch.minimum(hi, ihi)
        mask = torch.ones_like(lo, dtype=torch.bool) if k == len(chain) - 1 else (lo < 0) & (hi > 0)
        rows = torch.nonzero(mask.any(0)).flatten()
        if rows.numel():
            A, c = identity_spec(w, rows, lo.shape[0])
            val, alphas = _optimized(chain, k, A, c, bounds, lower, upper, steps, lr)
            if slopes is not None:
                slopes.append((k, rows, alphas))
            r, m = rows.numel(), mask[:, rows]
            lo = lo.index_copy(1, rows, torch.where(m, torch.maximum(lo[:, rows], val[:, :r]), lo[:, rows]))
            hi = hi.index_copy(1, rows, torch.where(m, torch.minimum(hi[:, rows], -val[:, r:]), hi[:, rows]))
        bounds[k] = (lo, hi)
    return bounds


def _search(
    chain: Chain, k: int, A: Tensor, c: Tensor, bounds: Bounds, lower: Tensor, upper: Tensor, steps: int, lr: float
) -> tuple[Tensor, list[Tensor | None]]:
    """Projected Adam over the slopes on detached copies; returns the best bound and its slopes."""
    chain_d = [(w.detach(), b.detach()) for w, b in chain]
    bounds_d = [(l.detach(), u.detach()) for l, u in bounds[:k]]
    A, c, lower, upper = A.detach(), c.detach(), lower.detach(), upper.detach()
    n, R = lower.shape[0], A.shape[-2]
    relax = [relu_relaxation(l, u) for l, u in bounds_d]
    alphas: list[Tensor | None] = [
        r.crown_alpha[:, None, :].expand(n, R, -1).clone().requires_grad_() if r.unstable.any() else None
        for r in relax
    ]
    params = [a for a in alphas if a is not None]
    with torch.enable_grad():
        val = backward_lower(chain_d, k, A, c, bounds_d, lower, upper, alphas, relax)
        best = val.detach().clone()
        best_alphas = [None if a is None else a.detach().clone() for a in alphas]
        if not params or steps <= 0:
            return best, best_alphas
        opt = ProjectedAdam([(a, lr, 0.0, 1.0) for a in params])
        for _ in range(steps):
            (-val.sum()).backward()
            opt.step()
            val = backward_lower(chain_d, k, A, c, bounds_d, lower, upper, alphas, relax)
            improved = val.detach() > best
            if improved.any():
                best = torch.where(improved, val.detach(), best)
                for ba, a in zip(best_alphas, alphas):
                    if a is not None:
                        ba[improved] = a.detach()[improved]
    return best, best_alphas


def _wants_grad(chain: Chain, bounds: Bounds, *tensors: Tensor) -> bool:
    if not torch.is_grad_enabled():
        return False
    pool = [t for wb in chain for t in wb] + [t for lu in bounds for t in lu] + list(tensors)
    return any(t.requires_grad for t in pool)
