"""Local worker processes (``--workers N``) and per-task limits: the same records as a sequential run, nothing
lost or doubled when a worker dies, a task that keeps killing workers recorded as ERROR, limits that stop a
method instead of the run, and workers that never outlive the client."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from verify.chunks import Chunker
from verify.cli import main
from verify.data import load_dataset
from verify.limits import Limits, parse_memory, process_tree_rss
from verify.load import load_model
from verify.options import Options
from verify.pool import LocalPool, worker_options
from verify.results import SolverStatus, Verdict
from verify.results_file import read_results
from verify.runner import Sink, make_tasks, run_tasks
from verify.worker import FileSource

from faults import DIGITS, EPS, FaultySource


@functools.lru_cache(maxsize=None)
def digits(n: int):
    """The digits model and tasks for its first ``n`` test inputs at ``EPS``."""
    loaded = load_model(DIGITS)
    x, y = load_dataset("digits", n, 0, loaded.network.in_dim)
    return loaded, make_tasks(x, y, (EPS,))


@functools.lru_cache(maxsize=None)
def sequential(n: int, methods: tuple[str, ...]) -> tuple:
    """The records of a sequential run in this process (the reference for every parallel path)."""
    loaded, tasks = digits(n)
    return tuple(run_tasks(loaded.network, tasks, methods, Options(), loaded.reference))


def by_key(records) -> dict:
    return {r.key: r for r in records}


def assert_same(got, want) -> None:
    got, want = by_key(got), by_key(want)
    assert sorted(got) == sorted(want)
    for k, r in want.items():
        assert got[k].verdict is r.verdict, (k, got[k], r)
        assert got[k].bound == pytest.approx(r.bound, rel=1e-9, abs=1e-12) or (np.isnan(got[k].bound) and np.isnan(r.bound))


METHODS = ("crown", "attack", "sdp")


def test_two_workers_give_the_sequential_records():
    loaded, tasks = digits(10)
    want = sequential(10, METHODS)
    source = FileSource(loaded.network.digest(), DIGITS, {})
    seen = []
    sink = Sink(on_record=seen.append)
    got = run_tasks(None, tasks, METHODS, Options(), sink=sink, executor=LocalPool(source, 2))
    assert_same(got, want)
    assert len(seen) == len(want)  # progress saw every record once
    assert [(r.index, r.method) for r in got] == [(r.index, r.method) for r in want]  # returned in task order


def test_a_dead_worker_loses_nothing_and_a_killer_task_becomes_error(tmp_path):
    loaded, tasks = digits(8)
    want = sequential(8, ("crown", "attack"))
    digest = loaded.network.digest()
    # one death: the task is retried and every record appears once, as in the sequential run
    (tmp_path / "a").mkdir()
    once = FaultySource(digest, DIGITS, {}, tuple(tasks[3].x), str(tmp_path / "a"), crashes=1)
    got = run_tasks(None, tasks, ("crown", "attack"), Options(), executor=LocalPool(once, 2))
    assert len(os.listdir(tmp_path / "a")) == 1
    assert_same(got, want)
    # a task that kills every worker: ERROR with the reason after max_attempts deaths, the rest complete
    (tmp_path / "b").mkdir()
    always = FaultySource(digest, DIGITS, {}, tuple(tasks[3].x), str(tmp_path / "b"), crashes=100)
    got = by_key(run_tasks(None, tasks, ("crown", "attack"), Options(), executor=LocalPool(always, 2, Limits(max_attempts=2))))
    assert len(os.listdir(tmp_path / "b")) == 2
    bad = got.pop((3, EPS, "attack"))
    assert bad.verdict is Verdict.ERROR and "died 2 times" in bad.message and "SIGKILL" in bad.message
    assert got[(3, EPS, "crown")] == by_key(want)[(3, EPS, "crown")] or got[(3, EPS, "crown")].verdict is by_key(want)[(3, EPS, "crown")].verdict
    assert_same(got.values(), [r for r in want if r.key != (3, EPS, "attack")])


def test_limits_stop_a_method_not_the_run(tmp_path):
    loaded, tasks = digits(3)
    digest = loaded.network.digest()
    target = tuple(tasks[1].x)

    def run(source: FaultySource, limits: Limits) -> dict:
        src = source.load()
        t0 = time.monotonic()
        recs = run_tasks(src.network, tasks, ("crown", "attack", "ibp"), Options(), src.reference, limits=limits)
        return by_key(recs), time.monotonic() - t0

    slow = FaultySource(digest, DIGITS, {}, target, str(tmp_path), sleep_s=60.0)
    recs, seconds = run(slow, Limits(time_s=1.5))
    assert seconds < 30
    stopped = [recs[(1, EPS, m)] for m in ("attack", "ibp")]
    assert all(r.verdict is Verdict.UNKNOWN and r.status is SolverStatus.TIME_LIMIT for r in stopped)
    assert recs[(1, EPS, "crown")].status is not SolverStatus.TIME_LIMIT
    assert all(recs[(i, EPS, m)].status is not SolverStatus.TIME_LIMIT for i in (0, 2) for m in ("crown", "attack", "ibp"))

    greedy = FaultySource(digest, DIGITS, {}, target, str(tmp_path), alloc_mb=600, sleep_s=30.0)
    rss = process_tree_rss()
    if rss is None:
        pytest.skip("no /proc: memory limits are not measured on this platform")
    recs, seconds = run(greedy, Limits(memory_bytes=rss + 300 * 2**20))
    hit = recs[(1, EPS, "attack")]
    assert hit.verdict is Verdict.ERROR and "memory limit" in hit.message
    assert recs[(1, EPS, "ibp")].verdict is not Verdict.ERROR  # the next method still ran
    assert seconds < 20.0  # the allocation's sleep was cut short


def test_cooperative_timeout_holds_in_workers():
    loaded, tasks = digits(2)
    source = FileSource(loaded.network.digest(), DIGITS, {})
    recs = run_tasks(None, tasks, ("crown", "ibp"), Options(timeout=1e-9), executor=LocalPool(source, 1))
    ran = [r for r in recs if r.method == "ibp" and r.status is not SolverStatus.NOT_RUN]  # NOT_RUN: misclassified
    assert ran and all(r.status is SolverStatus.TIME_LIMIT for r in ran)


def test_sdp_workers_never_oversubscribe():
    o = Options(sdp_workers=4)
    assert worker_options(o, 2, cores=2).sdp_workers == 1
    assert worker_options(o, 2, cores=8).sdp_workers == 4
    assert worker_options(o, 3, cores=8).sdp_workers == 2
    assert worker_options(Options(), 4, cores=2).sdp_workers == 1


def test_chunks_grow_for_cheap_tasks_and_spread_the_end():
    c = Chunker(range(100), slots=2, target_s=0.5)
    assert len(c.take()) == 1  # nothing known yet
    c.observe([0.001])
    assert len(c.take()) == 25  # half a slot's share of the 99 left, rounded up
    c.observe([2.0] * 20)
    assert len(c.take()) == 1  # expensive tasks travel alone
    c.put_back([-1, -2])
    assert list(c.queue)[:2] == [-1, -2]


@pytest.mark.parametrize("text,value", [("4GiB", 4 * 2**30), ("500MB", 500 * 10**6), ("2g", 2 * 10**9), ("1024", 1024)])
def test_parse_memory(text, value):
    assert parse_memory(text) == value


@pytest.mark.parametrize("bad", [["--workers", "0"], ["--workers", "-2"], ["--workers", "2", "--cluster", "tcp://127.0.0.1:1"],
                                 ["--memory-limit", "lots"]])
def test_bad_execution_flags_are_usage_errors(tmp_path, monkeypatch, capsys, bad):
    monkeypatch.chdir(tmp_path)
    assert main([DIGITS, "--n", "2", "--methods", "crown", *bad]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("verify: error:") and (bad[0] in err[0] or "--workers" in err[0]), err
    assert not (tmp_path / "verify-runs").exists()


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(c) for t in os.listdir(f"/proc/{p}/task") for c in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to find the worker processes")
@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGKILL])
def test_cli_workers_stop_with_the_client_and_resume_completes(tmp_path, monkeypatch, capsys, sig):
    x, y = load_dataset("digits", 30)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    args = [DIGITS, "--eps", str(EPS), "--n", "30", "--methods", "crown,attack", "--data", str(tmp_path / "d.npz"), "--quiet"]
    results = tmp_path / "r.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "verify.cli", *args, "--workers", "2", "--results", str(results)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and (not results.exists() or results.read_text().count('"record"') < 6):
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.skip("the run finished before the signal could be sent")
    workers = _descendants(proc.pid)
    assert workers, "no worker processes found"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    deadline = time.time() + 10  # after SIGKILL the workers notice within about a second
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), "worker processes outlived the client"
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Traceback" not in err, err
        n_table = sum(int(ln.split()[1]) for ln in out.splitlines() if ln.split()[:1] in (["crown"], ["attack"]))
        assert n_table == len(read_results(results)[1])
    monkeypatch.chdir(tmp_path)
    assert main([*args, "--resume", str(results)]) == 0  # sequential resume of a workers run
    capsys.readouterr()
    objs = [json.loads(ln) for ln in results.read_text().splitlines()[1:]]
    assert sorted((o["index"], o["method"]) for o in objs) == sorted((i, m) for i in range(30) for m in ("crown", "attack"))


MALLOPT_PROBE = """
from verify.worker import relax_malloc_trim
changed = relax_malloc_trim()
print(changed)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
@pytest.mark.parametrize("env_value, expected", [("65536", "True"), (None, "False"), ("268435456", "False")])
def test_dask_nanny_malloc_trim_is_relaxed_only_when_tiny(env_value, expected):
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    if env_value is not None:
        env["MALLOC_TRIM_THRESHOLD_"] = env_value  # what Dask's nanny sets for its workers
    out = subprocess.run([sys.executable, "-c", MALLOPT_PROBE], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_executors_get_the_hardest_tasks_first():
    from verify.task_order import hardest_first, unstable_count

    loaded, _ = digits(6)
    x, y = load_dataset("digits", 6, 0, loaded.network.in_dim)
    tasks = make_tasks(x, y, (0.001, 0.2))  # the same inputs at a tiny and a large radius
    ordered = hardest_first(loaded.network, tasks, ("crown", "sdp"))
    assert sorted((t.index, t.eps) for t in ordered) == sorted((t.index, t.eps) for t in tasks)  # a permutation
    counts = [unstable_count(loaded.network, t.x, t.eps) for t in ordered]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    assert all(t.eps == 0.2 for t in ordered[:6])  # at eps 0.001 almost no ReLU is unstable
    assert hardest_first(loaded.network, tasks, ("crown", "attack")) == list(tasks)  # cheap: left alone
