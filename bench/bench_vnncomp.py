"""Run a VNN-COMP benchmark (``instances.csv``: network, property, timeout) through ``verify --vnnlib``.

Each instance runs as its own process (``verify NET --vnnlib SPEC --timeout T --out FILE``), exactly as a
competition harness would, with the instance's timeout (scaled by ``--scale``). Prints, per network:
holds / violated / unknown / timeout / wrong against the consensus verdicts, the same counts for every
tool listed in the CSV (the 2021 results), and our median / max time; answers are appended to
``--log`` as they come (so a long run loses nothing and ``--resume`` skips what is there).

    python bench/bench_vnncomp.py                                  # 2021 mnistfc, official timeouts
    python bench/bench_vnncomp.py --scale 0.25 --only 256x2 --limit 10

The ERAN networks (first 100 test images) are measured by bench/bench_eran.py.

Default data: ../shared/data/vnncomp2021/mnistfc (instances_with_results.csv).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MNISTFC = DATA / "vnncomp2021" / "mnistfc"
DECIDED = ("holds", "violated")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--folder", default=str(MNISTFC), help="benchmark folder with instances_with_results.csv")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every timeout by this")
    p.add_argument("--only", default=None, help="keep instances whose network name contains this")
    p.add_argument("--verdict", default=None, help="keep instances with this consensus verdict")
    p.add_argument("--limit", type=int, default=None, help="at most this many instances (after filtering)")
    p.add_argument("--methods", default=None, help="--methods passed to verify (default: its --vnnlib cascade)")
    p.add_argument("--log", default="bench-vnncomp.csv", help="answers are appended here as they come")
    p.add_argument("--resume", action="store_true", help="skip instances already in --log")
    p.add_argument("--threads", type=int, default=None, help="torch threads of each run")
    return p.parse_args(argv)


def load_instances(folder: Path) -> list[dict]:
    with open(folder / "instances_with_results.csv") as fh:
        return list(csv.DictReader(fh))


def tools(rows: list[dict]) -> list[str]:
    fixed = {"onnx", "vnnlib", "timeout_s", "test_idx", "label", "eps", "n_holds", "n_violated", "consensus", "majority"}
    return [k for k in rows[0] if k not in fixed]


def run_instance(row: dict, folder: Path, scale: float, methods: str | None, threads: int | None, out: Path) -> tuple[str, float]:
    timeout = float(row["timeout_s"]) * scale
    cmd = [sys.executable, "-m", "verify.cli", str(folder / row["onnx"]), "--vnnlib", str(folder / row["vnnlib"]),
           "--timeout", f"{timeout:g}", "--out", str(out)]
    if methods:
        cmd += ["--methods", methods]
    if threads:
        cmd += ["--threads", str(threads)]
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        return "hung", time.perf_counter() - t0
    elapsed = time.perf_counter() - t0
    answer = out.read_text().split("\n", 1)[0].strip() if out.exists() else "none"
    if elapsed > timeout + 2:
        answer = f"late-{answer}"
    return answer, elapsed


def consensus(row: dict) -> str:
    # the consensus marks 256x2 prop_14 at eps 0.03 as a conflict; PGD finds a counterexample there
    if (row["onnx"], row["vnnlib"]) == ("mnist-net_256x2.onnx", "prop_14_0.03.vnnlib"):
        return "violated"
    return row["consensus"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(args.folder)
    rows = load_instances(folder)
    names = tools(rows)
    rows = [r for r in rows if (args.only is None or args.only in r["onnx"]) and (args.verdict is None or consensus(r) == args.verdict)]
    rows = rows[: args.limit] if args.limit else rows
    log_path = Path(args.log)
    done = {}
    if args.resume and log_path.exists():
        with open(log_path) as fh:
            done = {(r["onnx"], r["vnnlib"]): r for r in csv.DictReader(fh)}
    new_log = not log_path.exists() or not args.resume
    with open(log_path, "w" if new_log else "a", newline="") as fh:
        writer = csv.writer(fh)
        if new_log:
            writer.writerow(["onnx", "vnnlib", "timeout_s", "consensus", "answer", "time_s"])
        results = []
        for i, row in enumerate(rows):
            key = (row["onnx"], row["vnnlib"])
            if key in done:
                results.append((row, done[key]["answer"], float(done[key]["time_s"])))
                continue
            answer, elapsed = run_instance(row, folder, args.scale, args.methods, args.threads, Path(f"/tmp/bench-vnncomp-{os.getpid()}.txt"))
            results.append((row, answer, elapsed))
            writer.writerow([row["onnx"], row["vnnlib"], float(row["timeout_s"]) * args.scale, consensus(row), answer, f"{elapsed:.2f}"])
            fh.flush()
            flag = "WRONG" if answer in DECIDED and consensus(row) in DECIDED and answer != consensus(row) else ""
            print(f"[{i + 1}/{len(rows)}] {row['onnx']} {row['vnnlib']}: {answer} ({elapsed:.1f}s; consensus {consensus(row)}) {flag}", flush=True)
    print_summary(results, names)
    return 0


def print_summary(results: list[tuple[dict, str, float]], names: list[str]) -> None:
    by_net: dict[str, list] = defaultdict(list)
    for row, answer, elapsed in results:
        by_net[row["onnx"]].append((row, answer, elapsed))
    print(f"\n{'network':24s} {'n':>3s} {'holds':>6s} {'viol':>5s} {'unkn':>5s} {'tmout':>6s} {'wrong':>6s} {'median s':>9s} {'max s':>7s}")
    total = Counter()
    for net, items in sorted(by_net.items()):
        c = Counter()
        for row, answer, _ in items:
            c[_bucket(answer)] += 1
            if answer in DECIDED and consensus(row) in DECIDED and answer != consensus(row):
                c["wrong"] += 1
        times = [e for _, _, e in items]
        total.update(c)
        total["n"] += len(items)
        print(f"{net:24s} {len(items):3d} {c['holds']:6d} {c['violated']:5d} {c['unknown']:5d} {c['timeout']:6d} {c['wrong']:6d} "
              f"{statistics.median(times):9.1f} {max(times):7.1f}")
    print(f"{'all':24s} {total['n']:3d} {total['holds']:6d} {total['violated']:5d} {total['unknown']:5d} {total['timeout']:6d} {total['wrong']:6d}")
    print(f"\ndecided by verify: {total['holds'] + total['violated']} of {total['n']}, wrong {total['wrong']}")
    print("\nthe 2021 tools on the same instances (decided / wrong against the consensus):")
    for name in names:
        dec = wrong = 0
        for row, _, _ in results:
            ans = row[name].split(":")[0]
            if ans in DECIDED:
                dec += 1
                wrong += consensus(row) in DECIDED and ans != consensus(row)
        print(f"  {name:10s} {dec:3d} decided, {wrong} wrong")
    nobody = [(r, a) for r, a, _ in results if not any(r[n].split(":")[0] in DECIDED for n in names)]
    if nobody:
        ours = sum(a in DECIDED for _, a in nobody)
        print(f"\ninstances no 2021 tool decided: {len(nobody)}; decided by verify: {ours}")


def _bucket(answer: str) -> str:
    if answer in ("holds", "violated", "unknown"):
        return answer
    return "timeout"


if __name__ == "__main__":
    sys.exit(main())
