"""Tighter hidden-layer bounds for branch and bound, proved by branch and bound on the truncated network.

On deep networks the bounds of the later hidden layers decide how many splits a property needs: each
unstable neuron whose bounds are loose adds a loose triangle to every subdomain. Complete verifiers
tighten them with a MILP per neuron (alpha-beta-CROWN's MIP refinement); a MILP's bound cannot be
re-checked independently, so here each bound is tightened by the same beta-CROWN search instead, on
the network cut after the neuron's layer, and kept as a *lemma*: the split tree with its closures
(:mod:`verify.bab.proof`), which the numpy checker re-derives (:mod:`verify.bab.lemma_check`).

Measured on mnist-net_256x4 prop_4_0.05 (VNN-COMP 2021): HiGHS's MILP per neuron took 900 s for
layers 2-4 and stabilized 15 / 7 / 56 of 85 / 12 / 120 unstable neurons, after which the property was
proved in 3 s; the search below proves every one of those MILP bounds in 21 s.

Layers are refined in order, each on the bounds the checker confirms for the layers before (including
their lemmas): the search uses exactly the numbers the checker will re-derive.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch

from verify.bab.bounding import Params, Root, init_params, make_root, optimize
from verify.bab.lemma_check import confirmed_with_lemmas, truncated
from verify.bab.proof import Proof, ProofBuilder, ProofKind
from verify.bab.search import Search, SearchEnd, Settings, root_pool
from verify.bounds_proof import BoundsProof
from verify.budget import Budget
from verify.network import Network
from verify.spec import InputBox

log = logging.getLogger(__name__)

Pairs = list[tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Refined:
    """Hidden-layer bounds ``hidden`` (``(l_k, u_k)``, each ``(n_k,)``, as the checker confirms them) and the
    ``lemmas`` that prove the tightened ones; ``unstable_before``/``after``: unstable neurons per layer."""

    hidden: Pairs
    lemmas: tuple[Proof, ...]
    unstable_before: list[int]
    unstable_after: list[int]


def refine_hidden(net: Network, box: InputBox, root_bounds: BoundsProof, settings: Settings, seconds: float,
                  device: str, root_steps: int, lr: float) -> Refined:
    """Tighten hidden layers ``1 .. L-1`` in order within ``seconds`` (see the module docstring).

    Each layer gets a share of the time left proportional to its unstable neurons among those of the
    layers still to do; each of its ``2 U`` bounds an equal share of the layer's time.
    """
    stop = Budget.start(seconds)
    lemmas: list[Proof] = []
    lows, highs = confirmed_with_lemmas(net, box, root_bounds, ())
    before = _unstable_counts(lows, highs)
    for k in range(1, len(net.layers) - 1):
        counts = _unstable_counts(lows, highs)
        unstable = np.flatnonzero((lows[k] < 0) & (highs[k] > 0))
        if stop.expired() or not unstable.size:
            continue
        share = stop.remaining() * unstable.size / max(1, sum(counts[k:]))
        t0 = time.monotonic()
        lemmas.append(_layer_lemma(net, box, k, list(zip(lows[:k], highs[:k])), unstable, settings,
                                   min(share, stop.remaining()), device, root_steps, lr))
        lows, highs = confirmed_with_lemmas(net, box, root_bounds, tuple(lemmas))
        log.info("bab lemmas: hidden layer %d, %d -> %d unstable neurons in %.1fs", k, unstable.size,
                 _unstable_counts(lows, highs)[k], time.monotonic() - t0)
    return Refined(list(zip(lows, highs)), tuple(lemmas), before, _unstable_counts(lows, highs))


def _unstable_counts(lows: tuple, highs: tuple) -> list[int]:
    return [int(np.sum((l < 0) & (u > 0))) for l, u in zip(lows, highs)]


def _layer_lemma(net: Network, box: InputBox, k: int, hidden: Pairs, unstable: np.ndarray, settings: Settings,
                 seconds: float, device: str, root_steps: int, lr: float) -> Proof:
    """One forest proving bounds of ``z_k[j]`` for ``j`` in ``unstable``: rows ``+e_j`` (lower) and ``-e_j`` (upper)."""
    sub = truncated(net, k)
    n = unstable.size
    C = np.zeros((2 * n, sub.out_dim))
    C[2 * np.arange(n), unstable] = 1.0
    C[2 * np.arange(n) + 1, unstable] = -1.0
    d = np.zeros(2 * n)
    stop = Budget.start(seconds)
    root = make_root(sub, box, C, d, hidden, device)
    splits = [torch.zeros(1, w, dtype=torch.int8, device=device) for w in root.widths]
    first = optimize(root, splits, init_params(root, 1), torch.ones(1, 2 * n, dtype=torch.bool, device=device),
                     root_steps, lr, settings.lr_beta, stop.deadline)
    n_slopes = int(sum(int(m.sum()) for m in root.unstable()))
    builder = ProofBuilder(ProofKind.RELU_SPLIT, n_slopes)
    lower = first.lower[0].cpu().numpy()
    for i, r in enumerate(np.argsort(lower)):  # the loosest bounds first, each an equal share of what is left
        per_row = stop.remaining() / (2 * n - i)
        _tighten_row(root, int(r), first, builder, Budget.start(per_row), settings)
    return builder.build(sub.digest(), box.lower, box.upper, C, d, tuple((r,) for r in range(2 * n)),
                         tuple(np.flatnonzero(m.cpu().numpy()) for m in root.unstable()))


def _tighten_row(root: Root, r: int, first, builder: ProofBuilder, budget: Budget, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    """A search on row ``r`` of ``root`` until ``budget`` ends; the closures of every leaf go into ``builder``."""
    one = dataclasses.replace(root, C=root.C[r: r + 1], d=root.d[r: r + 1], forward_err=root.forward_err[r: r + 1])
    search = Search(one, [(0,)], np.array([r]), settings, builder, lambda x: None, budget)
    params = Params([a[:, r: r + 1] for a in first.params.alphas], [b[:, r: r + 1] for b in first.params.betas])
    lower = first.lower[:, r: r + 1]
    if bool((lower > 0).all()) or budget.expired():
        search.close_open(root_pool(search, params, lower, builder.add_root()))
        return
    outcome = search.run(root_pool(search, params, lower, builder.add_root()))
    if outcome.end is not SearchEnd.PROVED and search.final_pool is not None:
        search.close_open(search.final_pool)
