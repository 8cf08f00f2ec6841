"""Independent numpy checker for branch-and-bound proofs (:mod:`verify.bab.proof`).

It shares nothing with the torch code that searched for the proof: it re-derives the root's
pre-activation bounds itself (:func:`verify.bounds_check.confirmed_bounds`: interval arithmetic
intersected with a back-substitution, numpy), rebuilds every node's region from the tree, recomputes
every closure's bound in float64 from the stored slopes and betas with a rigorous rounding allowance,
and confirms that the tree covers the box and that every leaf has every group proved on its path.

Why a closure's bound is valid: on a node's region each split neuron has a known sign, so clamping
its bounds to that sign keeps the ReLU relaxation valid (a split neuron becomes exact); any lower
slope in [0, 1] gives a valid lower line; and for ``beta >= 0`` the term ``-beta * sign * z`` is
``<= 0`` on the region, so adding it can only lower the objective there while the minimum is then
taken over the whole box (a superset). Rounding: the back-substitution is repeated on absolute values
to get the sum ``S`` of all magnitudes; ``4 gamma_K S`` bounds the float64 error (Higham, Accuracy and
Stability of Numerical Algorithms, 2nd ed., Lemmas 3.3-3.5; see :mod:`verify.rounding`: the safety
factor, and another 2 for sign decisions on rounded coefficients), and
:func:`verify.rounding.forward_allowance` covers the float64 network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from verify.bab.proof import Proof, ProofKind
from verify.bab.lemma_check import confirmed_with_lemmas
from verify.bab.tree_check import back_substitute, bad_children, children, malformed, path_splits, relu_closure_bounds, tree_of
from verify.bounds_check import confirmed_bounds
from verify.lp_dual import CertificateError
from verify.rounding import forward_allowance as float_forward_allowance
from verify.network import Network
from verify.spec import InputBox, Property


@dataclass(frozen=True)
class ProofCheck:
    """Outcome of :func:`check_proof`: ``ok`` only when every step checked; ``message`` says why not."""

    ok: bool
    message: str
    n_nodes: int = 0
    n_leaves: int = 0
    n_closures: int = 0
    smallest_bound: float = float("nan")


def check_proof(net: Network, prop: Property, proof: Proof) -> ProofCheck:
    """Check that ``proof`` proves ``prop`` (its box and output spec, exactly) for ``net``.

    The proof is a forest: each tree (a node with parent -1 and its descendants) covers the whole box,
    and proves the groups that are closed on the path to every one of its leaves; the property holds
    when the trees together prove every group.
    """
    problem = _mismatch(net, prop, proof) or malformed(net, proof)
    if problem:
        return ProofCheck(False, problem)
    kids_of = children(proof)
    problem = bad_children(proof, kids_of)
    if problem:
        return ProofCheck(False, problem)
    try:
        bounds = _closure_bounds(net, prop.box, proof)
    except CertificateError as err:
        return ProofCheck(False, f"the root's bounds do not re-derive: {err}")
    except (ValueError, IndexError, TypeError) as err:  # a crafted proof whose data slipped past the checks above
        return ProofCheck(False, f"the proof's data does not fit ({type(err).__name__}: {err})")
    valid = bounds > 0  # NaN never; +inf only for an empty input-split region
    closed = _closed_groups(proof, valid)
    tree = tree_of(proof)
    leaves = np.array([not kids for kids in kids_of])
    proved = np.zeros(len(proof.groups), dtype=bool)
    for root in np.flatnonzero(proof.parent < 0):
        in_tree = leaves & (tree == root)
        proved |= closed[in_tree].all(axis=0)
    finite = valid & np.isfinite(bounds)
    smallest = float(bounds[finite].min()) if finite.any() else float("nan")
    stats = dict(n_nodes=proof.n_nodes, n_leaves=int(leaves.sum()), n_closures=int(bounds.size), smallest_bound=smallest)
    if not proved.all():
        g = int(np.flatnonzero(~proved)[0])
        return ProofCheck(False, f"{int(np.sum(~proved))} of {proved.size} groups not proved on every leaf of any tree "
                                 f"(e.g. group {g}); {int(np.sum(~valid))} of {bounds.size} closures did not re-check", **stats)
    return ProofCheck(True, f"proof checks: {int(leaves.sum())} leaves in {int(np.sum(proof.parent < 0))} trees, "
                            f"{bounds.size} closures re-derived, smallest closing bound {smallest:.3g}", **stats)


def _mismatch(net: Network, prop: Property, proof: Proof) -> str:
    if proof.network_hash != net.digest():
        return "the proof was made for another network (weights differ)"
    box, spec = prop.box, prop.output
    if proof.lower.shape != box.lower.shape or not (np.array_equal(proof.lower, box.lower) and np.array_equal(proof.upper, box.upper)):
        return "the proof was made for another input box"
    if proof.C.shape != spec.C.shape or not (np.array_equal(proof.C, spec.C) and np.array_equal(proof.d, spec.d)):
        return "the proof was made for other output margins"
    if sorted(proof.groups) != sorted(tuple(g) for g in spec.groups):
        return "the proof groups the output margins differently"
    return ""


def _closed_groups(proof: Proof, valid: np.ndarray) -> np.ndarray:
    """``(n_nodes, G)``: groups proved on each node's region by a valid closure on its path."""
    row_group = np.full(proof.C.shape[0], -1)
    for g, rows in enumerate(proof.groups):
        row_group[list(rows)] = g
    own = np.zeros((proof.n_nodes, len(proof.groups)), dtype=bool)
    hit = valid
    own[proof.closure_node[hit], row_group[proof.closure_row[hit]]] = True
    closed = own.copy()
    for v in range(proof.n_nodes):  # parents come first
        if proof.parent[v] >= 0:
            closed[v] |= closed[proof.parent[v]]
    return closed


