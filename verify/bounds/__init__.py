"""Bound propagation in torch (interval, CROWN, alpha-CROWN).

``preactivation_bounds`` is the entry point used by the LP, SDP and MILP relaxations;
``margin_lower_bounds`` (torch, batched, differentiable) is the one for certification and training.
"""

from __future__ import annotations

import numpy as np
import torch

from verify.bounds.alpha import alpha_crown_bounds
from verify.bounds.crown import crown_bounds
from verify.bounds.interval import interval_bounds
from verify.bounds.margins import layer_slack, margin_lower_bounds, rounding_slack
from verify.bounds_proof import BoundsProof, ProvedBounds, SlopeProof
from verify.network import Network
from verify.options import BOUND_METHODS, Options
from verify.spec import InputBox


def preactivation_bounds(
    net: Network, box: InputBox, method: str = "crown", options: Options | None = None
) -> ProvedBounds:
    """Sound float64 bounds on every layer's pre-activation ``W_i z_i + b_i`` over ``box``.

    Returns one ``(lower, upper)`` pair of shape ``(out_i,)`` per layer, the last being the logits, as
    a :class:`~verify.bounds_proof.ProvedBounds`: for "alpha-crown" its proof holds the optimized
    slopes of every hidden layer, so that certificate checkers re-derive the bounds themselves.
    ``method`` is "interval", "crown" or "alpha-crown". CROWN back-substitutes every neuron (so
    stable neurons get tight bounds too, useful to the SDP). For "alpha-crown" every layer's bounds
    (hidden layers and logits) are tightened in turn by optimized slopes (``options.alpha_steps``
    Adam steps with ``options.alpha_lr``), starting from and never looser than CROWN's. All bounds
    are widened by :func:`layer_slack` (relative ~1e-13) to cover float64 rounding.
    """
    if method not in BOUND_METHODS:
        raise ValueError(f"unknown bound method {method!r}; choose from {', '.join(BOUND_METHODS)}")
    if box.dim != net.in_dim:
        raise ValueError(f"input box has {box.dim} values but the network expects {net.in_dim}")
    options = options or Options()
    chain = net.torch_chain(torch.float64, options.device)
    lo = torch.as_tensor(box.lower, dtype=torch.float64, device=options.device)[None]
    hi = torch.as_tensor(box.upper, dtype=torch.float64, device=options.device)[None]
    slopes: list = []
    with torch.no_grad():
        if method == "interval":
            bounds = interval_bounds(chain, lo, hi)
        elif method == "crown":
            bounds = crown_bounds(chain, lo, hi, all_rows=True)
        else:
            start = crown_bounds(chain, lo, hi, all_rows=True)
            bounds = alpha_crown_bounds(chain, lo, hi, options.alpha_steps, options.alpha_lr, start=start, slopes=slopes)
        slack = layer_slack(chain, lo, hi)
        pairs = tuple(((l - s)[0].cpu().numpy(), (u + s)[0].cpu().numpy()) for (l, u), s in zip(bounds, slack))
    return ProvedBounds(pairs, BoundsProof(method, tuple(_slope_proof(k, rows, alphas) for k, rows, alphas in slopes
                                                          if k < len(net.layers) - 1)))


def crown_unstable_count(net: Network, box: InputBox, options: Options | None = None) -> int:
    """ReLUs whose CROWN pre-activation bounds over ``box`` straddle 0 (what the costly methods' time grows with)."""
    bounds = preactivation_bounds(net, box, "crown", options)
    return int(sum(np.count_nonzero((l < 0) & (u > 0)) for l, u in bounds[: len(net.layers) - 1]))


def _slope_proof(k: int, rows: torch.Tensor, alphas: list) -> SlopeProof:
    """The slopes of one box (the first of the batch) as numpy, for a certificate."""
    return SlopeProof(k, rows.cpu().numpy().astype(np.int64),
                      tuple(None if a is None else a[0].detach().cpu().numpy().astype(np.float64) for a in alphas))


__all__ = [
    "alpha_crown_bounds",
    "crown_bounds",
    "crown_unstable_count",
    "interval_bounds",
    "margin_lower_bounds",
    "preactivation_bounds",
    "rounding_slack",
]
