"""Branch-and-bound proofs: the split tree and, per closed (node, margin row), the parameters of its bound.

A proof is a forest of split trees over the input box. In each tree every point of the box lies in
some leaf (each internal node has two children whose regions cover it); a tree proves a group of the
output spec when along every root-to-leaf path some row of the group has a bound, recomputed at a
node of the path from the stored parameters, that is > 0. The trees together must prove every group
(the search builds one tree per group it has to branch on).

Two kinds of tree:

* ReLU splits: a node fixes the sign of one more hidden neuron (``split_sign`` +1: ``z >= 0``,
  -1: ``z <= 0``); its region is the box intersected with all the signs on its path. A closure stores
  the lower ReLU slopes of the root-unstable neurons (``alpha``, uint8 = ``round(255 alpha)``) and one
  ``beta >= 0`` per split of the node, in canonical order (sorted by layer, then neuron).
* Input splits: a node halves its parent's box along ``split_neuron`` (the input coordinate) at
  ``split_value``; ``split_sign`` -1 keeps the lower part, +1 the upper part. A closure stores slopes
  for every hidden neuron (the unstable ones differ from box to box) and no beta.

Lemmas: a ReLU-split proof may carry tightened pre-activation bounds of hidden layers, each backed by
a forest of its own (:attr:`Proof.lemmas`): for hidden layer ``k``, a proof of the same kind on the
network truncated after layer ``k`` whose rows ``C[r]`` are ``+-e_j`` on layer ``k``'s pre-activation
(``d = 0``). Its value for row ``r`` is, over its trees, the best of (the smallest over the tree's leaves
of the best closure of row ``r`` on the leaf's path): a lower bound of ``C[r] z_k`` over the whole box,
whatever its sign. The checker (:mod:`verify.bab.lemma_check`) re-derives the lemmas layer by layer,
each on the bounds it has already confirmed for the layers before, and the main tree on all of them.

Files are ``.npz`` (no pickles): :func:`save_proof` / :func:`load_proof`.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from verify.bounds_proof import BoundsProof, SlopeProof

FORMAT = "verify-bab-proof"
VERSION = 1


class ProofKind(enum.Enum):
    RELU_SPLIT = "relu-split"
    INPUT_SPLIT = "input-split"


class ProofError(ValueError):
    """A proof file is unreadable or malformed."""


@dataclass(frozen=True, eq=False)
class Proof:
    """A branch-and-bound proof (see the module docstring). Arrays, shapes:

    Attributes:
        kind: the tree's kind.
        network_hash: :meth:`verify.network.Network.digest` of the network it was made for.
        lower, upper: the input box ``(in_dim,)``; C, d, groups: the output spec it proves.
        unstable: ReLU splits: per hidden layer the neuron indices whose slopes a closure stores.
        parent, split_layer, split_neuron, split_sign, split_value: one entry per node (node 0 is the
            root of the first tree; every tree root has parent -1).
        closure_node, closure_row: ``(K,)`` which node and spec row each closure proves.
        closure_alpha: ``(K, S)`` uint8 slopes; closure_beta: flat float32 betas, closure ``k`` owning
            ``closure_beta[beta_offset[k]:beta_offset[k+1]]``.
        root_bounds: ReLU splits: how the root's pre-activation bounds were tightened (alpha-CROWN
            slopes); the checker replays it on its own bounds (:func:`verify.bounds_check.confirmed_bounds`).
        lemmas: ReLU splits: branch-and-bound proofs of tighter bounds of hidden layers (see the module
            docstring), in increasing layer order; their own ``root_bounds`` and ``lemmas`` are empty.
    """

    kind: ProofKind
    network_hash: str
    lower: np.ndarray
    upper: np.ndarray
    C: np.ndarray
    d: np.ndarray
    groups: tuple[tuple[int, ...], ...]
    unstable: tuple[np.ndarray, ...]
    parent: np.ndarray
    split_layer: np.ndarray
    split_neuron: np.ndarray
    split_sign: np.ndarray
    split_value: np.ndarray
    closure_node: np.ndarray
    closure_row: np.ndarray
    closure_alpha: np.ndarray
    closure_beta: np.ndarray
    beta_offset: np.ndarray
    root_bounds: BoundsProof = field(default_factory=BoundsProof)
    lemmas: tuple["Proof", ...] = ()

    @property
    def n_nodes(self) -> int:
        return int(self.parent.size)

    @property
    def n_leaves(self) -> int:
        has_child = np.zeros(self.n_nodes, dtype=bool)
        has_child[self.parent[self.parent >= 0]] = True
        return int(np.sum(~has_child))


@dataclass
class ProofBuilder:
    """Collects nodes and closures while the search runs (appends only)."""

    kind: ProofKind
    n_slopes: int
    parent: list[int] = field(default_factory=lambda: [-1])
    layer: list[int] = field(default_factory=lambda: [-1])
    neuron: list[int] = field(default_factory=lambda: [-1])
    sign: list[int] = field(default_factory=lambda: [0])
    value: list[float] = field(default_factory=lambda: [0.0])
    c_node: list[np.ndarray] = field(default_factory=list)
    c_row: list[np.ndarray] = field(default_factory=list)
    c_alpha: list[np.ndarray] = field(default_factory=list)
    c_beta: list[np.ndarray] = field(default_factory=list)
    c_beta_len: list[np.ndarray] = field(default_factory=list)

    def add_root(self) -> int:
        """A new tree (covering the whole box again, e.g. for another group); returns its root node."""
        self.parent.append(-1)
        self.layer.append(-1)
        self.neuron.append(-1)
        self.sign.append(0)
        self.value.append(0.0)
        return len(self.parent) - 1

    def add_children(self, parents: np.ndarray, layers: np.ndarray, neurons: np.ndarray,
                     values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Two children per parent (sign -1, then +1); returns their node ids ``(minus, plus)``."""
        n = len(self.parent)
        k = int(parents.size)
        vals = np.zeros(k) if values is None else np.asarray(values, dtype=np.float64)
        for sign in (-1, 1):
            self.parent.extend(parents.tolist())
            self.layer.extend(layers.tolist())
            self.neuron.extend(neurons.tolist())
            self.sign.extend([sign] * k)
            self.value.extend(vals.tolist())
        return np.arange(n, n + k), np.arange(n + k, n + 2 * k)

    def add_closures(self, nodes: np.ndarray, rows: np.ndarray, alphas: np.ndarray, betas: list[np.ndarray]) -> None:
        """Closures of ``rows[i]`` at ``nodes[i]``: ``alphas`` ``(K, n_slopes)`` uint8, ``betas[i]`` in canonical order."""
        if nodes.size == 0:
            return
        if alphas.shape != (nodes.size, self.n_slopes) or alphas.dtype != np.uint8:
            raise ValueError(f"closure slopes must be uint8 of shape ({nodes.size}, {self.n_slopes})")
        self.c_node.append(nodes.astype(np.int64))
        self.c_row.append(rows.astype(np.int64))
        self.c_alpha.append(alphas)
        self.c_beta.append(np.concatenate(betas).astype(np.float32) if betas else np.zeros(0, np.float32))
        self.c_beta_len.append(np.array([b.size for b in betas], dtype=np.int64))

    @property
    def n_closures(self) -> int:
        return int(sum(a.size for a in self.c_node))

    def build(self, network_hash: str, lower: np.ndarray, upper: np.ndarray, C: np.ndarray, d: np.ndarray,
              groups: tuple[tuple[int, ...], ...], unstable: tuple[np.ndarray, ...],
              root_bounds: BoundsProof | None = None, lemmas: tuple[Proof, ...] = ()) -> Proof:
        cat = lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt)  # noqa: E731
        lens = cat(self.c_beta_len, np.int64)
        alpha = np.concatenate(self.c_alpha) if self.c_alpha else np.zeros((0, self.n_slopes), np.uint8)
        return Proof(
            self.kind, network_hash, np.asarray(lower, np.float64).copy(), np.asarray(upper, np.float64).copy(),
            np.asarray(C, np.float64).copy(), np.asarray(d, np.float64).copy(), tuple(tuple(g) for g in groups),
            tuple(np.asarray(u, np.int64) for u in unstable),
            np.array(self.parent, np.int64), np.array(self.layer, np.int64), np.array(self.neuron, np.int64),
            np.array(self.sign, np.int8), np.array(self.value, np.float64),
            cat(self.c_node, np.int64), cat(self.c_row, np.int64), alpha, cat(self.c_beta, np.float32),
            np.concatenate([[0], np.cumsum(lens)]).astype(np.int64), root_bounds or BoundsProof(), tuple(lemmas),
        )


