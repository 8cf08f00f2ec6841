"""Bound propagation (IBP, CROWN, alpha-CROWN): soundness by sampling, ordering, batching, gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import verify.bounds.crown
from conftest import mnist_test, random_network, rsl18
from verify.attack import pgd_batch
from verify.bounds import crown_bounds, interval_bounds, margin_lower_bounds, preactivation_bounds, rounding_slack
from verify.bounds.method import certify_batch, certify_with_bounds
from verify.network import Network
from verify.options import Options
from verify.results import Verdict, group_bound
from verify.spec import InputBox, SpecError, robustness_property, robustness_spec

METHODS = ("interval", "crown", "alpha-crown-output", "alpha-crown")
ALPHAS = ("alpha-crown-output", "alpha-crown")
BOUND_OPTIONS = ("interval", "crown", "alpha-crown")  # Options.bounds: pre-activation bounds
OPTS = Options(alpha_steps=15, alpha_lr=0.1)
TOL = 1e-9


def _boxes(rng: np.random.Generator, n: int, dim: int, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = rng.uniform(size=(n, dim))
    return x, np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)


def _margin_spec(rng: np.random.Generator, n: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-input robustness margins for random labels plus random offsets: C (n, m, n_out), d (n, m)."""
    C = np.stack([robustness_spec(int(rng.integers(n_out)), n_out).C for _ in range(n)])
    return C, rng.normal(size=C.shape[:2]) * 0.1


def _samples(lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator, k: int) -> np.ndarray:
    """k uniform points, k random vertices and (for small dims) every vertex of the box [lo, hi]."""
    pts = [lo + rng.uniform(size=(k, lo.size)) * (hi - lo), np.where(rng.uniform(size=(k, lo.size)) < 0.5, lo, hi)]
    if lo.size <= 10:
        pts.append(np.array([np.where(np.array(s), hi, lo) for s in itertools.product([0, 1], repeat=lo.size)]))
    return np.concatenate(pts)


def _all_bounds(chain, lo, hi, C, d, opts=OPTS):
    return {m: margin_lower_bounds(chain, lo, hi, C, d, m, opts).detach().numpy() for m in METHODS}


def _check_margins(net: Network, lo, hi, C, d, bounds: dict, rng, k: int, extra: np.ndarray | None = None) -> None:
    assert np.all(bounds["interval"] <= bounds["crown"] + TOL)
    for alpha in ALPHAS:
        assert np.all(bounds["crown"] <= bounds[alpha] + TOL)
    for n in range(lo.shape[0]):
        pts = _samples(lo[n], hi[n], rng, k)
        if extra is not None:
            pts = np.concatenate([pts, extra[n][None]])
        margins = net.forward(pts) @ C[n].T + d[n]
        for alpha in ALPHAS:
            assert np.all(margins.min(axis=0) >= bounds[alpha][n] - TOL), f"unsound {alpha} bound for box {n}"


@pytest.mark.parametrize("seed", range(12))
def test_random_nets_sound_and_ordered(seed: int) -> None:
    rng = np.random.default_rng(seed)
    dims = [(4, 8, 8, 3), (3, 16, 3), (5, 10, 10, 10, 4), (2, 6, 2)][seed % 4]
    net = random_network(seed, dims, scale=1.5)
    _, lo, hi = _boxes(rng, 6, dims[0], eps=[0.05, 0.2, 0.5][seed % 3])
    C, d = _margin_spec(rng, 6, dims[-1])
    bounds = _all_bounds(net.torch_chain(), torch.tensor(lo), torch.tensor(hi), torch.tensor(C), torch.tensor(d))
    _check_margins(net, lo, hi, C, d, bounds, rng, k=2000)


