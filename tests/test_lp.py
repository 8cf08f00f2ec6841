"""Triangle LP: sound (below sampled margins), tighter than IBP/CROWN, backends agree, LP-ALL tightens."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_network

from verify.bounds import preactivation_bounds
from verify.bounds.method import certify_with_bounds
from verify.options import Options
from verify.relax.lp import certify_lp, lp_margin_bounds, tighten_layerwise
from verify.results import SolverStatus, Verdict
from verify.spec import OutputSpec, robustness_property

TOL = 1e-7


def _prop(net, seed, eps):
    x = np.random.default_rng(seed).uniform(0.2, 0.8, net.in_dim)
    label = int(np.argmax(net.forward(x)))
    return robustness_property(x, label, eps, (net.domain_lower, net.domain_upper), net.out_dim)


def _sampled_min(net, prop, n=20000, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(prop.box.lower, prop.box.upper, (n, prop.box.dim))
    corners = np.where(rng.random((n // 4, prop.box.dim)) < 0.5, prop.box.lower, prop.box.upper)
    return prop.output.margins(net.forward(np.vstack([xs, corners]))).min(axis=0)


@pytest.mark.parametrize("seed", range(8))
def test_lp_between_bound_propagation_and_samples(seed):
    net = random_network(seed, (5, 12, 12, 4))
    prop = _prop(net, seed, eps=[0.05, 0.1, 0.2, 0.3][seed % 4])
    sampled = _sampled_min(net, prop)
    for bounds, method in (("interval", "ibp"), ("crown", "crown")):
        opts = Options(bounds=bounds)
        lp, status, _ = lp_margin_bounds(net, prop.box, prop.output, opts)
        assert status is SolverStatus.OPTIMAL
        closed = certify_with_bounds(net, prop, method, opts).margin_bounds
        assert np.all(closed <= lp + TOL), (method, closed, lp)
        assert np.all(lp <= sampled + 1e-9), (bounds, lp, sampled)


@pytest.mark.parametrize("seed", range(3))
def test_clarabel_agrees_with_highs(seed):
    net = random_network(seed, (4, 8, 8, 3))
    prop = _prop(net, seed, 0.15)
    a, sa, _ = lp_margin_bounds(net, prop.box, prop.output, Options(bounds="interval"))
    b, sb, _ = lp_margin_bounds(net, prop.box, prop.output, Options(bounds="interval", lp_solver="clarabel"))
    assert sa is SolverStatus.OPTIMAL and sb in (SolverStatus.OPTIMAL, SolverStatus.OPTIMAL_INACCURATE)
    assert np.allclose(a, b, atol=1e-5)
    assert np.all(b <= _sampled_min(net, prop) + 1e-9)  # Clarabel's inexact duals are still checked


@pytest.mark.parametrize("seed", range(4))
def test_layerwise_lp_is_at_least_as_tight(seed):
    net = random_network(seed, (4, 10, 10, 10, 3))
    prop = _prop(net, seed, 0.2)
    opts = Options(bounds="interval")
    pre = preactivation_bounds(net, prop.box, "interval", opts)
    tight = tighten_layerwise(net, prop.box, pre, opts)
    for (l0, u0), (l1, u1) in zip(pre, tight):
        assert np.all(l1 >= l0) and np.all(u1 <= u0) and np.all(l1 <= u1)
    plain, _, _ = lp_margin_bounds(net, prop.box, prop.output, opts)
    lp_all, _, _ = lp_margin_bounds(net, prop.box, prop.output, opts.with_(lp_layerwise=True))
    assert np.all(lp_all >= plain - TOL)
    assert np.all(lp_all <= _sampled_min(net, prop) + 1e-9)


def test_tiny_box_lp_is_exact():
    """With every neuron stable the relaxation is the network itself: LP = min over box of a linear map."""
    net = random_network(11, (3, 6, 6, 3))
    prop = _prop(net, 11, 1e-5)
    lp, _, cert = lp_margin_bounds(net, prop.box, prop.output, Options(bounds="interval"))
    assert all(np.all((l >= 0) | (u <= 0)) for l, u in zip(cert.lower, cert.upper))
    corners = np.where(np.indices((2,) * 3).reshape(3, -1).T == 1, prop.box.upper, prop.box.lower)
    exact = prop.output.margins(net.forward(corners)).min(axis=0)
    assert np.allclose(lp, exact, atol=1e-9)


def test_certify_lp_verdicts_are_consistent():
    found = set()
    for seed in range(10):
        net = random_network(seed, (4, 8, 8, 3))
        for eps in (0.01, 0.3):
            prop = _prop(net, seed, eps)
            res = certify_lp(net, prop, Options())
            found.add(res.verdict)
            violated = prop.output.violated(net.forward(np.random.default_rng(0).uniform(
                prop.box.lower, prop.box.upper, (5000, 4)))).any()
            if res.verdict is Verdict.CERTIFIED:
                assert not violated and res.bound > 0
            if res.verdict is Verdict.FALSIFIED:
                assert prop.box.contains(res.counterexample)
                assert prop.output.violated(net.forward(res.counterexample[None]))[0]
    assert Verdict.CERTIFIED in found and Verdict.FALSIFIED in found


def test_bad_spec_is_rejected():
    net = random_network(0)
    prop = _prop(net, 0, 0.1)
    spec = OutputSpec(np.ones((1, 5)), np.zeros(1), ((0,),))
    with pytest.raises(ValueError, match="logit columns"):
        lp_margin_bounds(net, prop.box, spec, Options())


def test_status_mapping_is_strict():
    import highspy

    from verify.solvers.cvxpy_lp import map_status as cvx
    from verify.solvers.highs import map_status as hs

    assert cvx("optimal_inaccurate") is SolverStatus.OPTIMAL_INACCURATE
    assert cvx("user_limit") is SolverStatus.TIME_LIMIT
    assert cvx("something new") is SolverStatus.NUMERICAL_ERROR
    assert hs(highspy.HighsModelStatus.kTimeLimit) is SolverStatus.TIME_LIMIT
    assert hs(highspy.HighsModelStatus.kIterationLimit) is SolverStatus.ITERATION_LIMIT
    assert hs(highspy.HighsModelStatus.kUnknown) is SolverStatus.NUMERICAL_ERROR


def test_time_limited_solve_still_gives_a_sound_bound():
    """A solve stopped early returns non-optimal duals; the checked bound stays below the samples."""
    net = random_network(3, (40, 150, 150, 6))
    prop = _prop(net, 3, 0.1)
    opts = Options(bounds="interval", time_limit=1e-3)
    lb, status, cert = lp_margin_bounds(net, prop.box, prop.output, opts)
    assert np.all(lb <= _sampled_min(net, prop, n=4000) + 1e-9)
    full, _, _ = lp_margin_bounds(net, prop.box, prop.output, opts.with_(time_limit=60.0))
    assert np.all(lb <= full + 1e-9)
    if status is not SolverStatus.OPTIMAL:
        assert any(s is SolverStatus.TIME_LIMIT for s in cert.statuses)


def test_bad_box_and_bounds_are_rejected():
    net = random_network(0)
    prop = _prop(net, 0, 0.1)
    other = _prop(random_network(1, (6, 8, 3)), 0, 0.1)
    with pytest.raises(ValueError, match="input box"):
        lp_margin_bounds(net, other.box, prop.output, Options())
    pre = preactivation_bounds(net, prop.box, "interval")
    with pytest.raises(ValueError, match="pre-activation bounds of layer 1"):
        lp_margin_bounds(net, prop.box, prop.output, Options(), preact=[pre[0], (pre[1][0][:3], pre[1][1][:3]), pre[2]])