def _closure_bounds(net: Network, box: InputBox, proof: Proof) -> np.ndarray:
    """Re-derived lower bound ``(K,)`` of every closure (``-inf`` where its data does not fit)."""
    k = proof.closure_node.size
    out = np.full(k, -np.inf)
    if proof.kind is ProofKind.RELU_SPLIT:
        lows, highs = root_bounds(net, box, proof)
        out = relu_closure_bounds(net, box, proof, lows, highs)
    else:
        for i in range(k):
            out[i] = _input_split_one(net, box, proof, i)
    return np.where(np.isnan(out), -np.inf, out)


def root_bounds(net: Network, box: InputBox, proof: Proof) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """The checker's own hidden-layer bounds for a ReLU-split proof: interval and CROWN, the proof's
    alpha-CROWN slopes and its lemmas (:mod:`verify.bab.lemma_check`), layer by layer."""
    return confirmed_with_lemmas(net, box, proof.root_bounds, proof.lemmas)


def _input_split_one(net: Network, box: InputBox, proof: Proof, c: int) -> float:
    lo, hi = box.lower.copy(), box.upper.copy()
    for _, dim, sign, value in path_splits(proof, int(proof.closure_node[c])):
        if sign < 0:
            hi[dim] = min(hi[dim], value)
        else:
            lo[dim] = max(lo[dim], value)
    if np.any(lo > hi):
        return np.inf  # an empty region needs no proof
    sub = InputBox(lo, hi)
    inf = tuple(np.full(w, np.inf) for w in net.hidden_dims)
    lows, highs = confirmed_bounds(net, sub, tuple(-a for a in inf), inf)
    row = int(proof.closure_row[c])
    alphas, pos = [], 0
    for w in net.hidden_dims:
        alphas.append(proof.closure_alpha[c: c + 1, pos: pos + w] / 255.0)
        pos += w
    zeros = [np.zeros((1, w)) for w in net.hidden_dims]
    val = back_substitute(net, lo[None], hi[None], [l[None] for l in lows], [h[None] for h in highs],
                           [np.zeros((1, w), np.int8) for w in net.hidden_dims], alphas, zeros,
                           proof.C[row: row + 1], proof.d[row: row + 1])[0]
    return float(val - float_forward_allowance(net, sub, highs, proof.C[row: row + 1])[0])

