"""Numpy re-derivation of split trees, shared by the proof checker and the lemma checker.

The structure of a tree (:mod:`verify.bab.proof`: parents before children, two children per internal
node splitting one neuron or coordinate both ways) and the float64 back-substitution that recomputes a
closure's bound with a rigorous rounding allowance (see :mod:`verify.bab.proof_check`). Nothing here
imports the torch search code.
"""

from __future__ import annotations

import numpy as np

from verify.bab.proof import Proof, ProofKind
from verify.network import Network
from verify.rounding import SAFETY, chain_gamma
from verify.rounding import forward_allowance as float_forward_allowance
from verify.spec import InputBox

#: closures are recomputed in batches of this many
_BATCH = 512


def tree_of(proof: Proof) -> np.ndarray:
    """``(n_nodes,)``: the root node of each node's tree (parents come first)."""
    tree = np.arange(proof.n_nodes)
    for v in range(proof.n_nodes):
        if proof.parent[v] >= 0:
            tree[v] = tree[proof.parent[v]]
    return tree


def bad_types(proof: Proof) -> str:
    """Why the proof's arrays have the wrong kind or number of dimensions ('' if none): index arrays must be
    1-D integers, values real floats (a complex ``C`` would compare and cast silently), slopes 2-D uint8."""
    ints = {"parent": proof.parent, "split_layer": proof.split_layer, "split_neuron": proof.split_neuron,
            "split_sign": proof.split_sign, "closure_node": proof.closure_node, "closure_row": proof.closure_row,
            "beta_offset": proof.beta_offset, **{f"unstable[{k}]": u for k, u in enumerate(proof.unstable)}}
    reals = {"lower": (proof.lower, 1), "upper": (proof.upper, 1), "C": (proof.C, 2), "d": (proof.d, 1),
             "split_value": (proof.split_value, 1), "closure_beta": (proof.closure_beta, 1)}
    for name, a in ints.items():
        if not isinstance(a, np.ndarray) or a.ndim != 1 or a.dtype.kind not in "iu":
            return f"the proof's {name} is not a 1-D integer array"
    for name, (a, ndim) in reals.items():
        if not isinstance(a, np.ndarray) or a.ndim != ndim or a.dtype.kind != "f":
            return f"the proof's {name} is not a {ndim}-D array of real numbers"
    alpha = proof.closure_alpha
    if not isinstance(alpha, np.ndarray) or alpha.ndim != 2 or alpha.dtype != np.uint8:
        return "the proof's closure_alpha is not a 2-D uint8 array"
    return ""


def malformed(net: Network, proof: Proof) -> str:
    problem = bad_types(proof)
    if problem:
        return problem
    n = proof.n_nodes
    widths = list(net.hidden_dims)
    if n == 0 or proof.parent[0] != -1:
        return "the proof has no root node"
    arrays = (proof.split_layer, proof.split_neuron, proof.split_sign, proof.split_value)
    if any(a.shape != (n,) for a in arrays):
        return "the proof's node arrays have different lengths"
    split = proof.parent >= 0  # every node but the trees' roots
    if np.any(proof.parent < -1) or np.any(proof.parent >= np.arange(n)):
        return "the proof's tree is not ordered parent-before-child"
    if np.any(np.abs(proof.split_sign[split]) != 1):
        return "a split sign is not +1 or -1"
    if proof.kind is ProofKind.RELU_SPLIT:
        lay, neu = proof.split_layer[split], proof.split_neuron[split]
        if np.any(lay < 0) or np.any(lay >= len(widths)):
            return "a split names a layer the network does not have"
        if np.any(neu < 0) or np.any(neu >= np.array(widths)[np.clip(lay, 0, len(widths) - 1)]):
            return "a split names a neuron the network does not have"
        if len(proof.unstable) != len(widths) or any(
            np.any(u < 0) or np.any(u >= w) for u, w in zip(proof.unstable, widths)
        ):
            return "the proof's slope positions do not fit the network"
        n_slopes = int(sum(u.size for u in proof.unstable))
    else:
        dim = proof.split_neuron[split]
        if np.any(dim < 0) or np.any(dim >= net.in_dim) or not np.all(np.isfinite(proof.split_value)):
            return "an input split names a coordinate the network does not have"
        n_slopes = int(sum(widths))
    k = proof.closure_node.size
    if proof.closure_row.shape != (k,) or proof.closure_alpha.shape != (k, n_slopes) or proof.beta_offset.shape != (k + 1,):
        return "the proof's closure arrays do not fit"
    if k and (proof.closure_node.min() < 0 or proof.closure_node.max() >= n):
        return "a closure names a node the tree does not have"
    if k and (proof.closure_row.min() < 0 or proof.closure_row.max() >= proof.C.shape[0]):
        return "a closure names a margin row the spec does not have"
    if proof.beta_offset[0] != 0 or np.any(np.diff(proof.beta_offset) < 0) or proof.beta_offset[-1] != proof.closure_beta.size:
        return "the proof's beta offsets are inconsistent"
    return ""


def children(proof: Proof) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(proof.n_nodes)]
    for v in range(proof.n_nodes):
        if proof.parent[v] >= 0:
            out[int(proof.parent[v])].append(v)
    return out


def bad_children(proof: Proof, children: list[list[int]]) -> str:
    """Every internal node must have exactly two children, the two signs of one split (so they cover it)."""
    for v, kids in enumerate(children):
        if not kids:
            continue
        if len(kids) != 2:
            return f"node {v} has {len(kids)} children; a split has exactly two"
        a, b = kids
        same = (proof.split_layer[a] == proof.split_layer[b] and proof.split_neuron[a] == proof.split_neuron[b]
                and proof.split_value[a] == proof.split_value[b])
        if not same or {int(proof.split_sign[a]), int(proof.split_sign[b])} != {-1, 1}:
            return f"the children of node {v} do not split one neuron/coordinate both ways"
    return ""


