"""Interval bound propagation (IBP) in torch: batched, differentiable, any float dtype."""

from __future__ import annotations

from typing import Sequence

import torch

Chain = Sequence[tuple[torch.Tensor, torch.Tensor]]


def interval_bounds(
    chain: Chain, lower: torch.Tensor, upper: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pre-activation bounds of every layer by interval arithmetic.

    Args:
        chain: ``[(W_0, b_0), ..., (W_L, b_L)]`` with ``W_i`` of shape ``(out, in)``; ReLU between layers.
        lower, upper: input box, shape ``(N, in_dim)``.

    Returns:
        ``[(l_0, u_0), ..., (l_L, u_L)]``: bounds on ``W_i z_i + b_i`` for every layer (the last is the
        logits), each of shape ``(N, out_i)``. Not rounding-safe at float32; use float64 for certificates.
    """
    bounds = []
    lo, hi = lower, upper
    for i, (w, b) in enumerate(chain):
        if i:
            lo, hi = torch.relu(lo), torch.relu(hi)
        mid, rad = (hi + lo) / 2, (hi - lo) / 2
        c = mid @ w.T + b
        r = rad @ w.abs().T
        lo, hi = c - r, c + r
        bounds.append((lo, hi))
    return bounds
