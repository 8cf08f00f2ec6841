"""`verify NET --vnnlib SPEC --out FILE` on the VNN-COMP 2021 mnist_fc instances: never `holds` when violated."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import shared_path
from verify.cli import main

VIOLATED_EXTRA = {("mnist-net_256x2.onnx", "prop_14_0.03.vnnlib")}  # consensus says conflict; PGD finds a counterexample


def instances() -> list[dict]:
    with open(shared_path("vnncomp2021", "mnistfc", "instances_with_results.csv")) as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        if (r["onnx"], r["vnnlib"]) in VIOLATED_EXTRA:
            r["consensus"] = "violated"
    return rows


def run_instance(row: dict, tmp_path: Path, methods: str) -> str:
    folder = shared_path("vnncomp2021", "mnistfc")
    out = tmp_path / f"{row['onnx']}-{row['vnnlib']}.txt"
    code = main([str(folder / row["onnx"]), "--vnnlib", str(folder / row["vnnlib"]), "--out", str(out),
                 "--methods", methods, "--time-limit", "30"])
    assert code == 0
    text = out.read_text()
    answer = text.splitlines()[0]
    assert answer in ("holds", "violated", "unknown")
    if answer == "violated":  # the counterexample lists every input and output
        assert text.count("(X_") == 784 and text.count("(Y_") == 10
    return answer


def check(rows: list[dict], tmp_path: Path, methods: str) -> dict:
    counts = {"violated_found": 0, "violated_total": 0}
    for row in rows:
        answer = run_instance(row, tmp_path, methods)
        if row["consensus"] == "violated":
            counts["violated_total"] += 1
            assert answer != "holds", f"{row['onnx']} {row['vnnlib']} is violated but we said holds"
            counts["violated_found"] += answer == "violated"
        elif row["consensus"] == "holds":
            assert answer != "violated", f"{row['onnx']} {row['vnnlib']} holds but we reported a counterexample"
    return counts


def test_vnnlib_subset(tmp_path: Path) -> None:
    rows = instances()
    chosen = [r for r in rows if r["consensus"] == "violated"][:4] + [r for r in rows if r["consensus"] == "holds"][:4]
    counts = check(chosen, tmp_path, "attack,crown")
    assert counts["violated_found"] >= counts["violated_total"] // 2


@pytest.mark.slow
def test_vnnlib_all_instances(tmp_path: Path) -> None:
    counts = check(instances(), tmp_path, "attack,ibp,crown,alpha-crown,lp")
    print(f"attack falsified {counts['violated_found']} of {counts['violated_total']} violated instances")
    assert counts["violated_found"] >= 0.8 * counts["violated_total"]
