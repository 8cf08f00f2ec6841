"""Property wall-time budgets (Options.timeout): validation and sharing between methods."""

from __future__ import annotations

import time

import numpy as np
import pytest

from verify.budget import Budget
from verify.options import Options
from verify.results import SolverStatus, Verdict
from verify.runner import Task, evaluate_task

from conftest import random_network


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_timeout_must_be_positive(bad):
    with pytest.raises(ValueError, match="timeout"):
        Options(timeout=bad)


def test_budget_caps_time_limit_and_expires():
    b = Budget.start(0.05)
    opts = b.options_for(Options(time_limit=60.0))
    assert 0 < opts.timeout <= 0.05 and opts.time_limit <= 0.05
    time.sleep(0.06)
    assert b.expired() and b.remaining() == 0.0 and b.limit(10.0) == 1e-3
    assert Budget.start(None).options_for(Options()) == Options() and not Budget.start(None).expired()


def test_methods_after_the_deadline_are_not_run():
    net = random_network(3, (4, 8, 3))
    x = np.full(4, 0.5)
    label = int(np.argmax(net.forward(x)))
    task = Task(0, x, label, 0.05)
    recs = list(evaluate_task(net, task, ("crown", "ibp"), Options(timeout=1e-9)))
    # the first method starts with an (almost) spent budget; whatever it did, the second one is not run
    assert recs[-1].method == "ibp" and recs[-1].verdict is Verdict.UNKNOWN
    assert recs[-1].status is SolverStatus.TIME_LIMIT
