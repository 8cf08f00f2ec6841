"""Independent numpy check of branch-and-bound lemmas: tighter hidden-layer bounds with split trees behind them.

A lemma for hidden layer ``k`` (see :mod:`verify.bab.proof`) is a ReLU-split forest on the network
truncated after layer ``k``, with rows ``C[r] = +-e_j`` on layer ``k``'s pre-activation ``z``. On the
bounds the checker has already confirmed for layers ``< k`` every closure's bound is recomputed
(:func:`verify.bab.tree_check.relu_closure_bounds`); a leaf's value for row ``r`` is the best closure of
that row on its path (each is a valid lower bound of ``C[r] z + d[r]`` on the leaf's region), a tree's
value the smallest over its leaves (the leaves cover the box), and the lemma's value the best over its
trees. So ``C[r] z >= value`` (rows with ``d = 0``) everywhere in the box, whatever the sign of the value: a lemma can
only tighten a bound, never make a proof wrong, and one whose data does not fit is refused.
"""

from __future__ import annotations

import numpy as np

from verify.bab.proof import Proof, ProofKind
from verify.bab.tree_check import bad_children, children, malformed, relu_closure_bounds, tree_of
from verify.bounds_check import Refine, confirmed_bounds
from verify.bounds_proof import BoundsProof
from verify.lp_dual import CertificateError
from verify.network import Network
from verify.spec import InputBox


def truncated(net: Network, k: int) -> Network:
    """The network up to hidden layer ``k``'s pre-activation (its output), ``k >= 0``."""
    return Network(net.layers[: k + 1], net.input_shape, net.domain_lower, net.domain_upper, f"{net.name}[:{k + 1}]")


def confirmed_with_lemmas(net: Network, box: InputBox, root_bounds: BoundsProof, lemmas: tuple[Proof, ...]
                          ) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """The checker's hidden-layer bounds ``(lows, highs)``, each ``(n_k,)``: interval and CROWN, the slopes of
    ``root_bounds`` and the ``lemmas``, layer by layer (:func:`verify.bounds_check.confirmed_bounds`)."""
    inf = tuple(np.full(w, np.inf) for w in net.hidden_dims)
    refine = lemma_refiner(net, box, lemmas) if lemmas else None
    return confirmed_bounds(net, box, tuple(-a for a in inf), inf, root_bounds, refine)


def lemma_refiner(net: Network, box: InputBox, lemmas: tuple[Proof, ...]) -> Refine:
    """A ``refine`` hook for :func:`verify.bounds_check.confirmed_bounds` that applies ``lemmas``.

    Raises :class:`~verify.lp_dual.CertificateError` (from the hook) for a lemma that does not fit: two for one
    layer, one for the input or output layer, another box, another network, a malformed tree.
    """
    layers = [len(lem.unstable) for lem in lemmas]
    if len(set(layers)) != len(layers) or any(k < 1 or k >= len(net.layers) - 1 for k in layers):
        raise CertificateError(f"lemmas for hidden layers {layers}: each must be a distinct hidden layer after the first")
    by_layer = dict(zip(layers, lemmas))

    def refine(k: int, lows: list, highs: list, l: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lemma = by_layer.get(k)
        if lemma is None:
            return l, u
        sub = truncated(net, k)
        problem = _unfit(sub, box, lemma)
        if problem:
            raise CertificateError(f"the lemma for hidden layer {k}: {problem}")
        values = row_values(lemma, relu_closure_bounds(sub, box, lemma, lows, highs))
        l, u = tightened(lemma, values, l, u)
        if np.any(l > u):  # sound bounds of a non-empty box never cross: a sign of a bug, refuse
            raise CertificateError(f"the lemma for hidden layer {k} leaves neuron {int(np.argmax(l > u))} with l > u")
        return l, u

    return refine


def _unfit(sub: Network, box: InputBox, lemma: Proof) -> str:
    if lemma.kind is not ProofKind.RELU_SPLIT:
        return "not a ReLU-split proof"
    if lemma.network_hash != sub.digest():
        return "made for another network"
    if lemma.lower.shape != box.lower.shape or not (np.array_equal(lemma.lower, box.lower) and np.array_equal(lemma.upper, box.upper)):
        return "made for another input box"
    if lemma.C.ndim != 2 or lemma.C.shape[1] != sub.out_dim or lemma.d.shape != (lemma.C.shape[0],):
        return "its rows do not fit the layer"
    if lemma.root_bounds.steps or lemma.lemmas:
        return "a lemma carries no root bounds or lemmas of its own"
    return malformed(sub, lemma) or bad_children(lemma, children(lemma))


def row_values(proof: Proof, bounds: np.ndarray) -> np.ndarray:
    """``(R,)``: per row, the best over trees of the smallest over the tree's leaves of the best closure
    bound of that row on the leaf's path (``-inf`` where a leaf has none); ``bounds`` ``(K,)`` per closure."""
    kids = children(proof)
    leaf = np.array([not k for k in kids])
    tree = tree_of(proof)
    out = np.full(proof.C.shape[0], -np.inf)
    finite = np.isfinite(bounds)
    for root in np.flatnonzero(proof.parent < 0):
        nodes = np.flatnonzero(tree == root)  # ascending: parents first
        sel = np.flatnonzero(np.isin(proof.closure_node, nodes) & finite)
        if not sel.size:
            continue
        rows = np.unique(proof.closure_row[sel])
        pos = np.full(proof.n_nodes, -1)
        pos[nodes] = np.arange(nodes.size)
        best = np.full((nodes.size, rows.size), -np.inf)
        np.maximum.at(best, (pos[proof.closure_node[sel]], np.searchsorted(rows, proof.closure_row[sel])), bounds[sel])
        for i, v in enumerate(nodes):
            p = proof.parent[v]
            if p >= 0:
                best[i] = np.maximum(best[i], best[pos[p]])
        out[rows] = np.maximum(out[rows], best[leaf[nodes]].min(axis=0))
    return out


def tightened(lemma: Proof, values: np.ndarray, l: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``l``/``u`` tightened by the rows ``C[r] = +-e_j`` with ``d[r] = 0`` (others are ignored): ``C[r] z >= values[r]``."""
    l, u = l.copy(), u.copy()
    for r in range(lemma.C.shape[0]):
        row = lemma.C[r]
        nz = np.flatnonzero(row)
        if nz.size != 1 or row[nz[0]] not in (1.0, -1.0) or not np.isfinite(values[r]) or lemma.d[r] != 0.0:
            continue
        j, v = int(nz[0]), float(values[r])
        if row[j] > 0:
            l[j] = max(l[j], v)
        else:
            u[j] = min(u[j], -v)
    return l, u