def path_splits(proof: Proof, v: int) -> list[tuple[int, int, int, float]]:
    out = []
    while proof.parent[v] >= 0:
        out.append((int(proof.split_layer[v]), int(proof.split_neuron[v]), int(proof.split_sign[v]), float(proof.split_value[v])))
        v = int(proof.parent[v])
    return out[::-1]


def relu_closure_bounds(net: Network, box: InputBox, proof: Proof, lows, highs) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Re-derived lower bound ``(K,)`` of every closure of a ReLU-split ``proof`` on the hidden-layer bounds
    ``lows``/``highs`` (already confirmed by the caller), the float64 network's own rounding subtracted."""
    k = proof.closure_node.size
    out = np.full(k, -np.inf)
    allowance = float_forward_allowance(net, box, highs, proof.C)
    for start in range(0, k, _BATCH):
        ix = np.arange(start, min(k, start + _BATCH))
        out[ix] = _relu_split_batch(net, box, proof, ix, lows, highs) - allowance[proof.closure_row[ix]]
    return np.where(np.isnan(out), -np.inf, out)


def _relu_split_batch(net, box, proof, ix, lows, highs) -> np.ndarray:  # type: ignore[no-untyped-def]
    widths = list(net.hidden_dims)
    b = ix.size
    splits = [np.zeros((b, w), dtype=np.int8) for w in widths]
    betas = [np.zeros((b, w)) for w in widths]
    ok = np.ones(b, dtype=bool)
    for i, c in enumerate(ix):
        path = path_splits(proof, int(proof.closure_node[c]))
        keys = sorted((lay, neu) for lay, neu, _, _ in path)
        vals = proof.closure_beta[proof.beta_offset[c]: proof.beta_offset[c + 1]].astype(np.float64)
        if len(set(keys)) != len(keys) or vals.size != len(keys):
            ok[i] = False
            continue
        for lay, neu, sign, _ in path:
            splits[lay][i, neu] = sign
        for (lay, neu), beta in zip(keys, vals):
            betas[lay][i, neu] = beta
    alphas = []
    pos = 0
    for k, w in enumerate(widths):
        a = np.full((b, w), np.nan)  # nan = CROWN's default slope
        u = proof.unstable[k]
        a[:, u] = proof.closure_alpha[ix, pos: pos + u.size] / 255.0
        pos += u.size
        alphas.append(a)
    lo = [np.broadcast_to(l, (b, l.size)) for l in lows]
    hi = [np.broadcast_to(h, (b, h.size)) for h in highs]
    vals = back_substitute(net, box.lower[None], box.upper[None], lo, hi, splits, alphas, betas,
                            proof.C[proof.closure_row[ix]], proof.d[proof.closure_row[ix]])
    return np.where(ok, vals, -np.inf)


def back_substitute(net, box_lo, box_hi, lows, highs, splits, alphas, betas, C, d) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Lower bound ``(B,)`` of ``C[i] f(x) + d[i]`` over the box on each region, minus the rounding allowance.

    ``lows/highs[k]``: ``(B, n_k)`` bounds; ``splits[k]``: signs (0 = free); ``alphas[k]``: slopes (NaN:
    CROWN's default), ``betas[k]``: split multipliers (clipped to >= 0)."""
    L = len(net.layers) - 1
    A, const = C.copy(), d.copy()
    M, Mc = np.abs(C), np.abs(d)
    for j in range(L, 0, -1):
        w, bias = net.layers[j].dense_weight(), net.layers[j].bias
        const = const + A @ bias
        Mc = Mc + M @ np.abs(bias)
        G, GM = A @ w, M @ np.abs(w)
        s = splits[j - 1]
        l = np.where(s > 0, np.maximum(lows[j - 1], 0.0), lows[j - 1])
        u = np.where(s < 0, np.minimum(highs[j - 1], 0.0), highs[j - 1])
        unst, act = (l < 0) & (u > 0), (l >= 0).astype(np.float64)
        up = np.where(unst, u / np.where(unst, u - l, 1.0), act)
        off = np.where(unst, -up * l, 0.0)
        default = np.where(unst, (u > -l).astype(np.float64), act)
        a = alphas[j - 1]
        lo_slope = np.where(unst, np.where(np.isnan(a), default, np.clip(a, 0.0, 1.0)), act)
        neg = np.minimum(G, 0.0)
        const = const + np.sum(neg * off, axis=1)
        Mc = Mc + np.sum(GM * off, axis=1)
        beta = np.maximum(np.nan_to_num(betas[j - 1], nan=0.0), 0.0) * (s != 0)
        A = np.maximum(G, 0.0) * lo_slope + neg * up - beta * s
        M = GM + beta
    w, bias = net.layers[0].dense_weight(), net.layers[0].bias
    const = const + A @ bias
    Mc = Mc + M @ np.abs(bias)
    G = A @ w
    mid, rad = (box_hi + box_lo) / 2, (box_hi - box_lo) / 2
    value = const + np.sum(G * mid, axis=1) - np.sum(np.abs(G) * rad, axis=1)
    total = Mc + (M @ np.abs(w)) @ np.maximum(np.abs(box_lo), np.abs(box_hi))[0]
    gamma = chain_gamma([net.in_dim, *net.hidden_dims, net.out_dim], len(net.layers))
    out = value - 2.0 * SAFETY * gamma * total
    return np.where(np.isfinite(out), out, -np.inf)
