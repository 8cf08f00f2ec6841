"""PGD attack: finds clear counterexamples, re-checks them on the reference model, stays in the box."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import mnist_test, random_network, rsl18
from verify.attack import pgd_attack, pgd_batch
from verify.bounds.method import certify_with_bounds
from verify.options import Options
from verify.results import Verdict
from verify.spec import InputBox, OutputSpec, Property, robustness_property

OPTS = Options(attack_steps=40, attack_restarts=4, seed=0)


def _dense_min(net, prop: Property, rng: np.random.Generator, k: int = 20000) -> float:
    """Smallest worst-case margin over k uniform samples and k vertices of the box."""
    lo, hi = prop.box.lower, prop.box.upper
    pts = np.concatenate([lo + rng.uniform(size=(k, lo.size)) * (hi - lo), np.where(rng.uniform(size=(k, lo.size)) < 0.5, lo, hi)])
    m = prop.output.margins(net.forward(pts))
    return float(np.min([np.max(m[:, list(g)], axis=1) for g in prop.output.groups]))


def _clear_violations(n: int = 6) -> list[tuple]:
    """Random nets and whole-domain boxes where sampling already finds a margin below -0.05."""
    out = []
    rng = np.random.default_rng(0)
    for seed in range(200):
        net = random_network(seed, (4, 10, 10, 3), scale=2.0)
        x = rng.uniform(size=4)
        label = int(np.argmax(net.forward(x)))
        prop = robustness_property(x, label, 0.5, (net.domain_lower, net.domain_upper), 3)
        if _dense_min(net, prop, rng, 2000) < -0.05:
            out.append((net, prop))
        if len(out) == n:
            break
    return out


def test_finds_clear_counterexamples_inside_the_box() -> None:
    cases = _clear_violations()
    assert len(cases) == 6
    for net, prop in cases:
        r = pgd_attack(net, prop, OPTS)
        assert r.verdict is Verdict.FALSIFIED, r.message
        cex = r.counterexample
        assert cex.shape == (net.in_dim,) and cex.dtype == np.float64
        assert prop.box.contains(cex)
        assert prop.output.violated(net.forward(cex[None]))[0]
        assert r.bound <= 0 and r.bound == pytest.approx(min(r.margin_bounds[list(g)].max() for g in prop.output.groups))


def test_never_falsified_when_the_reference_disagrees() -> None:
    for net, prop in _clear_violations(3):
        label = prop.output.label

        def stubborn(x: np.ndarray) -> np.ndarray:  # a "source model" in which the label always wins
            logits = np.zeros((x.shape[0], 3))
            logits[:, label] = 1.0
            return logits

        r = pgd_attack(net, prop, OPTS, reference=stubborn)
        assert r.verdict is Verdict.UNKNOWN and r.counterexample is None
        assert r.bound == pytest.approx(1.0)  # the reference's margins are what is reported


def test_attack_upper_bounds_the_certified_lower_bound() -> None:
    rng = np.random.default_rng(1)
    for seed in range(8):
        net = random_network(seed, (5, 12, 12, 4), scale=1.5)
        x = rng.uniform(size=5)
        prop = robustness_property(x, int(np.argmax(net.forward(x))), 0.15, (net.domain_lower, net.domain_upper), 4)
        attack = pgd_attack(net, prop, OPTS)
        lower = certify_with_bounds(net, prop, "alpha-crown", Options(alpha_steps=10))
        assert lower.bound <= attack.bound + 1e-9
        if attack.verdict is Verdict.FALSIFIED:
            assert lower.verdict is not Verdict.CERTIFIED
        # the attack never does worse than the clean point, which is its first start
        clean = prop.output.margins(net.forward(x[None]))[0]
        assert attack.bound <= min(clean[list(g)].max() for g in prop.output.groups) + 1e-12


def test_grouped_spec_needs_every_row_of_a_group() -> None:
    rng = np.random.default_rng(2)
    hits = 0
    for seed in range(12):
        net = random_network(seed, (3, 10, 4), scale=2.0)
        # violated iff y0 <= y1 and y0 <= y2 for some x (one group of two rows), or y3 <= y0 - 5 (never, nearly)
        C = np.array([[1.0, -1, 0, 0], [1.0, 0, -1, 0], [-1.0, 0, 0, 1]])
        spec = OutputSpec(C, np.array([0.0, 0.0, 5.0]), ((0, 1), (2,)))
        prop = Property(InputBox(np.zeros(3), np.ones(3)), spec)
        r = pgd_attack(net, prop, OPTS)
        sampled = _dense_min(net, prop, rng, 5000)
        if r.verdict is Verdict.FALSIFIED:
            hits += 1
            assert spec.violated(net.forward(r.counterexample[None]))[0]
        elif sampled < -0.05:
            pytest.fail(f"seed {seed}: sampling finds worst-case margin {sampled:.3f} but the attack found none")
    assert hits > 0


def test_seeded_and_deterministic(small_net) -> None:
    x = np.array([0.3, 0.6, 0.1, 0.9])
    prop = robustness_property(x, int(np.argmax(small_net.forward(x))), 0.4, (small_net.domain_lower, small_net.domain_upper), 3)
    a, b = pgd_attack(small_net, prop, OPTS), pgd_attack(small_net, prop, OPTS)
    assert a.verdict == b.verdict and a.bound == b.bound


def test_bad_reference_output_is_an_error(small_net) -> None:
    prop = robustness_property(np.full(4, 0.5), 0, 0.1, (small_net.domain_lower, small_net.domain_upper), 3)
    with pytest.raises(ValueError, match="reference model returned"):
        pgd_attack(small_net, prop, OPTS, reference=lambda x: np.zeros((x.shape[0], 5)))


def test_rsl18_large_eps_is_falsified_and_small_eps_is_not() -> None:
    net = rsl18("pgd_nn")
    x, y = mnist_test(3)
    for i in range(3):
        big = robustness_property(x[i], int(y[i]), 0.3, (net.domain_lower, net.domain_upper), 10)
        r = pgd_attack(net, big, Options(attack_steps=50, attack_restarts=3))
        assert r.verdict is Verdict.FALSIFIED
        assert big.box.contains(r.counterexample) and np.argmax(net.forward(r.counterexample)) != y[i]
        small = robustness_property(x[i], int(y[i]), 0.02, (net.domain_lower, net.domain_upper), 10)
        r = pgd_attack(net, small, Options(attack_steps=20, attack_restarts=2))
        assert r.verdict is Verdict.UNKNOWN and r.bound > 0


def test_pgd_batch_stays_in_box_and_leaks_no_gradient() -> None:
    net = rsl18("pgd_nn")
    x, y = mnist_test(16)
    chain = [(w.float().clone().requires_grad_(), b.float().clone().requires_grad_()) for w, b in net.torch_chain()]
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    gen = torch.Generator().manual_seed(0)
    x_adv = pgd_batch(chain, xt, yt, 0.3, 0.0, 1.0, steps=30, step_size=0.03, restarts=2, generator=gen)
    assert not x_adv.requires_grad and all(w.grad is None and b.grad is None for w, b in chain)
    assert torch.all(x_adv >= torch.clamp(xt - 0.3, min=0) - 1e-7) and torch.all(x_adv <= torch.clamp(xt + 0.3, max=1) + 1e-7)
    with torch.no_grad():
        clean_acc = (net.forward(xt.double()).argmax(1) == yt).float().mean()
        adv_acc = (net.forward(x_adv.double()).argmax(1) == yt).float().mean()
    assert adv_acc < clean_acc - 0.5
    # with a callable model (e.g. an nn.Module) the parameters' .grad stay untouched as well
    model = torch.nn.Sequential(torch.nn.Linear(784, 20), torch.nn.ReLU(), torch.nn.Linear(20, 10))
    pgd_batch(model, xt, yt, 0.1, 0.0, 1.0, steps=3, step_size=0.03)
    assert all(p.grad is None for p in model.parameters())
