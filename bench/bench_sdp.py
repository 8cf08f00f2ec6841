"""Table 1 of Raghunathan, Steinhardt & Liang (2018) on the three rsl18 networks at eps 0.1.

Usage::

    python bench/bench_sdp.py --n 100                 # fraction not certified by SDP and LP, per network
    python bench/bench_sdp.py --nets pgd_nn --n 5     # a few images of one network
    python bench/bench_sdp.py --speed                 # one pgd_nn image, all nine margins, timed

Prints one line per image (verdicts, bounds, seconds) and a summary beside the paper's numbers
(``../shared/data/published/rsl18_table1.csv``). Misclassified images count as not certified.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import SHARED, mnist_test, rsl18  # noqa: E402

from verify.options import Options  # noqa: E402
from verify.relax.sdp import certify_sdp, sdp_margin_bounds  # noqa: E402
from verify.results import Verdict  # noqa: E402
from verify.spec import robustness_property  # noqa: E402

NETS = ("grad_nn", "lp_nn", "pgd_nn")


def paper_numbers() -> dict[tuple[str, str], float]:
    path = SHARED / "published" / "rsl18_table1.csv"
    with open(path) as f:
        return {(r["network"], r["method"]): float(r["fraction_not_certified"]) for r in csv.DictReader(f)}


def run_table(nets: list[str], n: int, eps: float, options: Options, with_lp: bool, start: int = 0) -> None:
    xs, ys = mnist_test(start + n)
    paper = paper_numbers()
    summary = []
    for name in nets:
        net = rsl18(name)
        miss = {"sdp": 0, "lp": 0}
        times = {"sdp": [], "lp": []}
        for i in range(start, start + n):
            prop = robustness_property(xs[i], int(ys[i]), eps, (net.domain_lower, net.domain_upper), net.out_dim)
            line = [f"{name} #{i:3d} label {ys[i]}"]
            t0 = time.perf_counter()
            sdp = certify_sdp(net, prop, options)
            times["sdp"].append(time.perf_counter() - t0)
            miss["sdp"] += sdp.verdict is not Verdict.CERTIFIED
            line.append(f"sdp {sdp.verdict.value:9s} bound {sdp.bound:+9.4f} {times['sdp'][-1]:7.1f}s")
            if with_lp:
                from verify.relax.lp import certify_lp

                t0 = time.perf_counter()
                lp = certify_lp(net, prop, options.with_(bounds="interval"))
                times["lp"].append(time.perf_counter() - t0)
                miss["lp"] += lp.verdict is not Verdict.CERTIFIED
                line.append(f"lp {lp.verdict.value:9s} bound {lp.bound:+9.4f} {times['lp'][-1]:6.1f}s")
            print(" | ".join(line), flush=True)
        summary.append((name, miss, times))
    label = "SDP+triangle" if options.sdp_triangle else "SDP"
    print(f"\nfraction NOT certified at eps {eps} on MNIST test images {start}..{start + n - 1} (paper: 1000 random points); "
          f"SDP column = {label} with {options.bounds} bounds, LP = triangle LP with interval bounds")
    print(f"{'network':8s} {'SDP':>6s} {'paper':>6s} {'LP':>6s} {'paper':>6s} {'SDP s/img (median)':>19s} {'LP s/img':>9s}")
    for name, miss, times in summary:
        lp = f"{miss['lp'] / n:6.2f}" if with_lp else "   n/a"
        lpt = f"{np.median(times['lp']):9.2f}" if with_lp else "      n/a"
        print(f"{name:8s} {miss['sdp'] / n:6.2f} {paper[(name, 'sdp_cert')]:6.2f} {lp} {paper[(name, 'lp_cert')]:6.2f} "
              f"{np.median(times['sdp']):19.2f} {lpt}")


def run_speed(options: Options, image: int) -> None:
    """One pgd_nn image: (1) certification mode, all nine margins (stop when a bound is > 0);
    (2) tight mode, all nine margins solved to the interior-point tolerance, with each margin's gap to
    the primal value (the SDP optimum lies between the sound bound and the primal value, up to the
    primal infeasibility); (3) margin 0 again at a 1000x smaller tolerance, as the converged reference."""
    from verify.bounds import preactivation_bounds
    from verify.relax.sdp_model import build_relaxation
    from verify.solvers.sdp_dual import solve_dual

    xs, ys = mnist_test(image + 1)
    net = rsl18("pgd_nn")
    prop = robustness_property(xs[image], int(ys[image]), 0.1, (net.domain_lower, net.domain_upper), net.out_dim)
    t0 = time.perf_counter()
    res = certify_sdp(net, prop, options)
    print(f"certify (target 0): {time.perf_counter() - t0:7.1f}s wall, {res.verdict.value}, "
          f"bounds {np.array2string(res.margin_bounds, precision=4)}")
    t0 = time.perf_counter()
    lower, status, _ = sdp_margin_bounds(net, prop.box, prop.output, options)
    wall = time.perf_counter() - t0
    print(f"tight, all margins through the API (bounds, build, solve, check): {wall:7.1f}s wall, status {status.value}")
    print(f"  checked bounds {np.array2string(lower, precision=6)}")
    rel = build_relaxation(net, prop.box, preactivation_bounds(net, prop.box, options.bounds, options))
    gaps, times = [], []
    for r in range(prop.output.n_margins):
        sol = solve_dual(rel, rel.objective(prop.output.C[r], prop.output.d[r]), options.time_limit, options.sdp_iterations)
        gaps.append(sol.gap)
        times.append(sol.time_s)
    print(f"  per margin: seconds {np.array2string(np.array(times), precision=2)}")
    print(f"  primal - sound bound {np.array2string(np.array(gaps), precision=2)} (max {max(gaps):.2g})")
    ref = solve_dual(rel, rel.objective(prop.output.C[0], prop.output.d[0]), 10 * options.time_limit,
                     options.sdp_iterations, tol=1e-10)
    print(f"margin 0 at tol 1e-10: bound {ref.bound:.8f} ({ref.status.value}, {ref.iterations} iterations); "
          f"the tight run is {ref.bound - lower[0]:.2g} below it (target: within 1e-3 of the converged value)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="first N MNIST test images")
    ap.add_argument("--start", type=int, default=0, help="skip this many test images first (to split a run)")
    ap.add_argument("--nets", default=",".join(NETS), help="comma-separated subset of " + ",".join(NETS))
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--bounds", default="crown", help="pre-activation bounds for the SDP")
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per margin")
    ap.add_argument("--iterations", type=int, default=300, help="interior-point iterations per margin")
    ap.add_argument("--no-lp", action="store_true", help="skip the LP column")
    ap.add_argument("--triangle", action="store_true", help="SDP plus triangle cuts (at least as tight as the LP)")
    ap.add_argument("--speed", action="store_true", help="time one pgd_nn image, all nine margins")
    ap.add_argument("--workers", type=int, default=1, help="processes solving margins in parallel (Options.sdp_workers)")
    ap.add_argument("--image", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(relativeCreated)8d %(message)s")
    options = Options(bounds=args.bounds, time_limit=args.time_limit, sdp_iterations=args.iterations,
                      sdp_triangle=args.triangle, sdp_workers=args.workers)
    if args.speed:
        run_speed(options, args.image)
    else:
        run_table([s.strip() for s in args.nets.split(",") if s.strip()], args.n, args.eps, options, not args.no_lp, args.start)


if __name__ == "__main__":
    main()
