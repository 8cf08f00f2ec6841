"""Results files: torn last lines, all inputs checked before anything is written, unique names, locking.

The CLI runs in-process here (fast); signal and concurrency tests with real processes are in
test_cli_interrupt.py.
"""

from __future__ import annotations

import datetime as real_dt
import json
import os
from pathlib import Path

import numpy as np
import pytest

import verify.results_file as rfmod
from verify.cli import main
from verify.data import load_dataset
from verify.report import Record
from verify.results import SolverStatus, Verdict
from verify.results_file import ResultsFile, ResultsLockedError, create_default, read_results
from verify.runner import Sink

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "models" / "digits_mlp.pt")


def run(tmp_path: Path, monkeypatch, *args: str) -> int:
    monkeypatch.chdir(tmp_path)
    return main([DIGITS, "--quiet", *args])


def record_lines(path: Path) -> list[dict]:
    """Every line parsed (fails on any invalid line), meta excluded."""
    objs = [json.loads(line) for line in path.read_text().splitlines()]
    assert objs[0]["type"] == "meta"
    return objs[1:]


def keys(objs: list[dict]) -> list[tuple]:
    return [(o["index"], o["eps"], o["method"]) for o in objs]


def test_torn_last_line_is_cut_before_resume(tmp_path, monkeypatch, capsys):
    args = ("--n", "4", "--methods", "crown,ibp", "--results", "r.jsonl")
    assert run(tmp_path, monkeypatch, *args) == 0
    path = tmp_path / "r.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # SIGKILL in the middle of a write
    assert run(tmp_path, monkeypatch, *args[:-2], "--resume", "r.jsonl") == 0
    assert run(tmp_path, monkeypatch, *args[:-2], "--resume", "r.jsonl") == 0  # the file is still valid
    objs = record_lines(path)
    assert sorted(keys(objs)) == sorted({(i, 0.1, m) for i in range(4) for m in ("crown", "ibp")})
    capsys.readouterr()


def test_complete_last_line_without_newline_is_kept(tmp_path, monkeypatch):
    args = ("--n", "3", "--methods", "crown", "--results", "r.jsonl")
    assert run(tmp_path, monkeypatch, *args) == 0
    path = tmp_path / "r.jsonl"
    text = path.read_text()
    path.write_text(text.rstrip("\n"))  # killed between the record and its newline
    assert run(tmp_path, monkeypatch, *args[:-2], "--resume", "r.jsonl") == 0
    assert path.read_text() == text  # nothing dropped, nothing redone


@pytest.mark.parametrize("case", ["label", "domain", "nan"])
def test_bad_input_anywhere_writes_nothing(tmp_path, monkeypatch, capsys, case):
    x, y = load_dataset("digits", 6)
    if case == "label":
        y[4] = 10  # the digits model has classes 0..9
    elif case == "domain":
        x[3, 5] = 1.5  # pixels lie in [0, 1]
    else:
        x[5, 0] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=y)
    assert run(tmp_path, monkeypatch, "--n", "6", "--methods", "crown", "--data", "d.npz") == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("verify: error:"), err
    if case != "nan":  # NaN is caught while reading the data set, before inputs are numbered
        assert f"input {4 if case == 'label' else 3}" in err[0]
    assert not (tmp_path / "verify-runs").exists()
    assert run(tmp_path, monkeypatch, "--n", "6", "--methods", "crown", "--data", "d.npz", "--results", "r.jsonl") == 2
    assert not (tmp_path / "r.jsonl").exists()


def test_two_runs_in_the_same_second_get_their_own_files(tmp_path, monkeypatch):
    frozen = real_dt.datetime(2024, 1, 2, 3, 4, 5, 678000)

    class Frozen(real_dt.datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ANN001
            return frozen

    monkeypatch.setattr(rfmod.dt, "datetime", Frozen)
    assert run(tmp_path, monkeypatch, "--n", "2", "--methods", "crown") == 0
    assert run(tmp_path, monkeypatch, "--n", "3", "--methods", "crown") == 0
    files = sorted((tmp_path / "verify-runs").glob("*.jsonl"))
    assert len(files) == 2
    assert sorted(len(read_results(f)[1]) for f in files) == [2, 3]  # each run its own records, once


def test_create_default_never_reuses_a_name(tmp_path):
    made = [create_default(tmp_path, "m", {"k": i}) for i in range(5)]
    try:
        assert len({f.path for f in made}) == 5
        assert [read_results(f.path)[0]["k"] for f in made] == list(range(5))
    finally:
        for f in made:
            f.close()


def test_locked_file_is_refused_naming_the_holder(tmp_path, monkeypatch, capsys):
    assert run(tmp_path, monkeypatch, "--n", "2", "--methods", "crown", "--results", "r.jsonl") == 0
    before = (tmp_path / "r.jsonl").read_text()
    holder, _, _ = ResultsFile.resume(tmp_path / "r.jsonl")  # another run holds it
    try:
        capsys.readouterr()
        assert run(tmp_path, monkeypatch, "--n", "2", "--methods", "crown", "--resume", "r.jsonl") == 2
        err = capsys.readouterr().err.strip()
        assert "in use by another verify run" in err and f"pid {os.getpid()}" in err, err
        with pytest.raises(ResultsLockedError):
            ResultsFile.create(tmp_path / "r.jsonl", {})
    finally:
        holder.close()
    assert (tmp_path / "r.jsonl").read_text() == before
    assert not (tmp_path / "r.jsonl.owner").exists()  # the note goes with the lock
    assert run(tmp_path, monkeypatch, "--n", "2", "--methods", "crown", "--resume", "r.jsonl") == 0


def _rec(i: int, method: str = "crown") -> Record:
    return Record(i, 1, 0.1, method, Verdict.UNKNOWN, -1.0, 0.01, SolverStatus.NOT_APPLICABLE)


def test_sink_records_each_result_once(tmp_path):
    with ResultsFile.create(tmp_path / "r.jsonl", {"m": 1}) as rf:
        seen: list[Record] = []
        sink = Sink([_rec(0)], rf, seen.append)
        for rec in (_rec(0), _rec(1), _rec(1), _rec(1, "ibp")):
            sink.add(rec)
        sink.task_done()
    assert [r.key for r in sink.records] == [(0, 0.1, "crown"), (1, 0.1, "crown"), (1, 0.1, "ibp")]
    assert [r.key for r in seen] == [(1, 0.1, "crown"), (1, 0.1, "ibp")]
    assert [r.key for r in read_results(tmp_path / "r.jsonl")[1]] == [(1, 0.1, "crown"), (1, 0.1, "ibp")]


def test_duplicated_records_in_an_old_file_are_read_once(tmp_path):
    line = json.dumps({"type": "record", **_rec(0).to_dict()})
    (tmp_path / "r.jsonl").write_text(json.dumps({"type": "meta", "a": 1}) + "\n" + line + "\n" + line + "\n")
    meta, recs = read_results(tmp_path / "r.jsonl")
    assert meta == {"a": 1} and len(recs) == 1
