"""The Dask path (``--cluster``, ``verify.verify(..., client=)``) on a LocalCluster of 2 worker processes on
loopback: the sequential records, a worker killed mid-run, a task that keeps killing workers, refused versions,
an unreachable scheduler, and resuming across local and cluster runs."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

import verify
from verify.cli import main
from verify.cluster import ClusterError, DaskExecutor, connect
from verify.limits import Limits
from verify.options import Options
from verify.results import Verdict
from verify.results_file import ResultsFile, read_results
from verify.runner import Sink, run_tasks
from verify.worker import FileSource, WorkerError, code_version

from faults import DIGITS, EPS, FaultySource
from test_workers import METHODS, assert_same, by_key, digits, sequential

distributed = pytest.importorskip("distributed", reason="Dask's distributed is not installed (pip install 'verify[cluster]')")


@pytest.fixture(autouse=True)
def _drop_stale_log_handlers():
    """``verify.cli.main`` logs to the stderr of its call (a captured stream that closes with the test); the
    in-process scheduler's later log lines must not go there."""
    yield
    root = logging.getLogger()
    for h in [h for h in root.handlers if type(h) is logging.StreamHandler]:
        root.removeHandler(h)


@contextlib.contextmanager
def local_cluster():
    """A LocalCluster of 2 single-threaded worker processes on loopback, and a client of it."""
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):  # a killer task is found after 2 deaths
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                           dashboard_address=None, silence_logs=logging.CRITICAL)
        c = distributed.Client(cluster, set_as_default=False)
        try:
            yield c
        finally:
            c.close()
            cluster.close()


@pytest.fixture(scope="module")
def client():
    """Shared by the tests that kill no worker."""
    with local_cluster() as c:
        yield c


@pytest.fixture
def own_client():
    """A cluster of its own, for a test that kills workers (a restarting nanny must not stall the next test)."""
    with local_cluster() as c:
        yield c


def source(loaded) -> FileSource:
    return FileSource(loaded.network.digest(), DIGITS, {})


def test_cluster_gives_the_sequential_records(client):
    loaded, tasks = digits(10)
    want = sequential(10, METHODS)
    got = run_tasks(None, tasks, METHODS, Options(), executor=DaskExecutor(client, source(loaded)))
    assert_same(got, want)


def test_a_worker_killed_mid_run_loses_nothing(own_client, tmp_path):
    client = own_client
    loaded, tasks = digits(10)
    want = sequential(10, METHODS)
    pids = client.run(os.getpid)
    killed = []

    def kill_one(rec) -> None:
        if not killed and len(sink.records) >= 4:
            victim = next(iter(pids.values()))
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    with ResultsFile.create(tmp_path / "r.jsonl", {"test": True}) as rf:
        sink = Sink(results=rf, on_record=kill_one)
        run_tasks(None, tasks, METHODS, Options(), sink=sink, executor=DaskExecutor(client, source(loaded)))
    assert killed
    on_disk = read_results(tmp_path / "r.jsonl")[1]
    assert len(on_disk) == len({r.key for r in on_disk}) == len(want)  # every record exactly once
    assert_same(on_disk, want)


@pytest.mark.slow  # a cluster of its own plus two worker deaths; the local pool's test of the same runs by default
def test_a_task_that_keeps_killing_workers_becomes_error(own_client, tmp_path):
    client = own_client
    loaded, tasks = digits(2)
    faulty = FaultySource(loaded.network.digest(), DIGITS, {}, tuple(tasks[1].x), str(tmp_path), crashes=100)
    got = by_key(run_tasks(None, tasks, ("crown", "attack"), Options(), executor=DaskExecutor(client, faulty)))
    for m in ("crown", "attack"):  # a chunk's records come back with the chunk: none from the dying one
        bad = got[(1, EPS, m)]
        assert bad.verdict is Verdict.ERROR and "Dask workers died 2 times" in bad.message
    assert all(r.verdict is not Verdict.ERROR for k, r in got.items() if k[0] == 0)


@pytest.mark.slow  # the same limits code as test_workers' in-process test, inside a Dask worker thread
def test_memory_limit_holds_on_the_cluster(own_client, tmp_path):
    client = own_client
    loaded, tasks = digits(2)
    base = max(client.run(lambda: __import__("verify.limits").limits.process_tree_rss() or 0).values())
    if not base:
        pytest.skip("no /proc: memory limits are not measured on this platform")
    greedy = FaultySource(loaded.network.digest(), DIGITS, {}, tuple(tasks[1].x), str(tmp_path), alloc_mb=600, sleep_s=5.0)
    ex = DaskExecutor(client, greedy, Limits(memory_bytes=base + 300 * 2**20))
    got = by_key(run_tasks(None, tasks, ("crown", "attack"), Options(), executor=ex))
    assert got[(1, EPS, "attack")].verdict is Verdict.ERROR and "memory limit" in got[(1, EPS, "attack")].message


