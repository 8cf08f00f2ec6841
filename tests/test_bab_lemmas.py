"""Branch-and-bound lemmas: hidden-layer bounds tightened by split trees, re-derived by the numpy checker."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from verify.bab import check_proof, load_proof, save_proof
from verify.bab.lemma_check import confirmed_with_lemmas, truncated
from verify.bab.method import Falsifier, _search, settings_from
from verify.bab.refine import refine_hidden
from verify.bounds import preactivation_bounds
from verify.budget import Budget
from verify.lp_dual import CertificateError
from verify.methods import run_method
from verify.options import Options
from verify.relax.milp import exact_group
from verify.results import Verdict
from verify.spec import robustness_property

from conftest import random_network

DIMS = (10, 14, 14, 14, 3)


@functools.lru_cache(maxsize=None)  # shared by the tests below (the arrays are not modified)
def _refined(seed: int, eps: float = 0.3, seconds: float = 1.5):  # type: ignore[no-untyped-def]
    net = random_network(seed, DIMS)
    x = np.random.default_rng(seed).uniform(0.2, 0.8, DIMS[0])
    prop = robustness_property(x, int(np.argmax(net.forward(x))), eps, (net.domain_lower, net.domain_upper), net.out_dim)
    options = Options(time_limit=30)
    proved = preactivation_bounds(net, prop.box, "alpha-crown", options)
    refined = refine_hidden(net, prop.box, proved.proof, settings_from(options), seconds, "cpu", 60, 0.1)
    return net, prop, proved, refined


def _preactivations(net, pts: np.ndarray) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    out, h = [], pts
    for layer in net.layers[:-1]:
        z = layer.apply(h)
        out.append(z)
        h = np.maximum(z, 0.0)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_lemma_bounds_contain_every_sample_and_every_attained_value(seed):
    net, prop, proved, refined = _refined(seed)
    plain_l, plain_u = confirmed_with_lemmas(net, prop.box, proved.proof, ())
    for (l, u), pl, pu in zip(refined.hidden, plain_l, plain_u):  # never looser than without lemmas
        assert np.all(l >= pl) and np.all(u <= pu)
    rng = np.random.default_rng(seed)
    pts = np.vstack([rng.uniform(prop.box.lower, prop.box.upper, (4000, net.in_dim)), prop.box.lower, prop.box.upper])
    for z, (l, u) in zip(_preactivations(net, pts), refined.hidden):
        assert np.all(z >= l[None] - 1e-12) and np.all(z <= u[None] + 1e-12)
    # the exact extremes of the tightened neurons (MILP incumbents: attained values) are never cut off
    options = Options(time_limit=30)
    for k in range(1, len(refined.hidden)):
        l, u = refined.hidden[k]
        moved = np.flatnonzero((l > plain_l[k] + 1e-9) | (u < plain_u[k] - 1e-9))[:4]
        sub = truncated(net, k)
        for j in moved:
            for sign in (1.0, -1.0):
                c = np.zeros((1, sub.out_dim))
                c[0, j] = sign
                exact = exact_group(sub, prop.box, c, np.zeros(1), list(refined.hidden[:k]), options)
                assert sign * (l[j] if sign > 0 else u[j]) <= exact.incumbent_value + 1e-9


def test_lemmas_tighten_something_and_recheck_exactly():
    tightened = 0
    for seed in range(4):
        net, prop, proved, refined = _refined(seed)
        assert sum(refined.unstable_after) <= sum(refined.unstable_before)
        tightened += sum(refined.unstable_before) - sum(refined.unstable_after)
        lows, highs = confirmed_with_lemmas(net, prop.box, proved.proof, refined.lemmas)
        for (l, u), cl, cu in zip(refined.hidden, lows, highs):  # the search used the checker's own numbers
            assert np.array_equal(l, cl) and np.array_equal(u, cu)
    assert tightened > 0


@functools.lru_cache(maxsize=None)
def _with_lemmas(seed: int = 1):  # type: ignore[no-untyped-def]
    net, prop, proved, refined = _refined(seed, eps=0.3)
    options = Options(time_limit=30, bab_split="relu")
    budget = Budget.start(30)
    res = _search(net, prop, options, Falsifier(net, prop, options, None, budget), refined.hidden, proved.proof,
                  refined.lemmas, budget, 0.0)
    return net, prop, res


def test_search_on_lemma_bounds_decides_like_the_milp(tmp_path):
    decided = 0
    for seed in range(3):
        net, prop, res = _with_lemmas(seed)
        exact = run_method("exact", net, prop, Options(time_limit=60))
        if res.verdict is Verdict.CERTIFIED:
            proof = res.extra["proof"]
            assert proof.lemmas and check_proof(net, prop, proof).ok
            assert exact.verdict is Verdict.CERTIFIED and res.bound <= exact.bound + 1e-5
            save_proof(proof, tmp_path / "p.npz")
            again = load_proof(tmp_path / "p.npz")
            assert len(again.lemmas) == len(proof.lemmas) and check_proof(net, prop, again).ok
            decided += 1
        elif res.verdict is Verdict.FALSIFIED:
            assert exact.verdict is Verdict.FALSIFIED
            decided += 1
    assert decided >= 2


def _certified_with_lemmas():  # type: ignore[no-untyped-def]
    for seed in range(6):
        net, prop, res = _with_lemmas(seed)
        if res.verdict is Verdict.CERTIFIED and any(lem.closure_node.size for lem in res.extra["proof"].lemmas):
            return net, prop, res.extra["proof"]
    pytest.fail("no certified property with lemmas among the random nets")


def test_tampered_lemmas_are_refused_or_only_loosen():
    net, prop, proof = _certified_with_lemmas()
    lows, highs = confirmed_with_lemmas(net, prop.box, proof.root_bounds, proof.lemmas)
    lemma = proof.lemmas[0]
    # a lemma for another box or network, or a tree whose node has one child, is refused
    shifted = dataclasses.replace(lemma, upper=lemma.upper + 0.01)
    with pytest.raises(CertificateError):
        confirmed_with_lemmas(net, prop.box, proof.root_bounds, (shifted,) + proof.lemmas[1:])
    assert not check_proof(net, prop, dataclasses.replace(proof, lemmas=(shifted,) + proof.lemmas[1:])).ok
    # complex rows (|1j| == 1, and numpy orders complex numbers) or float indices are refused, not evaluated
    for bad in (dataclasses.replace(lemma, C=lemma.C * 1j), dataclasses.replace(lemma, parent=lemma.parent.astype(float))):
        with pytest.raises(CertificateError):
            confirmed_with_lemmas(net, prop.box, proof.root_bounds, (bad,) + proof.lemmas[1:])
        assert not check_proof(net, prop, dataclasses.replace(proof, lemmas=(bad,) + proof.lemmas[1:])).ok
    if lemma.n_nodes > 2:
        child = int(np.flatnonzero(lemma.parent >= 0)[-1])
        orphan = dataclasses.replace(lemma, split_sign=np.where(np.arange(lemma.n_nodes) == child, -lemma.split_sign[child],
                                                                 lemma.split_sign))
        with pytest.raises(CertificateError):
            confirmed_with_lemmas(net, prop.box, proof.root_bounds, (orphan,) + proof.lemmas[1:])
    # dropping every closure: the lemma proves nothing and the bounds fall back to the plain ones
    empty = dataclasses.replace(lemma, closure_node=lemma.closure_node[:0], closure_row=lemma.closure_row[:0],
                                closure_alpha=lemma.closure_alpha[:0], closure_beta=lemma.closure_beta[:0],
                                beta_offset=lemma.beta_offset[:1])
    el, eh = confirmed_with_lemmas(net, prop.box, proof.root_bounds, (empty,) + proof.lemmas[1:])
    k = len(lemma.unstable)
    assert np.all(el[k] <= lows[k]) and np.all(eh[k] >= highs[k])
    # huge betas are still valid multipliers: bounds stay sound (they may only loosen)
    wild = dataclasses.replace(lemma, closure_beta=lemma.closure_beta * 0 + 1e3)
    wl, wh = confirmed_with_lemmas(net, prop.box, proof.root_bounds, (wild,) + proof.lemmas[1:])
    pts = np.random.default_rng(0).uniform(prop.box.lower, prop.box.upper, (4000, net.in_dim))
    for z, l, u in zip(_preactivations(net, pts), wl, wh):
        assert np.all(z >= l[None] - 1e-12) and np.all(z <= u[None] + 1e-12)
