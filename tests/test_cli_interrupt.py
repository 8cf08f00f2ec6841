"""A real `verify` process stopped by SIGINT, SIGTERM or SIGKILL, then resumed: every input exactly once, with the
verdicts and bounds of an uninterrupted run; while a run holds its results file, a second run is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from verify.cli import main
from verify.data import load_dataset
from verify.load import load_model
from verify.options import Options
from verify.results_file import read_results
from verify.runner import make_tasks, run_tasks

ROOT = Path(__file__).resolve().parents[1]
DIGITS = str(ROOT / "models" / "digits_mlp.pt")
N = 30
METHODS = ("attack", "crown")


def cli_args(data: Path) -> list[str]:
    return [DIGITS, "--eps", "0.05", "--n", str(N), "--methods", ",".join(METHODS), "--data", str(data), "--quiet"]


def write_data(tmp_path: Path) -> Path:
    x, y = load_dataset("digits", N)
    np.savez(tmp_path / "d.npz", x=x, y=y)  # an npz loads faster than scikit-learn's digits
    return tmp_path / "d.npz"


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "verify.cli", *args, "--threads", "1"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def n_records(path: Path) -> int:
    return path.read_text().count('"type": "record"') if path.exists() else 0


def wait_for(path: Path, k: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while n_records(path) < k and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.skip("the run finished before the signal could be sent (machine too fast for this test)")


def table_counts(stdout: str) -> dict[str, int]:
    """``method -> n`` from the printed table."""
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[0] in METHODS and parts[1].isdigit():
            out[parts[0]] = out.get(parts[0], 0) + int(parts[1])
    return out


def file_counts(path: Path) -> dict[str, int]:
    recs = read_results(path)[1]
    return {m: sum(r.method == m for r in recs) for m in METHODS if any(r.method == m for r in recs)}


def baseline(data: Path) -> dict:
    loaded = load_model(DIGITS)
    x, y = load_dataset(str(data), N, 0, loaded.network.in_dim)
    recs = run_tasks(loaded.network, make_tasks(x, y, (0.05,)), METHODS, Options(), loaded.reference)
    return {r.key: r for r in recs}


def resume_in_process(tmp_path: Path, monkeypatch, data: Path, results: Path) -> int:
    monkeypatch.chdir(tmp_path)
    return main([*cli_args(data), "--resume", str(results)])


def assert_complete_and_equal(results: Path, data: Path) -> None:
    recs = read_results(results)[1]
    want = baseline(data)
    assert sorted(r.key for r in recs) == sorted(want)  # every (input, method) exactly once
    for r in recs:
        assert r.verdict is want[r.key].verdict, r
        assert r.bound == pytest.approx(want[r.key].bound, rel=1e-9, abs=1e-12), r


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_prints_everything_done_and_resume_completes(tmp_path, monkeypatch, capsys, sig):
    data = write_data(tmp_path)
    results = tmp_path / "r.jsonl"
    rounds = 2 if sig == signal.SIGINT else 1  # the second interrupted run starts from resumed records
    for k in range(rounds):
        extra = ["--results", str(results)] if k == 0 else ["--resume", str(results)]
        proc = start(tmp_path, *cli_args(data), *extra)
        wait_for(results, n_records(results) + 6, proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + sig, err
        assert "--resume" in err and "Traceback" not in err
        assert table_counts(out) == file_counts(results)  # the table shows everything done, resumed included
    assert resume_in_process(tmp_path, monkeypatch, data, results) == 0
    capsys.readouterr()
    assert_complete_and_equal(results, data)


def test_sigkill_then_resume_while_locked_is_refused(tmp_path, monkeypatch, capsys):
    data = write_data(tmp_path)
    results = tmp_path / "r.jsonl"
    proc = start(tmp_path, *cli_args(data), "--results", str(results))
    wait_for(results, 5, proc)
    assert resume_in_process(tmp_path, monkeypatch, data, results) == 2  # the running process holds the file
    err = capsys.readouterr().err
    assert f"pid {proc.pid}" in err and "in use" in err, err
    proc.kill()
    proc.communicate(timeout=60)
    assert resume_in_process(tmp_path, monkeypatch, data, results) == 0  # the lock died with the process
    capsys.readouterr()
    assert_complete_and_equal(results, data)


@pytest.mark.slow
def test_sigkill_at_many_moments(tmp_path, monkeypatch, capsys):
    """Kill at several moments (from right after start to late in the run), resuming each time."""
    data = write_data(tmp_path)
    results = tmp_path / "r.jsonl"
    rng = np.random.default_rng(0)
    for k in range(6):
        extra = ["--results", str(results)] if not results.exists() else ["--resume", str(results)]
        proc = start(tmp_path, *cli_args(data), *extra)
        time.sleep(float(rng.uniform(0.5, 3.0)))
        proc.kill()
        proc.communicate(timeout=60)
    if not results.exists():
        pytest.skip("no run got as far as writing its results file")
    assert resume_in_process(tmp_path, monkeypatch, data, results) == 0
    capsys.readouterr()
    assert_complete_and_equal(results, data)
