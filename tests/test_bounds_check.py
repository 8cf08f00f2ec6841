"""The checkers re-derive pre-activation bounds: a certificate with tampered (too tight) bounds cannot
produce a bound above the true minimum, even when the tampered bounds contain every sampled point."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import random_network

from verify.bounds import preactivation_bounds
from verify.bounds_check import confirmed_bounds
from verify.certificate import check_lp_certificate_all, check_sdp_certificate
from verify.network import Affine, Network, ReLU
from verify.options import Options
from verify.relax.lp import lp_margin_bounds
from verify.relax.sdp import sdp_margin_bounds
from verify.spec import InputBox, OutputSpec, robustness_property


def corner_net() -> tuple[Network, InputBox, OutputSpec]:
    """margin = 1 - 2 relu(10 x1 + 10 x2 - 19) on [0,1]^2: positive except near the corner (1, 1), min -1."""
    ops = [Affine(np.array([[10.0, 10.0]]), np.array([-19.0])), ReLU(), Affine(np.array([[-2.0]]), np.array([1.0]))]
    net = Network.from_ops(ops, (2,), (0.0, 1.0))
    box = InputBox(np.zeros(2), np.ones(2))
    return net, box, OutputSpec(np.eye(1), np.zeros(1), ((0,),))


def test_tampered_bounds_cannot_certify_lp_or_sdp() -> None:
    net, box, spec = corner_net()
    true_min = -1.0
    _, _, lp_cert = lp_margin_bounds(net, box, spec, Options(bounds="interval"))
    fake = (np.array([-19.0]),), (np.array([-0.5]),)  # says "always inactive": the margin would be 1
    tampered = replace(lp_cert, lower=fake[0], upper=fake[1])
    assert check_lp_certificate_all(net, box, spec.C, spec.d, tampered)[0] <= true_min + 1e-9
    _, _, sdp_certs = sdp_margin_bounds(net, box, spec, Options(bounds="interval"))
    cert = sdp_certs[0]
    forged = replace(cert, hidden_lower=fake[0], hidden_upper=fake[1])
    try:
        value = check_sdp_certificate(net, box, spec.C[0], float(spec.d[0]), forged)
    except ValueError:
        value = -np.inf  # a certificate that no longer fits is rejected
    assert value <= true_min + 1e-9


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("method", ["interval", "crown"])
def test_confirmed_bounds_keep_correct_bounds_and_contain_samples(seed: int, method: str) -> None:
    net = random_network(seed, (5, 12, 12, 12, 3))
    x = np.random.default_rng(seed).uniform(0.2, 0.8, 5)
    prop = robustness_property(x, 0, 0.1, (net.domain_lower, net.domain_upper), 3)
    pre = preactivation_bounds(net, prop.box, method)
    lower, upper = tuple(l for l, _ in pre[:-1]), tuple(u for _, u in pre[:-1])
    cl, cu = confirmed_bounds(net, prop.box, lower, upper)
    for a, b, c, d in zip(cl, lower, cu, upper):
        assert np.all(a <= b) and np.all(c >= d)  # a hull
        assert np.all(b - a <= 1e-8 * (1 + np.abs(b))) and np.all(c - d <= 1e-8 * (1 + np.abs(d)))  # barely widened
    # fully wrong bounds are replaced by sound ones: sampled pre-activations lie inside
    zero = tuple(np.zeros_like(l) for l in lower)
    zl, zu = confirmed_bounds(net, prop.box, zero, zero)
    xs = np.random.default_rng(1).uniform(prop.box.lower, prop.box.upper, (4000, 5))
    h = xs
    for i, layer in enumerate(net.layers[:-1]):
        h = layer.apply(h)
        assert np.all(h >= zl[i] - 1e-12) and np.all(h <= zu[i] + 1e-12)
        h = np.maximum(h, 0.0)
