"""Branch and bound: verdicts against the exact MILP, proofs through the independent checker, edge cases."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from verify.bab import certify_bab, check_proof, load_proof, save_proof
from verify.bab.proof import ProofKind
from verify.methods import run_method
from verify.options import Options
from verify.results import SolverStatus, Verdict
from verify.spec import InputBox, OutputSpec, Property, robustness_property

from conftest import random_network


def _case(seed: int, dims: tuple[int, ...], eps: float) -> tuple:
    net = random_network(seed, dims)
    x = np.random.default_rng(seed).uniform(0.2, 0.8, dims[0])
    label = int(np.argmax(net.forward(x)))
    return net, robustness_property(x, label, eps, (net.domain_lower, net.domain_upper), net.out_dim)


def _check_answer(net, prop, res) -> None:  # type: ignore[no-untyped-def]
    if res.verdict is Verdict.CERTIFIED:
        check = check_proof(net, prop, res.extra["proof"])
        assert check.ok, check.message
    if res.verdict is Verdict.FALSIFIED:
        x = res.counterexample
        assert prop.box.contains(x) and prop.output.violated(net.forward(x[None]))[0]


@pytest.mark.parametrize("split,seed", [("relu", s) for s in range(10)] + [("input", s) for s in range(6)])
def test_bab_decides_like_the_milp(seed, split):
    dims = (4, 16, 16, 3) if split == "input" else (12, 16, 16, 3)
    for eps in (0.1, 0.3):
        net, prop = _case(seed, dims, eps)
        res = run_method("bab", net, prop, Options(time_limit=30, bab_split=split))
        exact = run_method("exact", net, prop, Options(time_limit=60))
        assert res.verdict in (Verdict.CERTIFIED, Verdict.FALSIFIED), res.message  # small nets: decided
        _check_answer(net, prop, res)
        if exact.verdict is Verdict.FALSIFIED:
            assert res.verdict is Verdict.FALSIFIED
        if exact.verdict is Verdict.CERTIFIED:
            assert res.verdict is Verdict.CERTIFIED
            # every closing bound is a lower bound of the margin on its region: <= the exact minimum
            assert res.bound <= exact.bound + 1e-5


def _relu_proof(seed: int = 8, eps: float = 0.2):  # type: ignore[no-untyped-def]
    net, prop = _case(seed, (12, 16, 16, 3), eps)
    res = certify_bab(net, prop, Options(time_limit=30, bab_split="relu"))
    assert res.verdict is Verdict.CERTIFIED and res.extra["leaves"] > 1, res.message
    return net, prop, res.extra["proof"]


def _region_points(net, prop, proof, node: int, n: int = 4000) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Sampled points of the box lying in a ReLU-split node's region (sign pattern of its path)."""
    rng = np.random.default_rng(node)
    box = prop.box
    pts = rng.uniform(box.lower, box.upper, size=(n, box.dim))
    pts = np.vstack([pts, box.lower, box.upper])
    path, v = [], node
    while v > 0:
        path.append((int(proof.split_layer[v]), int(proof.split_neuron[v]), int(proof.split_sign[v])))
        v = int(proof.parent[v])
    h, keep = pts, np.ones(len(pts), dtype=bool)
    for i, layer in enumerate(net.layers[:-1]):
        z = layer.apply(h)
        for lay, neu, sign in path:
            if lay == i:
                keep &= sign * z[:, neu] >= 0
        h = np.maximum(z, 0.0)
    return pts[keep]


def test_every_closure_bound_is_below_the_sampled_margins_of_its_region():
    from verify.bab.proof_check import _closure_bounds

    net, prop, proof = _relu_proof()
    bounds = _closure_bounds(net, prop.box, proof)
    assert np.all(bounds > 0)
    compared = 0
    for k in range(proof.closure_node.size):
        pts = _region_points(net, prop, proof, int(proof.closure_node[k]))
        if len(pts):
            row = int(proof.closure_row[k])
            margins = prop.output.margins(net.forward(pts))[:, row]
            assert bounds[k] <= margins.min() + 1e-12
            compared += 1
    assert compared >= proof.closure_node.size // 2


