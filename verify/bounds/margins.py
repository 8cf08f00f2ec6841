"""Lower bounds on output margins ``C f(x) + d`` over input boxes, and their rounding slack.

The torch entry point for certification and certified training: batched over inputs and margins,
differentiable with respect to the chain (and the box), float32 or float64.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from verify.bounds.alpha import alpha_crown_bounds, alpha_margins
from verify.bounds.crown import (
    Bounds,
    Chain,
    chunk_budget,
    crown_bounds,
    crown_margins,
    fold_margins,
    interval_margins,
)
from verify.bounds.interval import interval_bounds
from verify.options import Options
from verify.registry import BOUND_PROPAGATION, resolve
from verify.rounding import SAFETY, chain_gamma


def margin_lower_bounds(
    chain: Chain,
    lower: Tensor,
    upper: Tensor,
    C: Tensor,
    d: Tensor | None = None,
    method: str = "crown",
    options: Options | None = None,
) -> Tensor:
    """Lower bounds on every margin ``C f(x) + d`` over each input box.

    Args:
        chain: ``[(W_0, b_0), ..., (W_L, b_L)]``, ``W_i`` of shape ``(out, in)``; ReLU between layers.
        lower, upper: input boxes, ``(N, in_dim)`` (or ``(in_dim,)`` for one box).
        C: margin matrix ``(m, n_out)`` shared by all boxes, or ``(N, m, n_out)``.
        d: offsets ``(m,)`` or ``(N, m)``; default zero.
        method: "ibp" (alias "interval"), "crown", "alpha-crown-output" or "alpha-crown" (see
            :mod:`verify.registry`). "alpha-crown" optimizes the slopes for every layer's bounds
            (hidden layers, then the margins); "alpha-crown-output" only for the margins, on CROWN's
            hidden-layer bounds (cheaper, looser).
        options: alpha-CROWN's ``alpha_steps`` and ``alpha_lr``.

    Returns:
        ``(N, m)`` lower bounds in the chain's dtype, differentiable. For a fixed box,
        interval <= crown <= either alpha-CROWN holds row by row (up to float rounding; alpha-crown is
        usually, not always, tighter than alpha-crown-output), and each box's
        result does not depend on the rest of the batch. Large batches are processed in chunks
        (temporaries of at most 16 MB, see ``crown.CHUNK_ELEMENTS``). Not rounding-safe; subtract
        :func:`rounding_slack` before trusting a sign.
    """
    method = resolve(method, BOUND_PROPAGATION, "bound method")
    options = options or Options()
    lower, upper = _as_batch(chain, lower), _as_batch(chain, upper)
    C, d = fold_margins(chain, torch.as_tensor(C), None if d is None else torch.as_tensor(d), lower.shape[0])
    L = len(chain) - 1
    if method == "ibp":
        return interval_margins(chain, C, d, interval_bounds(chain[:L], lower, upper) if L else [], lower, upper)
    bounds = crown_bounds(chain, lower, upper, n_layers=L)  # chunked internally
    optimize_intermediate = method == "alpha-crown"
    widest = max((int(w.shape[0]) for w, _ in chain[1:-1]), default=0)
    rows = max(1, C.shape[1], 2 * widest if optimize_intermediate else 0)  # the last stage's spec rows
    step = max(1, chunk_budget(lower) // (rows * int(chain[0][0].shape[1])))
    parts = []
    for i in range(0, max(1, lower.shape[0]), step):
        ix = slice(i, i + step)
        sub = [(l[ix], u[ix]) for l, u in bounds]
        parts.append(_final(chain, C[ix], d[ix], sub, lower[ix], upper[ix], method, options, optimize_intermediate))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _final(chain: Chain, C: Tensor, d: Tensor, bounds: Bounds, lower: Tensor, upper: Tensor, method: str,
           options: Options, optimize_intermediate: bool) -> Tensor:
    """The last stage for one chunk of inputs: CROWN, then alpha-CROWN if asked, on the margins."""
    crown = crown_margins(chain, C, d, bounds, lower, upper)
    if method == "crown":
        return crown
    steps, lr = options.alpha_steps, options.alpha_lr
    if optimize_intermediate and len(chain) > 2:
        bounds = alpha_crown_bounds(chain, lower, upper, steps, lr, n_layers=len(chain) - 1, start=bounds)
    return torch.maximum(crown, alpha_margins(chain, C, d, bounds, lower, upper, steps, lr))


def magnitudes(chain: Chain, lower: Tensor, upper: Tensor) -> list[Tensor]:
    """Per layer ``s_k`` ``(N, n_k)`` with ``|z_k| <= s_k`` and ``|l_k|, |u_k| <= s_k`` for any bounds we compute.

    ``s_0 = |W_0| max(|lower|, |upper|) + |b_0|``, ``s_k = |W_k| s_{k-1} + |b_k|``.
    """
    s = torch.maximum(lower.abs(), upper.abs())
    out = []
    for w, b in chain:
        s = s @ w.abs().T + b.abs()
        out.append(s)
    return out


def rounding_slack(chain: Chain, lower: Tensor, upper: Tensor, C: Tensor, d: Tensor | None = None) -> Tensor:
    """A bound ``(N, m)`` on the floating-point error of any margin bound computed here (for float64).

    Every bound is a sum of products built by at most ``L+1`` matrix products, each of inner
    length ``n_j``, plus a few elementwise operations per layer. With unit roundoff ``u`` the
    classical bound (Higham, *Accuracy and Stability*, 3.1; the rules are in :mod:`verify.rounding`) on such a computation is
    ``gamma_K * S`` with ``gamma_K = K u / (1 - K u)``, ``K`` the total number of chained operations
    (``in_dim + sum of widths + 4 per layer``) and ``S`` the sum of the absolute values of all terms.
    All relaxation slopes lie in ``[0, 1]`` and every offset ``-a l`` is at most ``|l| <= s``; the
    offsets of one layer sum to at most one ``|C| s_L`` (:func:`magnitudes`), so over ``L`` ReLU
    layers ``S <= (L + 1) |C| s_L + |d|``. We return ``2 (L + 1) gamma_K (|C| s_L + |d|)``: a factor 2
    on top for the upper/lower split and for the errors intermediate bounds carry into the
    relaxations. It also covers the float64 forward error of the network itself, which is bounded by
    ``gamma_K |C| s_L`` by the same argument. (Measured on real networks the term sum stays far below
    ``|C| s_L``, so this is conservative.)
    """
    lower, upper = _as_batch(chain, lower), _as_batch(chain, upper)
    C, d = fold_margins(chain, torch.as_tensor(C), None if d is None else torch.as_tensor(d), lower.shape[0])
    s = magnitudes(chain, lower, upper)[-1]
    total = (C.abs() @ s[:, :, None])[..., 0] + d.abs()
    return SAFETY * len(chain) * _gamma(chain, lower.dtype) * total


def layer_slack(chain: Chain, lower: Tensor, upper: Tensor) -> list[Tensor]:
    """Per-layer rounding slack ``(N, n_k)`` for pre-activation bounds, as in :func:`rounding_slack`."""
    lower, upper = _as_batch(chain, lower), _as_batch(chain, upper)
    g = SAFETY * len(chain) * _gamma(chain, lower.dtype)
    return [g * s for s in magnitudes(chain, lower, upper)]


def _gamma(chain: Chain, dtype: torch.dtype) -> float:
    dims = [int(w.shape[1]) for w, _ in chain] + [int(chain[-1][0].shape[0])]
    return chain_gamma(dims, len(chain), unit=torch.finfo(dtype).eps / 2)


def _as_batch(chain: Sequence[tuple[Tensor, Tensor]], x: Tensor) -> Tensor:
    w = chain[0][0]
    x = torch.as_tensor(x, device=w.device).to(w.dtype)
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"input box has shape {tuple(x.shape)}; the network expects (N, {w.shape[1]})")
    return x
