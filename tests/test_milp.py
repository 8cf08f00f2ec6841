"""Exact MILP: below every sampled value, attained by its own argmin, above the LP; verdicts re-checked."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_network

from verify.options import Options
from verify.relax.lp import lp_margin_bounds
from verify.relax.milp import certify_exact, exact_group, exact_margins
from verify.bounds import preactivation_bounds
from verify.results import SolverStatus, Verdict
from verify.spec import InputBox, OutputSpec, robustness_property


def _lipschitz(net) -> float:
    return float(np.prod([np.linalg.norm(layer.dense_weight(), 2) for layer in net.layers]))


@pytest.mark.parametrize("seed", range(4))
def test_milp_matches_dense_grid_on_2d_net(seed):
    net = random_network(seed, (2, 8, 8, 3))
    box = InputBox(np.array([0.1, 0.2]), np.array([0.7, 0.9]))
    spec = OutputSpec(np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]]), np.array([0.1, -0.2]), ((0,), (1,)))
    exact, status = exact_margins(net, box, spec, Options(bounds="interval"))
    assert status is SolverStatus.OPTIMAL
    n = 401
    g = np.stack(np.meshgrid(np.linspace(0.1, 0.7, n), np.linspace(0.2, 0.9, n)), -1).reshape(-1, 2)
    grid = spec.margins(net.forward(g)).min(axis=0)
    h = 0.7 / (n - 1)  # any point of the box is within h/sqrt(2)*... of a grid point (L2 <= h)
    lip = _lipschitz(net) * np.linalg.norm(spec.C, axis=1)
    assert np.all(exact <= grid + 1e-9)
    assert np.all(grid - exact <= lip * h + 1e-6)
    for k in range(2):
        pre = preactivation_bounds(net, box, "interval")
        res = exact_group(net, box, spec.C[k : k + 1], spec.d[k : k + 1], pre, Options())
        # the argmin, re-evaluated on the network, attains the MILP value
        assert res.incumbent_value == pytest.approx(res.lower, abs=1e-5)
        assert box.contains(res.incumbent_x)


@pytest.mark.parametrize("seed", range(4))
def test_lp_below_milp_below_samples(seed):
    net = random_network(seed, (5, 10, 10, 3))
    x = np.random.default_rng(seed).uniform(0.2, 0.8, 5)
    prop = robustness_property(x, int(np.argmax(net.forward(x))), 0.15, (net.domain_lower, net.domain_upper), 3)
    opts = Options(bounds="crown")
    lp, _, _ = lp_margin_bounds(net, prop.box, prop.output, opts)
    exact, status = exact_margins(net, prop.box, prop.output, opts)
    assert status is SolverStatus.OPTIMAL
    xs = np.random.default_rng(1).uniform(prop.box.lower, prop.box.upper, (20000, 5))
    sampled = prop.output.margins(net.forward(xs)).min(axis=0)
    assert np.all(lp <= exact + 1e-6)
    assert np.all(exact <= sampled + 1e-9)


def test_group_of_rows_is_min_of_max():
    net = random_network(5, (3, 8, 8, 4))
    box = InputBox(np.full(3, 0.2), np.full(3, 0.6))
    C = np.array([[1.0, -1.0, 0, 0], [1.0, 0, -1.0, 0], [0, 1.0, 0, -1.0]])
    d = np.array([0.0, 0.1, -0.1])
    pre = preactivation_bounds(net, box, "interval")
    res = exact_group(net, box, C, d, pre, Options())
    per_row, _ = exact_margins(net, box, OutputSpec(C, d, ((0,), (1,), (2,))), Options())
    xs = np.random.default_rng(0).uniform(box.lower, box.upper, (20000, 3))
    sampled = (net.forward(xs) @ C.T + d).max(axis=1).min()
    assert per_row.max() <= res.lower + 1e-6  # min max >= max min
    assert res.lower <= sampled + 1e-9
    assert res.incumbent_value == pytest.approx(res.lower, abs=1e-5)


def test_certify_exact_verdicts():
    seen = set()
    for seed in range(8):
        net = random_network(seed, (4, 8, 8, 3))
        x = np.random.default_rng(seed).uniform(0.2, 0.8, 4)
        for eps in (0.02, 0.3):
            prop = robustness_property(x, int(np.argmax(net.forward(x))), eps, (net.domain_lower, net.domain_upper), 3)
            res = certify_exact(net, prop, Options())
            seen.add(res.verdict)
            if res.verdict is Verdict.FALSIFIED:
                assert prop.box.contains(res.counterexample)
                assert prop.output.violated(net.forward(res.counterexample[None]))[0]
            else:
                assert res.verdict is Verdict.CERTIFIED  # exact: always decides on small nets
                xs = np.random.default_rng(0).uniform(prop.box.lower, prop.box.upper, (5000, 4))
                assert not prop.output.violated(net.forward(xs)).any()
    assert seen == {Verdict.CERTIFIED, Verdict.FALSIFIED}


def test_falsified_bound_is_the_worst_case_not_one_groups_optimum():
    """Issue 12 item 1: the incumbent of one group's MILP can violate another group; the record's bound
    must still be a lower bound on the property's worst-case margin (it was that group's optimum, > 0)."""
    net = random_network(5, (3, 6, 4))
    x = np.random.default_rng(5).uniform(0.2, 0.8, 3)
    prop = robustness_property(x, int(np.argmax(net.forward(x))), 0.4, (net.domain_lower, net.domain_upper), 4)
    res = certify_exact(net, prop, Options())
    assert res.verdict is Verdict.FALSIFIED
    xs = np.vstack([res.counterexample, np.random.default_rng(0).uniform(prop.box.lower, prop.box.upper, (20000, 3))])
    margins = prop.output.margins(net.forward(xs))
    worst = np.array([min(row[list(g)].max() for g in prop.output.groups) for row in margins])
    assert res.bound <= worst.min() + 1e-9 and res.bound <= 0
    assert worst[0] <= 0  # the counterexample is real
    assert np.all(res.margin_bounds <= margins.min(axis=0) + 1e-9)  # every row: below its sampled minimum
