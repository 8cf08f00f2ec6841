"""Verdict-mode eps sweeps: what a result at one eps implies at another (verify/sweep.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from verify.data import load_dataset
from verify.load import load_model
from verify.options import Options
from verify.report import Record
from verify.methods import run_method
from verify.results import SolverStatus, Verdict
from verify.runner import make_tasks, run_tasks
from verify.spec import robustness_property
from verify.sweep import Known, sweep_order

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits_mlp.pt"
METHODS = ("attack", "crown", "lp")


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    loaded = load_model(DIGITS)
    x, y = load_dataset("digits", 8, 0, loaded.network.in_dim)
    return loaded, x, y


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_sweep_order_visits_each_eps_once_middle_first(k: int) -> None:
    eps = tuple(0.01 * (i + 1) for i in range(k))
    order = sweep_order(tuple(reversed(eps)) + eps)  # duplicates and any input order
    assert sorted(order) == list(eps)
    assert order[0] == eps[k // 2]


def _prop(net, x, y, eps):  # type: ignore[no-untyped-def]
    return robustness_property(x, int(y), eps, (net.domain_lower, net.domain_upper), net.out_dim)


def test_implications_are_the_stated_facts(digits) -> None:  # type: ignore[no-untyped-def]
    loaded, x, y = digits
    net = loaded.network
    known = Known()
    # a certificate at 0.06 covers 0.03, not 0.09
    known.add(Record(1, int(y[1]), 0.06, "lp", Verdict.CERTIFIED, 0.4, 0.1, SolverStatus.OPTIMAL))
    small = known.implied(1, "lp", _prop(net, x[1], y[1], 0.03), net, loaded.reference)
    assert small is not None and small.verdict is Verdict.CERTIFIED and small.bound == 0.4
    assert small.status is SolverStatus.NOT_RUN and "0.06" in small.message
    assert known.implied(1, "lp", _prop(net, x[1], y[1], 0.09), net, loaded.reference) is None
    assert known.implied(1, "crown", _prop(net, x[1], y[1], 0.03), net, loaded.reference) is None  # per method
    assert known.implied(1, "lp", _prop(net, x[1], y[1], 0.06), net, loaded.reference) is None  # same eps: nothing
    # the attack is not needed where a method certified a larger ball
    att = known.implied(1, "attack", _prop(net, x[1], y[1], 0.03), net, loaded.reference)
    assert att is not None and att.verdict is Verdict.UNKNOWN and att.status is SolverStatus.NOT_RUN
    # a counterexample at eps 0.1 is one at 0.2 (re-checked in the larger ball), not at 0.05
    prop = _prop(net, x[1], y[1], 0.2)
    res = run_method("attack", net, _prop(net, x[1], y[1], 0.1), Options(), loaded.reference)
    assert res.verdict is Verdict.FALSIFIED, "input 1 should have a counterexample at eps 0.1"
    known.add(Record.from_result(1, int(y[1]), 0.1, res), res)
    fals = known.implied(1, "sdp", prop, net, loaded.reference)
    assert fals is not None and fals.verdict is Verdict.FALSIFIED and prop.box.contains(fals.counterexample)
    assert bool(prop.output.violated(loaded.reference(fals.counterexample[None]))[0])
    assert known.implied(1, "sdp", _prop(net, x[1], y[1], 0.05), net, loaded.reference) is None


def test_single_eps_run_is_unchanged_and_compare_mode_implies_nothing(digits) -> None:  # type: ignore[no-untyped-def]
    loaded, x, y = digits
    tasks = make_tasks(x[:5], y[:5], (0.05,))
    plain = run_tasks(loaded.network, tasks, METHODS, Options(), loaded.reference)
    with_known = run_tasks(loaded.network, tasks, METHODS, Options(), loaded.reference, known=Known())
    assert [(r.key, r.verdict, r.bound) for r in plain] == [(r.key, r.verdict, r.bound) for r in with_known]
    sweep = make_tasks(x[:5], y[:5], sweep_order((0.03, 0.06, 0.09)))
    compare = run_tasks(loaded.network, sweep, ("crown",), Options(compare=True), loaded.reference, known=Known())
    assert all(r.status is not SolverStatus.NOT_RUN or "misclassified" in r.message for r in compare)


def test_sweep_saves_runs_and_never_contradicts_a_full_run(digits) -> None:  # type: ignore[no-untyped-def]
    loaded, x, y = digits
    eps = (0.02, 0.04, 0.06, 0.08, 0.1)
    tasks = make_tasks(x, y, sweep_order(eps))
    full = {r.key: r for r in run_tasks(loaded.network, tasks, METHODS, Options(), loaded.reference)}
    swept = {r.key: r for r in run_tasks(loaded.network, tasks, METHODS, Options(), loaded.reference, known=Known())}
    assert full.keys() == swept.keys()
    ran = sum(r.status is not SolverStatus.NOT_RUN for r in swept.values())
    assert ran < 0.7 * sum(r.status is not SolverStatus.NOT_RUN for r in full.values())
    for key, r in swept.items():
        truth = full[key]
        if r.verdict is Verdict.CERTIFIED:  # sound: never where a full run finds a counterexample
            assert not any(full[(key[0], key[1], m)].verdict is Verdict.FALSIFIED for m in METHODS), key
            assert truth.verdict is Verdict.CERTIFIED, key  # and the method certifies there itself
        if r.verdict is Verdict.FALSIFIED:  # a counterexample really exists at this eps
            assert full[(key[0], key[1], "attack")].verdict is Verdict.FALSIFIED or truth.verdict is Verdict.FALSIFIED, key
        if r.status is SolverStatus.NOT_RUN and r.verdict is Verdict.UNKNOWN and r.method != "attack":
            assert truth.verdict is not Verdict.CERTIFIED, key  # "not certified at a smaller eps" held here
    assert np.isfinite([r.bound for r in swept.values() if r.verdict is Verdict.CERTIFIED]).all()
