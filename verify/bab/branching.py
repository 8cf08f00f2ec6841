"""Which neuron to split: a BaBSR-like score, filtered by a one-pass look-ahead (filtered smart branching).

Score (Bunel et al. 2020, "Branch and bound for piecewise linear neural network verification"): in
CROWN's bound an unstable neuron with a negative coefficient ``a`` on its output contributes the upper
line's offset ``a * u (-l) / (u - l)``, which both children remove; the score is the sum of that loss
over the open rows (plus a small share of ``|a|`` for ties). The ``candidates`` best neurons per domain
are then tried: both children are bounded once with the parent's slopes and betas (no optimization),
and the neuron whose worse child is best wins (De Palma et al. 2021, "Improved branch and bound for
neural network verification via Lagrangian decomposition").
"""

from __future__ import annotations

import torch
from torch import Tensor

from verify.bab.bounding import Params, Root, domain_bounds, evaluate


def choose_neurons(root: Root, splits: list[Tensor], params: Params, open_rows: Tensor, lower: Tensor, groups,
                   proved: Tensor, candidates: int) -> tuple[Tensor, Tensor]:  # type: ignore[no-untyped-def]
    """Per domain the ``(layer, neuron)`` to split, two ``(D,)`` long tensors; layer -1 where none is left."""
    f32 = torch.float32
    trace: list[Tensor] = []
    with torch.no_grad():
        evaluate(root, splits, params, f32, trace)
    coeffs = trace[:-1][::-1]  # on h_k, k = 0 .. L-1, each (D, R, n_k)
    weight = open_rows.to(f32)[:, :, None]
    scores = []
    for (l, u), a in zip(domain_bounds(root, splits, f32), coeffs):
        unstable = (l < 0) & (u > 0)
        gap = torch.where(unstable, u * (-l) / torch.where(unstable, u - l, torch.ones_like(u)), torch.zeros_like(u))
        s = ((a.clamp(max=0).neg() + 1e-3 * a.abs()) * weight).sum(dim=1) * gap
        scores.append(torch.where(unstable, s, torch.full_like(s, -1.0)))
    flat = torch.cat(scores, dim=1)  # (D, N)
    offsets = torch.cumsum(torch.tensor([0] + root.widths, device=flat.device), 0)
    k = max(1, min(candidates, flat.shape[1]))
    top = torch.topk(flat, k, dim=1)
    best = top.indices[:, 0]
    if k > 1:
        best = _look_ahead(root, splits, params, lower, groups, proved, top.indices, top.values >= 0, offsets)
    valid = flat.gather(1, best[:, None])[:, 0] >= 0
    layer = torch.bucketize(best, offsets[1:], right=True)
    neuron = best - offsets[layer]
    return torch.where(valid, layer, torch.full_like(layer, -1)), neuron


def _look_ahead(root: Root, splits: list[Tensor], params: Params, lower: Tensor, groups, proved: Tensor,
                cand: Tensor, usable: Tensor, offsets: Tensor) -> Tensor:  # type: ignore[no-untyped-def]
    """Among ``cand`` ``(D, k)`` flat neuron indices (``usable`` where unstable), the one whose worse
    child bound is largest."""
    d, k = cand.shape
    layer = torch.bucketize(cand, offsets[1:], right=True)
    neuron = cand - offsets[layer]
    trial = []
    for s_k, lay in zip(splits, range(len(splits))):
        rep = s_k.repeat(2 * k, 1)  # (2kD, n): block (sign, candidate) of D domains
        for c in range(k):
            hit = torch.nonzero(layer[:, c] == lay).flatten()
            for b, sign in enumerate((-1, 1)):
                rep[(2 * c + b) * d + hit, neuron[hit, c]] = sign
        trial.append(rep)
    rep_params = Params([a.repeat(2 * k, 1, 1) for a in params.alphas], [b.repeat(2 * k, 1, 1) for b in params.betas])
    with torch.no_grad():
        val = evaluate(root, trial, rep_params, torch.float32).to(lower.dtype)
    val = torch.maximum(val, lower.repeat(2 * k, 1))
    obj = groups.objective(val, proved.repeat(2 * k, 1)).view(k, 2, d).min(dim=1).values  # (k, D)
    obj = torch.where(usable.T, obj, torch.full_like(obj, -torch.inf))
    return cand[torch.arange(d, device=cand.device), obj.argmax(dim=0)]