def test_tampered_proofs_are_refused():
    net, prop, proof = _relu_proof()
    assert check_proof(net, prop, proof).ok
    leaf_closures = np.flatnonzero(proof.closure_node > 0)
    drop = dataclasses.replace(
        proof, closure_node=np.delete(proof.closure_node, leaf_closures[0]),
        closure_row=np.delete(proof.closure_row, leaf_closures[0]),
        closure_alpha=np.delete(proof.closure_alpha, leaf_closures[0], axis=0),
        closure_beta=np.delete(proof.closure_beta, np.arange(proof.beta_offset[leaf_closures[0]], proof.beta_offset[leaf_closures[0] + 1])),
        beta_offset=np.concatenate([proof.beta_offset[: leaf_closures[0] + 1],
                                    proof.beta_offset[leaf_closures[0] + 2:] - (proof.beta_offset[leaf_closures[0] + 1] - proof.beta_offset[leaf_closures[0]])]),
    )
    assert not check_proof(net, prop, drop).ok
    first, second = (int(v) for v in np.flatnonzero(proof.parent >= 0)[:2])  # the two children of one split
    assert proof.parent[first] == proof.parent[second]
    orphan = dataclasses.replace(proof, parent=np.where(np.arange(proof.n_nodes) == proof.n_nodes - 1,
                                                        proof.parent[first], proof.parent))
    assert not check_proof(net, prop, orphan).ok  # that node now has three children
    same_sign = dataclasses.replace(proof, split_sign=np.where(np.arange(proof.n_nodes) == first,
                                                               proof.split_sign[second], proof.split_sign))
    assert not check_proof(net, prop, same_sign).ok  # the two children no longer cover their parent
    cut = dataclasses.replace(proof, parent=np.where(np.arange(proof.n_nodes) == first, -1, proof.parent))
    assert not check_proof(net, prop, cut).ok  # a subtree made a tree of its own does not cover the box
    wider = Property(InputBox(prop.box.lower, np.minimum(prop.box.upper + 0.01, 1.0)), prop.output)
    assert not check_proof(net, wider, proof).ok
    other = random_network(99, (12, 16, 16, 3))
    assert not check_proof(other, prop, proof).ok


def test_a_fabricated_proof_of_a_false_property_does_not_check():
    net, prop = _case(0, (12, 16, 16, 3), 0.3)  # the MILP finds a counterexample here
    assert run_method("exact", net, prop, Options(time_limit=60)).verdict is Verdict.FALSIFIED
    _, _, proof = _relu_proof()
    rng = np.random.default_rng(0)
    n_slopes = proof.closure_alpha.shape[1]
    rows = np.arange(prop.output.n_margins)
    fake = dataclasses.replace(
        proof, network_hash=net.digest(), lower=prop.box.lower, upper=prop.box.upper, C=prop.output.C, d=prop.output.d,
        groups=prop.output.groups, parent=np.array([-1]), split_layer=np.array([-1]), split_neuron=np.array([-1]),
        split_sign=np.array([0], np.int8), split_value=np.zeros(1), closure_node=np.zeros(rows.size, np.int64),
        closure_row=rows, closure_alpha=rng.integers(0, 256, (rows.size, n_slopes)).astype(np.uint8),
        closure_beta=np.zeros(0, np.float32), beta_offset=np.zeros(rows.size + 1, np.int64),
    )
    assert not check_proof(net, prop, fake).ok


def test_proof_file_round_trip(tmp_path):
    net, prop, proof = _relu_proof()
    path = tmp_path / "p.npz"
    save_proof(proof, path)
    back = load_proof(path)
    assert back.kind is ProofKind.RELU_SPLIT and check_proof(net, prop, back).ok
    (tmp_path / "junk.npz").write_bytes(b"not a proof")
    from verify.bab import ProofError

    with pytest.raises(ProofError):
        load_proof(tmp_path / "junk.npz")


def test_misclassified_centre_is_falsified_at_once():
    net, prop = _case(2, (12, 16, 3), 0.05)
    wrong = (int(np.argmax(net.forward(prop.center))) + 1) % 3
    bad = robustness_property(prop.center, wrong, 0.05, (net.domain_lower, net.domain_upper), 3)
    res = certify_bab(net, bad, Options())
    assert res.verdict is Verdict.FALSIFIED and np.array_equal(res.counterexample, prop.center)


def test_point_box_and_single_disjunct():
    net, prop = _case(3, (12, 16, 16, 3), 0.0)  # no unstable neuron: decided at the root
    res = certify_bab(net, prop, Options(bab_split="relu"))
    assert res.verdict is Verdict.CERTIFIED and check_proof(net, prop, res.extra["proof"]).ok
    one = OutputSpec(prop.output.C[:1], prop.output.d[:1], ((0,),))
    single = Property(prop.box, one, prop.center)
    res = certify_bab(net, single, Options(bab_split="relu"))
    assert res.verdict is Verdict.CERTIFIED and check_proof(net, single, res.extra["proof"]).ok


def test_timeout_gives_unknown_with_a_sound_bound():
    net, prop = _case(4, (40, 64, 64, 64, 5), 0.25)
    res = certify_bab(net, prop, Options(timeout=0.5, bab_split="relu", bab_batch=4))
    pts = np.random.default_rng(0).uniform(prop.box.lower, prop.box.upper, size=(20000, prop.box.dim))
    worst = min(prop.output.margins(net.forward(pts)).min(axis=0))  # every row's sampled minimum, one-row groups
    if res.verdict is Verdict.UNKNOWN:
        assert res.status is SolverStatus.TIME_LIMIT and res.time_s < 5
        assert res.bound <= worst
    else:
        _check_answer(net, prop, res)
