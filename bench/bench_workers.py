"""Throughput of ``--workers`` and ``--cluster`` against one process, and the cluster path's overhead.

Usage::

    python bench/bench_workers.py                  # both parts below
    python bench/bench_workers.py --part sdp       # SDP, rsl18 pgd_nn, 20 MNIST test inputs, eps 0.1:
                                                   #   one process vs --workers 2 vs --cluster (LocalCluster, 2 workers)
    python bench/bench_workers.py --part overhead  # CROWN on models/digits_mlp.pt, 200 digits inputs:
                                                   #   sequential vs the cluster path (and --workers 2)

Every run is the ``verify`` command line in a fresh process (start-up, loading and worker start included),
reading its records back from ``--json``; the parallel runs must give the same verdicts and bounds as the
sequential one. Prints wall times, throughput ratios against the sequential run of the same invocation, and
the load average before and after (the machine is shared: quote the load with the numbers). The overhead
part also times the library path on a warm cluster (``run_tasks`` with a ``DaskExecutor``), median of 3.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DIGITS = ROOT / "models" / "digits_mlp.pt"


def load() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0] if Path("/proc/loadavg").exists() else "?"


def cli(args: list[str], workdir: Path) -> tuple[float, dict]:
    """Run ``verify ARGS --json`` in a fresh process; (wall seconds, records by key)."""
    out = workdir / f"r{time.monotonic_ns()}.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "verify.cli", *args, "--json", str(out), "--quiet",
                           "--results", str(out.with_suffix(".jsonl"))], cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"verify failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    recs = json.loads(out.read_text())["records"]
    return wall, {(r["index"], r["eps"], r["method"]): r for r in recs}


def compare(base: dict, other: dict) -> str:
    """'identical' or what differs (verdicts must match exactly, bounds to 1e-9)."""
    if base.keys() != other.keys():
        return f"DIFFERENT records: {len(base)} vs {len(other)}"
    bad = [k for k in base if base[k]["verdict"] != other[k]["verdict"]]
    gaps = [abs(base[k]["bound"] - other[k]["bound"]) for k in base
            if base[k]["bound"] is not None and other[k]["bound"] is not None]
    worst = max(gaps, default=0.0)
    if bad or worst > 1e-9:
        return f"DIFFERENT: {len(bad)} verdicts, max |bound difference| {worst:.2e}"
    return f"identical verdicts and bounds (max |bound difference| {worst:.1e})"


def local_cluster(n_workers: int = 2):  # noqa: ANN201
    import distributed

    cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, silence_logs=logging.ERROR)
    return cluster, distributed.Client(cluster, set_as_default=False)


def part_sdp(n: int, workdir: Path, with_cluster: bool) -> None:
    net, data = SHARED / "nets" / "rsl18" / "pgd_nn.npz", SHARED / "mnist" / "mnist_test.npz"
    if not net.exists() or not data.exists():
        print(f"skipped: {net} or {data} is missing")
        return
    args = [str(net), "--data", str(data), "--methods", "sdp", "--eps", "0.1", "--n", str(n)]
    print(f"SDP, rsl18 pgd_nn, {n} MNIST test inputs, eps 0.1  (load before: {load()})")
    t1, base = cli(args, workdir)  # as a user runs it (the SDP's algebra is single-threaded anyway)
    print(f"  one process         {t1:7.1f} s   {n / t1:.3f} inputs/s   (load {load()})")
    t2, par = cli([*args, "--workers", "2"], workdir)
    print(f"  --workers 2         {t2:7.1f} s   throughput x{t1 / t2:.2f}   {compare(base, par)}   (load {load()})")
    if with_cluster:
        cluster, client = local_cluster()
        try:
            t3, clu = cli([*args, "--cluster", client.scheduler.address], workdir)
        finally:
            client.close()
            cluster.close()
        print(f"  --cluster (2 procs) {t3:7.1f} s   throughput x{t1 / t3:.2f}   {compare(base, clu)}   (load {load()})")


def part_overhead(n: int, workdir: Path) -> None:
    print(f"CROWN, models/digits_mlp.pt, {n} digits inputs  (load before: {load()})")
    args = [str(DIGITS), "--data", "digits", "--methods", "crown", "--eps", "0.05", "--n", str(n)]
    cluster, client = local_cluster()
    try:
        seq, clu, loc = [], [], []
        for _ in range(3):
            seq.append(cli([*args, "--threads", "1"], workdir))
            clu.append(cli([*args, "--cluster", client.scheduler.address], workdir))
            loc.append(cli([*args, "--workers", "2"], workdir))
        s, c, w = (statistics.median(t for t, _ in runs) for runs in (seq, clu, loc))
        print(f"  command line, median of 3 (start-up, loading, {n} tasks):")
        print(f"    sequential        {s:6.2f} s")
        print(f"    --cluster         {c:6.2f} s   cost x{c / s:.2f}   {compare(seq[0][1], clu[0][1])}")
        print(f"    --workers 2       {w:6.2f} s   cost x{w / s:.2f}   {compare(seq[0][1], loc[0][1])}")
        library_overhead(client, n)
    finally:
        client.close()
        cluster.close()
    print(f"  (load after: {load()})")


def library_overhead(client, n: int) -> None:  # noqa: ANN001
    import torch

    from verify.cluster import DaskExecutor
    from verify.data import load_dataset
    from verify.load import load_model
    from verify.options import Options
    from verify.runner import make_tasks, run_tasks
    from verify.worker import FileSource

    torch.set_num_threads(1)
    loaded = load_model(DIGITS)
    x, y = load_dataset("digits", n, 0, loaded.network.in_dim)
    tasks = make_tasks(x, y, (0.05,))
    ex = DaskExecutor(client, FileSource(loaded.network.digest(), str(DIGITS), {}))
    run_tasks(None, tasks, ("crown",), Options(), executor=ex)  # warm: workers import verify and load the model
    seq, clu = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        run_tasks(loaded.network, tasks, ("crown",), Options(), loaded.reference)
        seq.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_tasks(None, tasks, ("crown",), Options(), executor=ex)
        clu.append(time.perf_counter() - t0)
    s, c = statistics.median(seq), statistics.median(clu)
    print(f"  library, warm 2-worker cluster, median of 3: sequential {s:.3f} s, cluster {c:.3f} s, cost x{c / s:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("sdp", "overhead", "all"), default="all")
    p.add_argument("--n", type=int, default=None, help="inputs (default 20 for sdp, 200 for overhead)")
    p.add_argument("--no-cluster", action="store_true", help="sdp part: skip the LocalCluster run")
    a = p.parse_args()
    os.environ["PYTHONPATH"] = str(ROOT)  # this checkout, for the verify processes and the LocalCluster's workers
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        if a.part in ("sdp", "all"):
            part_sdp(a.n or 20, Path(tmp), not a.no_cluster)
        if a.part in ("overhead", "all"):
            part_overhead(a.n or 200, Path(tmp))


if __name__ == "__main__":
    main()
