"""The SDP at MNIST scale (rsl18 pgd_nn, 784-200-100-50-10, from ../shared): one margin solved to
convergence by the interior-point backend, bracketed by its primal value, below what PGD attains, and
re-derived by the independent checker. About 10 s."""

from __future__ import annotations

import numpy as np

from conftest import mnist_test, rsl18
from verify.attack import pgd_attack
from verify.bounds import preactivation_bounds
from verify.certificate import check_sdp_certificate
from verify.options import Options
from verify.relax.sdp import solve_row
from verify.relax.sdp_model import build_relaxation
from verify.results import SolverStatus
from verify.solvers.sdp_dual import solve_form
from verify.spec import OutputSpec, Property, robustness_property


def test_pgd_nn_margin_converges_below_the_attack_and_checks():
    xs, ys = mnist_test(1)
    net = rsl18("pgd_nn")
    prop = robustness_property(xs[0], int(ys[0]), 0.1, (net.domain_lower, net.domain_upper), net.out_dim)
    options = Options()
    rel = build_relaxation(net, prop.box, preactivation_bounds(net, prop.box, "crown", options))
    assert rel.n0 == 784 and rel.n_unstable > 50
    c, d = prop.output.C[0], float(prop.output.d[0])
    sol = solve_form(rel.form(rel.objective(c, d)), 60.0, 100)
    assert sol.status is SolverStatus.OPTIMAL
    assert 0.0 <= sol.gap <= 1e-3  # the primal value is within 1e-3 above the sound bound
    # PGD on this one margin: any point's margin is >= the SDP bound
    one = Property(prop.box, OutputSpec(c[None], np.array([d]), ((0,),), prop.output.label))
    attack = pgd_attack(net, one, options.with_(attack_restarts=3))
    assert sol.bound <= attack.bound
    cert = solve_row(rel, c, d, options.with_(sdp_triangle=False), None)
    assert abs(check_sdp_certificate(net, prop.box, c, d, cert) - sol.bound) <= 1e-6 * (1 + abs(sol.bound))
