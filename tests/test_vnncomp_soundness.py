"""VNN-COMP 2021 mnistfc: no instance with a known counterexample is ever CERTIFIED by IBP/CROWN/LP,
and the PGD attack finds real counterexamples for most of them.

Known-violated set: consensus ``violated`` in instances_with_results.csv, plus 256x2 prop_14 at eps
0.03 (a "conflict" there, but PGD finds a counterexample). The fast test covers a subset; the slow
one covers all 90 instances (and also checks that nothing the other tools proved is falsified).
"""

from __future__ import annotations

import csv
import functools

import pytest
from conftest import shared_path

from verify.bounds.method import certify_with_bounds
from verify.options import Options
from verify.relax.lp import certify_lp
from verify.results import Verdict

load = pytest.importorskip("verify.load")
vnnlib = pytest.importorskip("verify.load.vnnlib")

EXTRA_VIOLATED = {("mnist-net_256x2.onnx", "prop_14_0.03.vnnlib")}


def _instances() -> list[dict]:
    path = shared_path("vnncomp2021", "mnistfc", "instances_with_results.csv")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["violated"] = r["consensus"] == "violated" or (r["onnx"], r["vnnlib"]) in EXTRA_VIOLATED
    return rows


@functools.lru_cache(maxsize=None)
def _model(onnx: str):
    return load.load_model(shared_path("vnncomp2021", "mnistfc", onnx))


def _property(row: dict, net):
    return vnnlib.parse_vnnlib(shared_path("vnncomp2021", "mnistfc", row["vnnlib"]), net.in_dim, net.out_dim)


def _attack():
    try:
        from verify.attack import pgd_attack
    except ImportError:
        return None
    return pgd_attack


def _run(rows: list[dict], with_lp: bool) -> dict:
    opts = Options()
    attack = _attack()
    stats = {"violated": 0, "falsified": 0, "certified_holds": 0, "holds": 0}
    for row in rows:
        loaded = _model(row["onnx"])
        net = loaded.network
        prop = _property(row, net)
        verdicts = {m: certify_with_bounds(net, prop, m, opts).verdict for m in ("ibp", "crown")}
        if with_lp:
            verdicts["lp"] = certify_lp(net, prop, opts).verdict
        label = f"{row['onnx']} {row['vnnlib']}"
        if row["violated"]:
            stats["violated"] += 1
            for m, v in verdicts.items():
                assert v is not Verdict.CERTIFIED, f"{m} certified the known-violated instance {label}"
        elif row["consensus"] == "holds":
            stats["holds"] += 1
            stats["certified_holds"] += any(v is Verdict.CERTIFIED for v in verdicts.values())
        if attack is not None:
            res = attack(net, prop, opts, loaded.reference)
            if res.verdict is Verdict.FALSIFIED:
                assert prop.output.violated(net.forward(res.counterexample[None]))[0]
                assert prop.box.contains(res.counterexample, tol=1e-12)
                assert row["consensus"] != "holds", f"attack 'falsified' {label}, which 8 tools proved"
                assert not any(v is Verdict.CERTIFIED for v in verdicts.values()), label
                stats["falsified"] += row["violated"]
    print(f"\nmnistfc: {stats['falsified']}/{stats['violated']} known-violated instances falsified by PGD; "
          f"{stats['certified_holds']}/{stats['holds']} consensus-holds instances certified by ibp/crown{'/lp' if with_lp else ''}")
    return stats


def test_violated_subset_never_certified():
    rows = [r for r in _instances() if r["violated"] and r["onnx"] == "mnist-net_256x2.onnx"][:4]
    stats = _run(rows, with_lp=True)
    if _attack() is not None:
        assert stats["falsified"] >= stats["violated"] // 2


@pytest.mark.slow
def test_all_instances():
    stats = _run(_instances(), with_lp=True)
    if _attack() is not None:
        assert stats["falsified"] >= 0.8 * stats["violated"]
