"""The `verify` command line: bad input gives one clear line and exit 2; the main job writes valid reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from verify.load import load_model
from verify.methods import run_method
from verify.options import Options
from verify.report import Report, validate_report_json
from verify.results import Verdict
from verify.spec import robustness_property

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits_mlp.pt"


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "verify.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("verify: error:"), proc.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    assert proc.stdout == ""


def no_results(cwd: Path) -> bool:
    runs = cwd / "verify-runs"
    return not runs.exists() or not any(runs.iterdir())


def sigmoid_onnx(path: Path) -> None:
    w = helper.make_tensor("W", TensorProto.FLOAT, [64, 10], np.ones((64, 10), np.float32).ravel())
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"), helper.make_node("Sigmoid", ["h"], ["y"], name="act")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.mark.parametrize(
    "case", ["missing", "not_a_model", "negative_eps", "nan_weights", "data_shape", "unsupported", "bad_vnnlib", "bad_method"]
)
def test_bad_input_one_line_exit_2(tmp_path: Path, case: str) -> None:
    args: list[str]
    needles: tuple[str, ...]
    if case == "missing":
        args, needles = [str(tmp_path / "nope.pt")], ("nope.pt",)
    elif case == "not_a_model":
        (tmp_path / "notes.pt").write_text("hello, I am not a network\n")
        args, needles = [str(tmp_path / "notes.pt")], ("not a model",)
    elif case == "negative_eps":
        args, needles = [str(DIGITS), "--eps", "-0.1"], ("eps",)
    elif case == "nan_weights":
        sd = torch.load(DIGITS, weights_only=True)
        sd["state_dict"]["2.weight"][0, 0] = float("nan")
        torch.save(sd, tmp_path / "nan.pt")
        args, needles = [str(tmp_path / "nan.pt")], ("nan",)
    elif case == "data_shape":
        np.savez(tmp_path / "d.npz", x=np.zeros((3, 10)), y=np.zeros(3, dtype=np.int64))
        args, needles = [str(DIGITS), "--data", str(tmp_path / "d.npz")], ("64",)
    elif case == "unsupported":
        sigmoid_onnx(tmp_path / "s.onnx")
        args, needles = [str(tmp_path / "s.onnx")], ("sigmoid",)
    elif case == "bad_vnnlib":
        (tmp_path / "p.vnnlib").write_text("(declare-const X_0 Real)\n(assert (<= X_0 \n")
        args, needles = [str(DIGITS), "--vnnlib", str(tmp_path / "p.vnnlib")], ("vnnlib",)
    else:
        args, needles = [str(DIGITS), "--methods", "crown,magic"], ("magic",)
    proc = run_cli(*args, cwd=tmp_path)
    assert_clean_error(proc, *needles)
    assert no_results(tmp_path)


def test_main_job_writes_valid_json_and_html(tmp_path: Path) -> None:
    proc = run_cli(str(DIGITS), "--eps", "0.02,0.05", "--n", "4", "--methods", "attack,ibp,crown,lp",
                   "--json", "r.json", "--report", "r.html", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    validate_report_json(doc)
    report = Report.from_json(tmp_path / "r.json")
    assert len(report.records) == 2 * 4 * 4
    for line in ("attack", "ibp", "crown", "lp"):
        assert line in proc.stdout
    assert "HiGHS" not in proc.stdout  # stdout carries only the table
    html = (tmp_path / "r.html").read_text()
    assert "<table" in html and html.count("data:image/png;base64,") >= 2
    # the verdicts agree with the methods run directly through the library
    loaded = load_model(DIGITS)
    net = loaded.network
    from verify.data import load_dataset

    x, y = load_dataset("digits", 4, 0, net.in_dim)
    for rec in report.records:
        if rec.method in ("crown", "ibp", "lp") and rec.message != "clean input is misclassified":
            prop = robustness_property(x[rec.index], int(y[rec.index]), rec.eps, (net.domain_lower, net.domain_upper), 10)
            direct = run_method(rec.method, net, prop, Options(), loaded.reference)
            assert direct.verdict is rec.verdict
            assert direct.bound == pytest.approx(rec.bound, rel=1e-6, abs=1e-6)
    # certified never contradicts falsified on the same input
    by_input: dict = {}
    for rec in report.records:
        by_input.setdefault((rec.index, rec.eps), set()).add(rec.verdict)
    assert all(not {Verdict.CERTIFIED, Verdict.FALSIFIED} <= v for v in by_input.values())


def test_resume_refuses_other_options(tmp_path: Path) -> None:
    results = tmp_path / "run.jsonl"
    base = [str(DIGITS), "--n", "2", "--methods", "crown", "--results", str(results), "--quiet"]
    assert run_cli(*base, "--eps", "0.05", cwd=tmp_path).returncode == 0
    proc = run_cli(*base[:-3], "--eps", "0.1", "--resume", str(results), "--quiet", cwd=tmp_path)
    assert_clean_error(proc, "cannot resume")


def test_existing_results_file_is_not_overwritten(tmp_path: Path) -> None:
    results = tmp_path / "run.jsonl"
    results.write_text('{"type": "meta"}\n')
    proc = run_cli(str(DIGITS), "--n", "1", "--methods", "crown", "--results", str(results), cwd=tmp_path)
    assert_clean_error(proc, "exists")
    assert results.read_text() == '{"type": "meta"}\n'


def test_eps_beyond_the_domain_is_run_but_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 item 7: eps 1e9 clips to the whole domain; allowed, with a notice on stderr and in the JSON meta."""
    from conftest import cli_main

    monkeypatch.chdir(tmp_path)
    code, out, err = cli_main(DIGITS, "--eps", "0.05,1e9", "--n", "1", "--methods", "ibp", "--json", "r.json", "--quiet")
    assert code == 0, err
    notes = [ln for ln in err.splitlines() if ln.startswith("verify: note:")]
    assert len(notes) == 1 and "1e+09" in notes[0] and "whole domain" in notes[0] and "0.05" not in notes[0]
    meta = json.loads((tmp_path / "r.json").read_text())["meta"]
    assert meta["notices"] == [notes[0].removeprefix("verify: note: ")]
    code, _, err = cli_main(DIGITS, "--eps", "0.05", "--n", "1", "--methods", "ibp", "--quiet")
    assert code == 0 and "note:" not in err