_ARRAYS = ("lower", "upper", "C", "d", "parent", "split_layer", "split_neuron", "split_sign", "split_value",
           "closure_node", "closure_row", "closure_alpha", "closure_beta", "beta_offset")


def save_proof(proof: Proof, path: str | Path) -> None:
    """Write ``proof`` as a compressed ``.npz`` (no pickled objects)."""
    meta, arrays = _flatten(proof, "")
    meta["lemmas"] = []
    for i, lemma in enumerate(proof.lemmas):
        lmeta, larrays = _flatten(lemma, f"lemma{i}_")
        meta["lemmas"].append(lmeta)
        arrays.update(larrays)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, meta=np.array(json.dumps(meta)), **arrays)


def _flatten(proof: Proof, prefix: str) -> tuple[dict, dict]:
    """Metadata and named arrays of one proof (its lemmas not included), array names prefixed."""
    meta = {"format": FORMAT, "version": VERSION, "kind": proof.kind.value, "network_hash": proof.network_hash,
            "groups": [list(g) for g in proof.groups]}
    arrays = {prefix + name: getattr(proof, name) for name in _ARRAYS}
    arrays.update({f"{prefix}unstable_{k}": u for k, u in enumerate(proof.unstable)})
    meta["root_bounds"] = {"source": proof.root_bounds.source, "steps": []}
    for i, step in enumerate(proof.root_bounds.steps):
        if not isinstance(step, SlopeProof):
            raise ProofError(f"cannot save a root-bounds step of kind {type(step).__name__}")
        meta["root_bounds"]["steps"].append({"layer": int(step.layer), "given": [a is not None for a in step.slopes]})
        arrays[f"{prefix}rb{i}_rows"] = np.asarray(step.rows, np.int64)
        arrays.update({f"{prefix}rb{i}_slope{j}": np.asarray(a, np.float64) for j, a in enumerate(step.slopes) if a is not None})
    return meta, arrays