def test_library_verify_with_a_client(client):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.rand(6, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    want = verify.verify(model, x, y, 0.05, methods=("attack", "crown"))
    got = verify.verify(model, x, y, 0.05, methods=("attack", "crown"), client=client)
    assert_same(got.records, want.records)
    assert [r.key for r in got.records] == [r.key for r in want.records]


def test_other_verify_version_is_refused(client, tmp_path, monkeypatch, capsys):
    def fake() -> None:
        import verify.worker as w

        w.code_version = lambda: "9.9.9+other"

    def real() -> None:
        import importlib

        import verify.worker as w

        importlib.reload(w)

    client.run(fake)
    try:
        loaded, tasks = digits(2)
        with pytest.raises(WorkerError, match=r"9\.9\.9\+other.*" + code_version().replace("+", r"\+")):
            run_tasks(None, tasks, ("crown",), Options(), executor=DaskExecutor(client, source(loaded)))
        monkeypatch.chdir(tmp_path)
        assert main([DIGITS, "--n", "2", "--methods", "crown", "--cluster", client.scheduler.address]) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and "9.9.9+other" in err[0] and code_version() in err[0], err
        assert not (tmp_path / "verify-runs").exists()
    finally:
        client.run(real)


def test_resume_a_local_run_on_the_cluster(client, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = [DIGITS, "--n", "8", "--methods", "crown,attack", "--quiet"]
    assert main([*args, "--results", "r.jsonl"]) == 0
    full = (tmp_path / "r.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "r.jsonl").write_text("".join(full[:6]))  # as if interrupted after 5 records
    assert main([*args, "--resume", "r.jsonl", "--cluster", client.scheduler.address]) == 0
    capsys.readouterr()
    recs = read_results(tmp_path / "r.jsonl")[1]
    assert sorted(r.key for r in recs) == sorted(r.key for r in read_results_lines(full))
    assert_same(recs, read_results_lines(full))


def read_results_lines(lines: list[str]):
    import json

    from verify.report import Record

    return [Record.from_dict({k: v for k, v in json.loads(ln).items() if k != "type"}) for ln in lines[1:]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    t0 = time.monotonic()
    assert main([DIGITS, "--n", "2", "--methods", "crown", "--cluster", f"tcp://127.0.0.1:{_free_port()}"]) == 2
    assert time.monotonic() - t0 < 5
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "cannot reach the Dask scheduler" in err[0], err
    assert not (tmp_path / "verify-runs").exists()


def test_without_dask_the_cluster_flag_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ClusterError, match=r"verify\[cluster\]"):
        connect("tcp://127.0.0.1:8786")


def test_tasks_are_batched_for_cheap_work(client):
    loaded, tasks = digits(200)
    sizes: list[int] = []
    ex = DaskExecutor(client, source(loaded))
    orig = client.submit

    def counting_submit(fn, batch, jobs, **kw):  # noqa: ANN001
        sizes.append(len(jobs))
        return orig(fn, batch, jobs, **kw)

    client.submit = counting_submit
    try:
        recs = run_tasks(None, tasks, ("crown",), Options(), executor=ex)
    finally:
        del client.submit
    assert len(recs) == 200
    assert len(sizes) < 40 and max(sizes) > 10, sizes  # far fewer round trips than tasks
    assert np.sum(sizes) == 200


@pytest.mark.slow
def test_cluster_sdp_on_rsl18_matches_sequential(client):
    """The bench's SDP workload (rsl18 pgd_nn, MNIST, eps 0.1) on a few inputs: identical verdicts and bounds."""
    from conftest import shared_path

    from verify.data import load_dataset
    from verify.load import load_model
    from verify.runner import make_tasks

    net_path = shared_path("nets", "rsl18", "pgd_nn.npz")
    loaded = load_model(net_path)
    x, y = load_dataset(str(shared_path("mnist", "mnist_test.npz")), 4, 0, loaded.network.in_dim)
    tasks = make_tasks(x, y, (0.1,))
    want = run_tasks(loaded.network, tasks, ("sdp",), Options(), loaded.reference)
    got = run_tasks(None, tasks, ("sdp",), Options(),
                    executor=DaskExecutor(client, FileSource(loaded.network.digest(), str(net_path), {})))
    assert_same(got, want)


def test_cooperative_timeout_holds_on_the_cluster(client):
    loaded, tasks = digits(2)
    recs = run_tasks(None, tasks, ("crown", "ibp"), Options(timeout=1e-9), executor=DaskExecutor(client, source(loaded)))
    ran = [r for r in recs if r.method == "ibp" and r.message != "clean input is misclassified"]
    assert ran and all(r.status.value == "time_limit" for r in ran)


def test_ctrl_c_keeps_what_finished_and_leaves_the_cluster_up(client, tmp_path):
    import subprocess

    from verify.data import load_dataset

    x, y = load_dataset("digits", 30)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    results = tmp_path / "r.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "verify.cli", DIGITS, "--n", "30", "--methods", "crown,attack,sdp",
                             "--data", str(tmp_path / "d.npz"), "--results", str(results), "--quiet",
                             "--cluster", client.scheduler.address], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and (not results.exists() or results.read_text().count('"record"') < 6):
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.skip("the run finished before the interrupt could be sent")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and "--resume" in err, err
    n_table = sum(int(ln.split()[1]) for ln in out.splitlines() if ln.split()[:1] in (["crown"], ["attack"], ["sdp"]))
    assert n_table == len(read_results(results)[1]) > 0
    assert len(client.run(os.getpid)) == 2  # the cluster is still there
