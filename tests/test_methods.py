"""The method registry: every FALSIFIED is re-checked on the original model, whatever method produced it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_network

from verify.methods import parse_methods, run_method
from verify.options import Options
from verify.results import Verdict
from verify.spec import robustness_property


def _falsifiable():
    net = random_network(3, (4, 8, 8, 3))
    x = np.full(4, 0.5)
    label = int(np.argmax(net.forward(x)))
    prop = robustness_property(x, label, 0.5, (net.domain_lower, net.domain_upper), 3)
    return net, prop, label


@pytest.mark.parametrize("method", ["attack", "lp", "exact"])
def test_falsified_only_when_the_reference_agrees(method: str) -> None:
    net, prop, label = _falsifiable()
    res = run_method(method, net, prop, Options())
    assert res.verdict is Verdict.FALSIFIED, res.message  # a real counterexample exists at eps 0.5
    assert prop.box.contains(res.counterexample) and prop.output.violated(net.forward(res.counterexample[None]))[0]

    def disagreeing(x: np.ndarray) -> np.ndarray:  # an "original model" on which the label always wins
        out = np.zeros((len(x), 3))
        out[:, label] = 10.0
        return out

    res = run_method(method, net, prop, Options(), reference=disagreeing)
    assert res.verdict is not Verdict.FALSIFIED


def test_parse_methods_names_unknown_ones() -> None:
    assert parse_methods("pgd, crown,alpha") == ("attack", "crown", "alpha-crown")
    with pytest.raises(ValueError, match="magic"):
        parse_methods("crown,magic")


def test_registry_is_the_one_list() -> None:
    """Every method resolves, its runner imports, aliases map, and the CLI, report and torch API read it."""
    from verify import registry
    from verify.cli_args import build_parser
    from verify.report_summary import METHOD_ORDER

    for entry in registry.TABLE:
        assert callable(registry.load_runner(entry.name))
        assert all(registry.resolve(a) == entry.name for a in entry.aliases)
    assert registry.resolve(" Interval ") == "ibp" and set(registry.BOUND_PROPAGATION) <= set(registry.CERTIFIERS)
    assert "attack" not in registry.CERTIFIERS and METHOD_ORDER == registry.METHODS
    help_text = "".join(build_parser().format_help().split())  # argparse wraps lines, also at hyphens
    assert all(name in help_text for name in registry.METHODS)