def test_crown_is_tight_on_a_linear_network() -> None:
    rng = np.random.default_rng(1)
    net = random_network(3, (4, 3))  # one affine map, no ReLU: bounds are exact at a vertex
    _, lo, hi = _boxes(rng, 3, 4, 0.3)
    C, d = _margin_spec(rng, 3, 3)
    lb = margin_lower_bounds(net.torch_chain(), torch.tensor(lo), torch.tensor(hi), torch.tensor(C), torch.tensor(d))
    for n in range(3):
        exact = (net.forward(_samples(lo[n], hi[n], rng, 10)) @ C[n].T + d[n]).min(axis=0)
        np.testing.assert_allclose(lb[n].numpy(), exact, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_preactivation_bounds_contain_samples(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    net = random_network(seed, (5, 12, 12, 12, 3), scale=1.5)
    x = rng.uniform(size=5)
    box = InputBox(np.clip(x - 0.3, 0, 1), np.clip(x + 0.3, 0, 1))
    per_method = {m: preactivation_bounds(net, box, m, OPTS) for m in BOUND_OPTIONS}
    h = _samples(box.lower, box.upper, rng, 3000)
    for k, layer in enumerate(net.layers):
        z = layer.apply(h)
        for m in BOUND_OPTIONS:
            l, u = per_method[m][k]
            assert l.shape == u.shape == (layer.out_dim,)
            assert np.all(z >= l) and np.all(z <= u), f"{m} layer {k} does not contain samples"
        (li, ui), (lc, uc), (la, ua) = (per_method[m][k] for m in BOUND_OPTIONS)
        assert np.all(li <= lc + TOL) and np.all(lc <= la + TOL) and np.all(ua <= uc + TOL) and np.all(uc <= ui + TOL)
        h = np.maximum(z, 0)


@pytest.mark.parametrize("chunk", [None, 1000])
def test_crown_bounds_torch_batched_equals_single(chunk: int | None, monkeypatch) -> None:
    if chunk is not None:  # force many chunks (and the reordering of the batch by cost)
        monkeypatch.setattr(verify.bounds.crown, "CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(7)
    net = random_network(7, (6, 20, 20, 4), scale=1.5)
    chain = net.torch_chain()
    _, lo, hi = _boxes(rng, 8, 6, 0.2)
    C, d = _margin_spec(rng, 8, 4)
    lo_t, hi_t, C_t, d_t = map(torch.tensor, (lo, hi, C, d))
    batch = crown_bounds(chain, lo_t, hi_t)
    ibp = interval_bounds(chain, lo_t, hi_t)
    for method in METHODS:
        full = margin_lower_bounds(chain, lo_t, hi_t, C_t, d_t, method, OPTS)
        for n in range(8):
            one = margin_lower_bounds(chain, lo_t[n : n + 1], hi_t[n : n + 1], C_t[n], d_t[n], method, OPTS)
            np.testing.assert_allclose(full[n].numpy(), one[0].numpy(), rtol=1e-10, atol=1e-10)
    for n in range(8):
        single = crown_bounds(chain, lo_t[n : n + 1], hi_t[n : n + 1])
        for (lb, ub), (ls, us), (li, ui) in zip(batch, single, ibp):
            np.testing.assert_allclose(lb[n].numpy(), ls[0].numpy(), rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(ub[n].numpy(), us[0].numpy(), rtol=1e-10, atol=1e-10)
            assert torch.all(li[n] <= lb[n] + TOL) and torch.all(ub[n] <= ui[n] + TOL)


def test_float32_agrees_with_float64() -> None:
    rng = np.random.default_rng(3)
    net = random_network(11, (8, 32, 32, 5))
    _, lo, hi = _boxes(rng, 5, 8, 0.1)
    C, d = _margin_spec(rng, 5, 5)
    for method in METHODS:
        res = [
            margin_lower_bounds(net.torch_chain(dt), *(torch.tensor(a, dtype=dt) for a in (lo, hi, C, d)), method, OPTS)
            for dt in (torch.float32, torch.float64)
        ]
        assert res[0].dtype == torch.float32
        np.testing.assert_allclose(res[0].double().numpy(), res[1].numpy(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("method", METHODS)
def test_gradients_reach_the_weights(method: str) -> None:
    rng = np.random.default_rng(5)
    net = random_network(5, (6, 16, 16, 4), scale=1.5)
    chain = [(w.clone().requires_grad_(), b.clone().requires_grad_()) for w, b in net.torch_chain()]
    _, lo, hi = _boxes(rng, 4, 6, 0.2)
    C, d = _margin_spec(rng, 4, 4)
    args = (chain, torch.tensor(lo), torch.tensor(hi), torch.tensor(C), torch.tensor(d), method, OPTS)
    lb = margin_lower_bounds(*args)
    assert lb.requires_grad
    (-lb.sum()).backward()
    for w, b in chain:
        assert w.grad is not None and torch.all(torch.isfinite(w.grad)) and torch.all(torch.isfinite(b.grad))
    assert any(float(w.grad.abs().sum()) > 0 for w, _ in chain)
    # the graph reproduces the detached value
    with torch.no_grad():
        again = margin_lower_bounds(*args)
    np.testing.assert_allclose(lb.detach().numpy(), again.numpy(), rtol=1e-9, atol=1e-9)


def test_crown_gradcheck_tiny_net() -> None:
    net = random_network(2, (3, 5, 4, 2), scale=1.5)
    lo, hi = torch.tensor([[0.2, 0.3, 0.1]]), torch.tensor([[0.6, 0.5, 0.7]])
    C = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)
    params = [t.clone().requires_grad_() for wb in net.torch_chain() for t in wb]

    def f(*p):
        chain = list(zip(p[::2], p[1::2]))
        return margin_lower_bounds(chain, lo.double(), hi.double(), C, None, "crown")

    assert torch.autograd.gradcheck(f, params, eps=1e-7, atol=1e-5)


def test_rounding_slack_is_small_and_positive() -> None:
    net = random_network(0, (4, 8, 8, 3))
    chain = net.torch_chain()
    lo, hi = torch.zeros(2, 4, dtype=torch.float64), torch.ones(2, 4, dtype=torch.float64)
    s = rounding_slack(chain, lo, hi, torch.tensor(robustness_spec(0, 3).C))
    assert s.shape == (2, 2) and torch.all(s > 0) and torch.all(s < 1e-10)


def test_bad_inputs_give_clear_errors(small_net) -> None:
    chain = small_net.torch_chain()
    lo = torch.zeros(1, 4, dtype=torch.float64)
    C = torch.tensor(robustness_spec(0, 3).C)
    with pytest.raises(ValueError, match="unknown bound method"):
        margin_lower_bounds(chain, lo, lo + 1, C, method="deeppoly")
    with pytest.raises(ValueError, match="expects"):
        margin_lower_bounds(chain, torch.zeros(1, 5), torch.ones(1, 5), C)
    with pytest.raises(ValueError, match="margin matrix"):
        margin_lower_bounds(chain, lo, lo + 1, torch.zeros(2, 7))
    with pytest.raises(SpecError):
        certify_batch(small_net, np.zeros((1, 5)), np.ones((1, 5)), robustness_spec(0, 3).C, None, "crown", Options())
    with pytest.raises(ValueError, match="unknown bound method"):
        preactivation_bounds(small_net, InputBox(np.zeros(4), np.ones(4)), "lp")


def test_certify_with_bounds_consistent(small_net) -> None:
    rng = np.random.default_rng(0)
    for i in range(10):
        x = rng.uniform(size=4)
        label = int(np.argmax(small_net.forward(x)))
        prop = robustness_property(x, label, [0.001, 0.05, 0.3][i % 3], (small_net.domain_lower, small_net.domain_upper), 3)
        results = {m: certify_with_bounds(small_net, prop, m, OPTS) for m in ("ibp", "crown", "alpha-crown")}
        sampled = prop.output.margins(small_net.forward(_samples(prop.box.lower, prop.box.upper, rng, 2000))).min(axis=0)
        for name, r in results.items():
            assert r.method == name and r.margin_bounds.shape == (2,)
            assert r.bound == group_bound(prop.output.groups, r.margin_bounds)
            assert np.all(r.margin_bounds <= sampled)
            assert (r.verdict is Verdict.CERTIFIED) == prop.output.holds(r.margin_bounds)
            assert r.verdict in (Verdict.CERTIFIED, Verdict.UNKNOWN)
        assert results["ibp"].bound <= results["crown"].bound + TOL <= results["alpha-crown"].bound + 2 * TOL
        batch = certify_batch(small_net, prop.box.lower[None], prop.box.upper[None], prop.output.C, prop.output.d, "crown", OPTS)
        np.testing.assert_allclose(batch[0].numpy(), results["crown"].margin_bounds, rtol=1e-12, atol=1e-12)


# --- the real network: rsl18 PGD-NN (784-200-100-50-10) on MNIST test images --------------------------


@pytest.mark.parametrize("eps", [0.02, 0.05, 0.1])
def test_rsl18_pgd_nn_sound_and_ordered(eps: float) -> None:
    net = rsl18("pgd_nn")
    x, y = mnist_test(4)
    rng = np.random.default_rng(int(eps * 100))
    lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
    C = np.stack([robustness_spec(int(label), 10).C for label in y])
    d = np.zeros(C.shape[:2])
    chain = net.torch_chain()
    lo_t, hi_t = torch.tensor(lo), torch.tensor(hi)
    bounds = _all_bounds(chain, lo_t, hi_t, torch.tensor(C), torch.tensor(d), Options(alpha_steps=10))
    x_adv = pgd_batch(chain, torch.tensor(x), torch.tensor(y), eps, 0.0, 1.0, steps=30, step_size=eps / 4).numpy()
    _check_margins(net, lo, hi, C, d, bounds, rng, k=1000, extra=x_adv)
    # the certified bounds are rounding-safe and below the CROWN value
    safe = certify_batch(net, lo, hi, C, d, "crown", Options()).numpy()
    assert np.all(safe <= bounds["crown"]) and np.all(bounds["crown"] - safe < 1e-6)
    if eps == 0.02:  # a PGD-trained net is certifiable by CROWN at this small radius
        assert np.all(bounds["crown"].min(axis=1) > 0)


def test_rsl18_preactivation_bounds_contain_samples() -> None:
    net = rsl18("pgd_nn")
    x, y = mnist_test(1)
    prop = robustness_property(x[0], int(y[0]), 0.05, (net.domain_lower, net.domain_upper), 10)
    rng = np.random.default_rng(0)
    h = _samples(prop.box.lower, prop.box.upper, rng, 500)
    per_method = {m: preactivation_bounds(net, prop.box, m, Options(alpha_steps=5)) for m in BOUND_OPTIONS}
    for k, layer in enumerate(net.layers):
        z = layer.apply(h)
        for m in BOUND_OPTIONS:
            l, u = per_method[m][k]
            assert np.all(z >= l) and np.all(z <= u)
        assert np.all(per_method["crown"][k][0] <= per_method["alpha-crown"][k][0] + TOL)
        assert np.mean(per_method["crown"][k][1] - per_method["crown"][k][0]) <= np.mean(
            per_method["interval"][k][1] - per_method["interval"][k][0]
        )
        h = np.maximum(z, 0)


def test_gradients_through_chunked_batches(monkeypatch) -> None:
    monkeypatch.setattr(verify.bounds.crown, "CHUNK_ELEMENTS", 300)
    net = random_network(8, (6, 16, 16, 4), scale=1.5)
    chain = [(w.clone().requires_grad_(), b.clone().requires_grad_()) for w, b in net.torch_chain()]
    rng = np.random.default_rng(8)
    _, lo, hi = _boxes(rng, 7, 6, 0.2)
    C, d = _margin_spec(rng, 7, 4)
    lb = margin_lower_bounds(chain, torch.tensor(lo), torch.tensor(hi), torch.tensor(C), torch.tensor(d), "crown")
    weights = torch.arange(1.0, 8.0, dtype=torch.float64)[:, None]  # distinguishes the inputs' order
    (lb * weights).sum().backward()
    grads = [w.grad.clone() for w, _ in chain]
    for w, b in chain:
        w.grad, b.grad = None, None
    monkeypatch.setattr(verify.bounds.crown, "CHUNK_ELEMENTS", 1 << 21)
    lb1 = margin_lower_bounds(chain, torch.tensor(lo), torch.tensor(hi), torch.tensor(C), torch.tensor(d), "crown")
    np.testing.assert_allclose(lb.detach().numpy(), lb1.detach().numpy(), rtol=1e-10, atol=1e-10)
    (lb1 * weights).sum().backward()
    for g, (w, _) in zip(grads, chain):
        np.testing.assert_allclose(g.numpy(), w.grad.numpy(), rtol=1e-8, atol=1e-10)