def load_proof(path: str | Path) -> Proof:
    """Read a proof written by :func:`save_proof`; :class:`ProofError` if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise ProofError(f"{path} is not a verify branch-and-bound proof")
            if meta.get("version") != VERSION:
                raise ProofError(f"{path}: proof format version {meta.get('version')} is not supported (expected {VERSION})")
            metas = meta.get("lemmas", [])
            if not isinstance(metas, list) or not all(isinstance(m, dict) for m in metas):
                raise ProofError(f"{path}: the proof's lemma list is malformed")
            lemmas = tuple(_unflatten(z, lmeta, f"lemma{i}_", ()) for i, lmeta in enumerate(metas))
            return _unflatten(z, meta, "", lemmas)
    except ProofError:
        raise
    except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError) as err:
        raise ProofError(f"cannot read proof {path}: {err}") from None


def _unflatten(z, meta: dict, prefix: str, lemmas: tuple[Proof, ...]) -> Proof:  # type: ignore[no-untyped-def]
    arrays = {name: z[prefix + name] for name in _ARRAYS}
    n_layers = sum(1 for k in z.files if k.startswith(prefix + "unstable_"))
    unstable = tuple(z[f"{prefix}unstable_{k}"] for k in range(n_layers))
    rb = meta.get("root_bounds", {"source": "crown", "steps": []})
    steps = tuple(
        SlopeProof(int(st["layer"]), z[f"{prefix}rb{i}_rows"],
                   tuple(z[f"{prefix}rb{i}_slope{j}"] if given else None for j, given in enumerate(st["given"])))
        for i, st in enumerate(rb["steps"])
    )
    return Proof(ProofKind(meta["kind"]), str(meta["network_hash"]), groups=tuple(tuple(int(i) for i in g) for g in meta["groups"]),
                 unstable=unstable, root_bounds=BoundsProof(str(rb["source"]), steps), lemmas=lemmas, **arrays)
