"""ERAN's MNIST MLPs: how many of the first test images ``verify`` certifies, against PRIMA's published counts.

For each network (../shared/data/nets/eran) and each of the first ``--n`` MNIST test images, the
``--vnnlib`` cascade (attack, CROWN, branch and bound) runs in this process with ``--timeout`` seconds
per image; misclassified images count as neither certified nor falsified (as in ERAN's tables). Prints
per network: certified / falsified / unknown, the mean and median time per image, and PRIMA's
certified fraction and mean time from ../shared/data/published/eran_prima_table.csv (on the first 1000
images; compare fractions). Answers are appended to ``--log`` as they come.

    python bench/bench_eran.py --timeout 60 --n 100
    python bench/bench_eran.py --nets 6_100 --n 20 --timeout 30
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from verify.budget import Budget
from verify.cli_vnnlib import VNNLIB_DEFAULT_METHODS, decide
from verify.load import load_model
from verify.options import Options
from verify.spec import robustness_property

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EPS = {"6_100": 0.026, "9_100": 0.026, "6_200": 0.015, "9_200": 0.015}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nets", default="6_100,9_100,6_200", help="comma-separated ERAN nets (mnist_<name>_nat.pth)")
    p.add_argument("--n", type=int, default=100, help="first N test images")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per image, all methods")
    p.add_argument("--log", default="bench-eran.csv")
    return p.parse_args(argv)


def prima() -> dict[str, dict]:
    rows = list(csv.DictReader(open(DATA / "published" / "eran_prima_table.csv")))
    return {r["network"].replace("x", "_"): r for r in rows if r["dataset"] == "MNIST"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    mnist = np.load(DATA / "mnist" / "mnist_test.npz")
    xs = mnist["x"][: args.n].reshape(args.n, -1).astype(np.float64) / 255.0
    ys = mnist["y"][: args.n].astype(np.int64)
    table = prima()
    summary = []
    with open(args.log, "w", newline="") as fh:
        log = csv.writer(fh)
        log.writerow(["net", "index", "answer", "time_s"])
        for name in args.nets.split(","):
            path = DATA / "nets" / "eran" / f"mnist_{name}_nat.pth"
            if not path.exists():
                print(f"{name}: {path} not found, skipped")
                continue
            loaded = load_model(path)
            net, eps = loaded.network, EPS[name]
            counts, times = {"holds": 0, "violated": 0, "unknown": 0, "timeout": 0, "misclassified": 0}, []
            for i, (x, y) in enumerate(zip(xs, ys)):
                t0 = time.perf_counter()
                if int(np.argmax(net.forward(x))) != int(y):
                    answer = "misclassified"
                else:
                    prop = robustness_property(x, int(y), eps, (net.domain_lower, net.domain_upper), net.out_dim)
                    options = Options()
                    answer, _ = decide(net, prop, VNNLIB_DEFAULT_METHODS, options, loaded.reference,
                                       Budget.start(args.timeout))
                elapsed = time.perf_counter() - t0
                counts[answer] += 1
                times.append(elapsed)
                log.writerow([name, i, answer, f"{elapsed:.2f}"])
                fh.flush()
                print(f"{name} image {i}: {answer} ({elapsed:.1f}s)", flush=True)
            summary.append((name, eps, counts, times))
    print(f"\n{'net':6s} {'eps':>6s} {'n':>4s} {'cert':>5s} {'fals':>5s} {'unkn':>5s} {'miscl':>6s} {'mean s':>7s} {'med s':>6s}"
          f" | PRIMA cert/1000 (frac)  mean s")
    for name, eps, c, t in summary:
        p = table.get(name, {})
        frac = f"{int(p['prima_certified'])}/1000 ({int(p['prima_certified']) / 1000:.2f})" if p else "-"
        n = len(t)
        print(f"{name:6s} {eps:6.3f} {n:4d} {c['holds']:5d} {c['violated']:5d} {c['unknown'] + c['timeout']:5d} "
              f"{c['misclassified']:6d} {statistics.mean(t):7.1f} {statistics.median(t):6.1f} | "
              f"{frac:22s} {p.get('prima_avg_runtime_s', '-')}   ours: {c['holds'] / max(n, 1):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
