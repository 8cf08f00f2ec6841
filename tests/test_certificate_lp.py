"""The independent LP certificate checker: reproduces the LP optimum, never exceeds it, rejects bad data."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import random_network

from verify.certificate import CertificateError, check_lp_certificate, check_lp_certificate_all
from verify.options import Options
from verify.relax.lp import lp_margin_bounds
from verify.results import SolverStatus
from verify.spec import robustness_property


def _setup(seed: int, eps: float = 0.15, dims=(4, 10, 10, 3)):
    net = random_network(seed, dims)
    x = np.random.default_rng(seed).uniform(0.2, 0.8, dims[0])
    label = int(np.argmax(net.forward(x)))
    prop = robustness_property(x, label, eps, (net.domain_lower, net.domain_upper), dims[-1])
    bounds, status, cert = lp_margin_bounds(net, prop.box, prop.output, Options(bounds="interval"))
    assert status is SolverStatus.OPTIMAL
    return net, prop, bounds, cert


def _sampled_min(net, prop, n=20000, seed=0):
    xs = np.random.default_rng(seed).uniform(prop.box.lower, prop.box.upper, (n, prop.box.dim))
    return prop.output.margins(net.forward(xs)).min(axis=0)


@pytest.mark.parametrize("seed", range(6))
def test_checker_matches_solver_optimum_and_sampling(seed):
    net, prop, bounds, cert = _setup(seed)
    # strong duality: the checked dual bound equals the primal LP optimum up to solver tolerance
    assert np.all(np.abs(bounds - cert.primal) <= 1e-6 * (1 + np.abs(cert.primal)))
    assert np.all(bounds <= cert.primal + 1e-9)  # rounding slack keeps it on the safe side
    assert np.all(bounds <= _sampled_min(net, prop) + 1e-9)
    for k in range(prop.output.n_margins):
        row = (prop.output.C[k], prop.output.d[k])
        assert check_lp_certificate(net, prop.box, row, cert) == pytest.approx(bounds[k], abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_perturbed_multipliers_only_weaken(seed):
    net, prop, bounds, cert = _setup(seed)
    rng = np.random.default_rng(100 + seed)
    for trial in range(30):
        scale = 10.0 ** rng.uniform(-6, 0)
        noisy = lambda arrs: tuple(a + scale * rng.normal(size=a.shape) * (1 + np.abs(a)) for a in arrs)  # noqa: E731
        bad = replace(cert, lam=noisy(cert.lam), alpha=noisy(cert.alpha), beta=noisy(cert.beta), gamma=noisy(cert.gamma))
        got = check_lp_certificate_all(net, prop.box, prop.output.C, prop.output.d, bad)
        assert np.all(got <= cert.primal + 1e-9), (trial, got, cert.primal)
        assert np.all(got <= bounds + 1e-9)


def test_cannot_be_pushed_above_the_optimum_by_search():
    """Coordinate search on the multipliers maximizing the checked value stays below the LP optimum."""
    net, prop, bounds, cert = _setup(3)
    rng = np.random.default_rng(7)
    best, cur = bounds.copy(), cert
    for _ in range(200):
        i = rng.integers(len(cur.lam))
        field = ("lam", "alpha", "beta", "gamma")[rng.integers(4)]
        arrs = list(getattr(cur, field))
        arrs[i] = arrs[i] + 0.05 * rng.normal(size=arrs[i].shape)
        cand = replace(cur, **{field: tuple(arrs)})
        val = check_lp_certificate_all(net, prop.box, prop.output.C, prop.output.d, cand)
        if np.all(val >= best):
            best, cur = val, cand
    assert np.all(best <= cert.primal + 1e-9)
    assert np.all(best <= _sampled_min(net, prop) + 1e-9)


def test_wrong_signs_are_projected_not_trusted():
    net, prop, bounds, cert = _setup(1)
    flipped = replace(cert, beta=tuple(-a - 5.0 for a in cert.beta), gamma=tuple(-a - 5.0 for a in cert.gamma))
    got = check_lp_certificate_all(net, prop.box, prop.output.C, prop.output.d, flipped)
    assert np.all(got <= bounds + 1e-9)


def test_nan_multipliers_give_minus_infinity():
    net, prop, _, cert = _setup(2)
    lam = list(cert.lam)
    lam[0] = lam[0].copy()
    lam[0][0, 0] = np.nan
    got = check_lp_certificate_all(net, prop.box, prop.output.C, prop.output.d, replace(cert, lam=tuple(lam)))
    assert got[0] == -np.inf


def test_unsound_preactivation_bounds_are_rejected():
    net, prop, _, cert = _setup(4)
    lower = list(cert.lower)
    lower[0] = np.full_like(lower[0], 50.0)  # excludes the centre's pre-activations
    upper = list(cert.upper)
    upper[0] = np.full_like(upper[0], 60.0)
    with pytest.raises(CertificateError, match="exclude"):
        check_lp_certificate_all(net, prop.box, prop.output.C, prop.output.d, replace(cert, lower=tuple(lower), upper=tuple(upper)))


def test_mismatched_shapes_and_rows_raise():
    net, prop, _, cert = _setup(5)
    other = random_network(9, (4, 7, 3))
    with pytest.raises(CertificateError):
        check_lp_certificate_all(other, prop.box, prop.output.C, prop.output.d, cert)
    with pytest.raises(CertificateError, match="no multipliers"):
        check_lp_certificate(net, prop.box, (np.array([1.0, 1.0, 1.0]), 0.0), cert)


def test_checker_uses_given_row_not_stored_one():
    """Checking a shifted margin (d + 1) with the same multipliers shifts the bound by exactly ~1."""
    net, prop, bounds, cert = _setup(0)
    c, d = prop.output.C[0], prop.output.d[0]
    shifted = check_lp_certificate(net, prop.box, (c, d + 1.0), cert, index=0)
    assert shifted == pytest.approx(bounds[0] + 1.0, abs=1e-9)
