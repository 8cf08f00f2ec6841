"""Certified radius (verify/radius.py): bisection radii agree with certify-at-eps verdicts at their bracketing eps
values, stay below the attack's counterexample radius, and the edge cases say what happened."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from verify.cli import main
from verify.data import load_dataset
from verify.load import load_model
from verify.methods import run_method
from verify.network import Affine, Network, ReLU
from verify.options import Options
from verify.radius import certified_radii, eps_cap, read_radii
from verify.report import Radius, RadiusKind, Report, validate_report_json
from verify.report_compare import headline, radius_curve
from verify.results import Verdict
from verify.spec import robustness_property

DIGITS = Path(__file__).resolve().parents[1] / "models" / "digits_mlp.pt"
TOL = 2e-3


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    loaded = load_model(DIGITS)
    x, y = load_dataset("digits", 6, 0, loaded.network.in_dim)
    return loaded, x, y


def _verdict(loaded, x, y, method: str, eps: float) -> Verdict:  # type: ignore[no-untyped-def]
    net = loaded.network
    prop = robustness_property(x, int(y), eps, (net.domain_lower, net.domain_upper), net.out_dim)
    return run_method(method, net, prop, Options(), loaded.reference).verdict


@pytest.mark.parametrize("index", [1, 2])
def test_radii_agree_with_verdicts_at_the_bracketing_eps(digits, index: int) -> None:  # type: ignore[no-untyped-def]
    loaded, x, y = digits
    radii = certified_radii(loaded.network, index, x[index], int(y[index]), ("attack", "crown", "lp", "sdp"), Options(),
                            loaded.reference, TOL)
    by = {r.method: r for r in radii}
    attack = by["attack"]
    assert attack.kind is RadiusKind.BRACKETED and attack.upper is not None
    assert _verdict(loaded, x[index], y[index], "attack", attack.upper) is Verdict.FALSIFIED
    for m in ("crown", "lp", "sdp"):
        r = by[m]
        assert r.kind is RadiusKind.BRACKETED and r.upper is not None, r
        assert 0 < r.lower < r.upper and r.upper - r.lower <= TOL + 1e-12, r
        assert r.lower < attack.upper  # sound: no certified ball holds the counterexample
        assert _verdict(loaded, x[index], y[index], m, r.lower) is Verdict.CERTIFIED, r
        assert _verdict(loaded, x[index], y[index], m, r.upper) is not Verdict.CERTIFIED, r
        assert r.evaluations >= 1
    assert by["sdp"].lower >= by["crown"].lower - TOL  # the SDP does at least as well here


def test_misclassified_input_has_radius_zero_for_every_method(digits) -> None:  # type: ignore[no-untyped-def]
    loaded, x, y = digits
    wrong = (int(y[1]) + 1) % 10
    radii = certified_radii(loaded.network, 1, x[1], wrong, ("attack", "crown"), Options(), loaded.reference, TOL)
    assert [r.kind for r in radii] == [RadiusKind.MISCLASSIFIED] * 2
    assert all(r.radius == 0.0 and r.evaluations == 0 and "misclassified" in r.message for r in radii)


def _constant_net() -> Network:
    """Class 0 wins by a wide margin wherever the input is in [0, 1]^3."""
    w = np.array([[0.1, -0.1, 0.05], [0.2, 0.1, -0.1]])
    ops = [Affine(w, np.zeros(2), "fc0"), ReLU(), Affine(np.array([[0.1, 0.1], [-0.1, 0.0]]), np.array([5.0, 0.0]), "fc1")]
    return Network.from_ops(ops, (3,), (0.0, 1.0), name="constant")


def test_input_certified_on_the_whole_domain_is_capped() -> None:
    net = _constant_net()
    x = np.array([0.2, 0.5, 0.9])
    radii = certified_radii(net, 0, x, 0, ("attack", "crown", "lp"), Options(), None, TOL)
    by = {r.method: r for r in radii}
    assert eps_cap(x, net.domain_lower, net.domain_upper) == pytest.approx(0.9)
    for m in ("crown", "lp"):
        assert by[m].kind is RadiusKind.CAPPED and by[m].lower == pytest.approx(0.9) and by[m].upper is None
        assert "whole input domain" in by[m].message
    assert by["attack"].kind is RadiusKind.NO_COUNTEREXAMPLE and by["attack"].radius is None
    assert any("whole input domain" in line for line in headline([], radii, {}))


def test_attack_only_radius_says_no_certified_radius(digits) -> None:  # type: ignore[no-untyped-def]
    loaded, x, y = digits
    radii = certified_radii(loaded.network, 2, x[2], int(y[2]), ("attack",), Options(), loaded.reference, TOL)
    assert [r.method for r in radii] == ["attack"] and radii[0].upper is not None
    lines = headline([], radii, {})
    assert any(line.startswith("No certifying method was run") for line in lines)
    assert radius_curve(radii, "attack", [0.0, radii[0].upper]) == [1.0, 0.0]


def test_bad_tolerance_is_refused(digits) -> None:  # type: ignore[no-untyped-def]
    loaded, x, y = digits
    with pytest.raises(ValueError, match="tolerance"):
        certified_radii(loaded.network, 0, x[0], int(y[0]), ("crown",), Options(), None, 0.0)


def test_cli_radius_json_schema_and_resume(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    args = [str(DIGITS), "--eps", "0.05", "--n", "3", "--methods", "attack,crown", "--quiet", "--radius", "0.004",
            "--results", "r.jsonl"]
    assert main([*args, "--json", "r.json"]) == 0
    obj = json.loads((tmp_path / "r.json").read_text())
    validate_report_json(obj)
    report = Report.from_json(tmp_path / "r.json")
    assert {(r.index, r.method) for r in report.radii} == {(i, m) for i in range(3) for m in ("attack", "crown")}
    assert all(isinstance(r, Radius) for r in report.radii)
    assert "certified radius" in capsys.readouterr().out
    before = read_radii(tmp_path / "r.jsonl")
    assert main([str(DIGITS), "--eps", "0.05", "--n", "3", "--methods", "attack,crown", "--quiet", "--radius", "0.004",
                 "--resume", "r.jsonl"]) == 0
    assert read_radii(tmp_path / "r.jsonl") == before  # nothing searched twice
    assert main([*args[:-2], "--radius", "0", "--results", "s.jsonl"]) == 2
    assert "--radius" in capsys.readouterr().err
    assert main([str(DIGITS), "--vnnlib", "p.vnnlib", "--radius"]) == 2
    assert "--radius applies to a data set run" in capsys.readouterr().err
    assert not (tmp_path / "s.jsonl").exists()
