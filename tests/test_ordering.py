"""Per margin, on many seeded random nets and a real one:
IBP <= LP(interval),  CROWN <= LP(crown) <= exact MILP <= best attack value <= sampled values,
alpha-CROWN <= LP(alpha-crown) and LP <= LP-ALL <= MILP. A violation beyond solver tolerance fails."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import mnist_test, random_network, rsl18

from verify.bounds.method import certify_with_bounds
from verify.options import Options
from verify.relax.lp import certify_lp, lp_margin_bounds
from verify.relax.milp import exact_margins
from verify.results import Verdict
from verify.spec import robustness_property

TOL = 1e-5  # the MILP value carries a ~1e-6 * scale allowance for HiGHS tolerances


def _attack():
    try:
        from verify.attack import pgd_attack
    except ImportError:
        return None
    return pgd_attack


def _prop(net, x, eps):
    label = int(np.argmax(net.forward(x)))
    return robustness_property(x, label, eps, (net.domain_lower, net.domain_upper), net.out_dim)


def _sampled(net, prop, n=10000, seed=0):
    xs = np.random.default_rng(seed).uniform(prop.box.lower, prop.box.upper, (n, prop.box.dim))
    return prop.output.margins(net.forward(xs)).min(axis=0)


def _chain(net, prop, with_milp=True):
    opts = Options(attack_restarts=3, attack_steps=40)
    out = {}
    for method, bounds in (("ibp", "interval"), ("crown", "crown"), ("alpha-crown", "alpha-crown")):
        out[method] = certify_with_bounds(net, prop, method, opts.with_(bounds=bounds)).margin_bounds
        out["lp-" + bounds] = lp_margin_bounds(net, prop.box, prop.output, opts.with_(bounds=bounds))[0]
    if with_milp:
        out["lp-all"] = lp_margin_bounds(net, prop.box, prop.output, opts.with_(bounds="crown", lp_layerwise=True))[0]
        out["exact"] = exact_margins(net, prop.box, prop.output, opts.with_(bounds="crown"))[0]
    attack = _attack()
    if attack is not None:
        out["attack"] = attack(net, prop, opts).margin_bounds
    out["sampled"] = _sampled(net, prop)
    return out


def _assert_order(v: dict) -> None:
    pairs = [("ibp", "lp-interval"), ("crown", "lp-crown"), ("alpha-crown", "lp-alpha-crown"),
             ("lp-crown", "lp-all"), ("lp-all", "exact"), ("lp-interval", "exact"), ("lp-alpha-crown", "exact"),
             ("exact", "attack"), ("exact", "sampled"), ("lp-crown", "sampled"), ("lp-interval", "sampled")]
    for lo, hi in pairs:
        if lo in v and hi in v:
            assert np.all(v[lo] <= v[hi] + TOL * (1 + np.abs(v[hi]))), (lo, hi, v[lo], v[hi])
    if "attack" in v:  # the attack's best per-row margins are real values, so above the exact minimum
        assert np.all(v["attack"] >= v.get("exact", v["lp-crown"]) - TOL)


@pytest.mark.parametrize("seed", range(10))
def test_ordering_random_nets(seed):
    dims = [(4, 10, 10, 3), (6, 16, 12, 5), (3, 8, 8, 8, 4)][seed % 3]
    net = random_network(seed, dims)
    x = np.random.default_rng(seed).uniform(0.2, 0.8, dims[0])
    prop = _prop(net, x, [0.03, 0.1, 0.2][seed % 3])
    _assert_order(_chain(net, prop))


def test_ordering_real_network_lp_only():
    """grad_nn (784-500-10) on one MNIST image: bound propagation <= LP <= attack/samples (no MILP)."""
    net = rsl18("grad_nn")
    xs, ys = mnist_test(1)
    for x in xs:
        prop = _prop(net, x, 0.05)
        v = _chain(net, prop, with_milp=False)
        _assert_order(v)


def test_lp_never_certifies_a_falsified_property():
    attack = _attack()
    if attack is None:
        pytest.skip("verify.attack not available yet")
    n_false = 0
    for seed in range(12):
        net = random_network(seed, (4, 10, 10, 3))
        prop = _prop(net, np.full(4, 0.5), 0.25)
        att = attack(net, prop, Options())
        if att.verdict is Verdict.FALSIFIED:
            n_false += 1
            assert certify_lp(net, prop, Options()).verdict is not Verdict.CERTIFIED
    assert n_false > 0
