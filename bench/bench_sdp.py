"""Table 1 of Raghunathan, Steinhardt & Liang (2018) on the three rsl18 networks at eps 0.1.

Usage::

    python bench/bench_sdp.py --n 100                 # fraction not certified by SDP and LP, per network
    python bench/bench_sdp.py --nets pgd_nn --n 5     # a few images of one network
    python bench/bench_sdp.py --speed                 # one pgd_nn image, all nine margins, timed
    python bench/bench_sdp.py --compare mnistfc:4 --n 30      # alpha-CROWN / LP / SDP per row, VNN-LIB properties
    python bench/bench_sdp.py --compare eran:mnist_6_100_nat --n 20
    python bench/bench_sdp.py --certify models/mnist_mlp_pgd.pt --n 100   # certify mode + PGD, s/image

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
          f"SDP column = {label} with {options.sdp_bounds} bounds, LP = triangle LP with interval bounds; load {_load()}")
    print(f"{'network':8s} {'SDP':>6s} {'paper':>6s} {'LP':>6s} {'paper':>6s} {'SDP s/img (median)':>19s} {'LP s/img':>9s}")
    for name, miss, times in summary:
        lp = f"{miss['lp'] / n:6.2f}" if with_lp else "   n/a"
        lpt = f"{np.median(times['lp']):9.2f}" if with_lp else "      n/a"
        print(f"{name:8s} {miss['sdp'] / n:6.2f} {paper[(name, 'sdp_cert')]:6.2f} {lp} {paper[(name, 'lp_cert')]:6.2f} "
              f"{np.median(times['sdp']):19.2f} {lpt}")


def run_speed(options: Options, image: int) -> None:
    """One pgd_nn image: (1) certification mode, all nine margins (stop when a bound is > 0);
    (2) tight mode, all nine margins solved to the interior-point tolerance through the API (bounds, build,
    solve, check), with each margin's gap to the primal value (the SDP optimum lies between the checked
    bound and the primal value, up to the primal infeasibility); (3) margin 0 again at tolerance 1e-10,
    as the converged reference."""
    xs, ys = mnist_test(image + 1)
    net = rsl18("pgd_nn")
    prop = robustness_property(xs[image], int(ys[image]), 0.1, (net.domain_lower, net.domain_upper), net.out_dim)
    print(f"options: sdp_bounds={options.sdp_bounds}, triangle={options.sdp_triangle}, tolerance={options.sdp_tolerance}, "
          f"workers={options.sdp_workers}; load {_load()}")
    t0 = time.perf_counter()
    res = certify_sdp(net, prop, options)
    print(f"certify (target 0): {time.perf_counter() - t0:7.1f}s wall, {res.verdict.value}, "
          f"bounds {np.array2string(res.margin_bounds, precision=4)}")
    t0 = time.perf_counter()
    lower, status, certs = sdp_margin_bounds(net, prop.box, prop.output, options)
    wall = time.perf_counter() - t0
    gaps = np.array([c.primal - b for c, b in zip(certs, lower)])
    print(f"tight, all margins through the API (bounds, build, solve, check): {wall:7.1f}s wall, status {status.value}")
    print(f"  checked bounds {np.array2string(lower, precision=6)}")
    print(f"  primal - checked bound {np.array2string(gaps, precision=2)} (max {np.nanmax(gaps):.2g}; target <= 1e-5)")
    one = prop.output.C[:1], prop.output.d[:1]
    from verify.spec import OutputSpec

    ref, _, rc = sdp_margin_bounds(net, prop.box, OutputSpec(one[0], one[1], ((0,),)), options.with_(sdp_tolerance=1e-10))
    print(f"margin 0 at tol 1e-10: bound {ref[0]:.8f} ({rc[0].status.value}: {rc[0].message}); the tight run is "
          f"{ref[0] - lower[0]:.2g} below it; load {_load()}")


def _load() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def _nets_and_props(which: str, n: int, eps: float | None):  # type: ignore[no-untyped-def]
    """``(name, network, property)`` triples: "mnistfc:K" (the 2021 VNN-LIB properties of mnist-net_256xK),
    "eran:NAME" (first n test images at eps, default 0.026 for x100 and 0.015 for x200), or a model path
    (first n test images at eps, default 0.1)."""
    from verify.load import load_model, parse_vnnlib

    kind, _, arg = which.partition(":")
    if kind == "mnistfc":
        net = load_model(SHARED / "vnncomp2021" / "mnistfc" / f"mnist-net_256x{arg}.onnx").network
        props = sorted((SHARED / "vnncomp2021" / "mnistfc").glob("prop_*.vnnlib"),
                       key=lambda p: (float(p.stem.split("_")[2]), int(p.stem.split("_")[1])))
        for p in props[:n]:
            yield f"256x{arg} {p.stem}", net, parse_vnnlib(p, net.in_dim, net.out_dim)
        return
    if kind == "eran":
        net = load_model(SHARED / "nets" / "eran" / f"{arg}.pth").network
        eps = eps if eps is not None else (0.015 if "_200_" in arg else 0.026)
    else:
        net = load_model(which).network
        eps = eps if eps is not None else 0.1
    xs, ys = mnist_test(n)
    for i in range(n):
        yield (f"{Path(which).stem} #{i}", net,
               robustness_property(xs[i], int(ys[i]), eps, (net.domain_lower, net.domain_upper), net.out_dim))


def run_compare(which: str, n: int, eps: float | None, options: Options) -> None:
    """Per property: alpha-CROWN, the triangle LP on alpha-CROWN bounds, and the SDP (every row solved to
    tolerance) as row bounds; the SDP's worst row minus the others' (>= 0 means never looser); properties
    alpha-CROWN leaves open that the SDP proves."""
    from verify.bounds import preactivation_bounds
    from verify.bounds.method import certify_batch
    from verify.relax.lp import lp_margin_bounds

    print(f"options: sdp_bounds={options.sdp_bounds}, triangle={options.sdp_triangle}, time limit {options.time_limit}s "
          f"per margin; load {_load()}")
    opened = proved = worse = 0
    times = []
    for name, net, prop in _nets_and_props(which, n, eps):
        box, spec = prop.box, prop.output
        pre = preactivation_bounds(net, box, "alpha-crown", options)
        alpha = certify_batch(net, box.lower[None], box.upper[None], spec.C, spec.d, "alpha-crown", options)[0].numpy()
        lp, _, _ = lp_margin_bounds(net, box, spec, options.with_(bounds="alpha-crown"), pre)
        t0 = time.perf_counter()
        sdp, status, certs = sdp_margin_bounds(net, box, spec, options, pre)
        times.append(time.perf_counter() - t0)
        unstable = sum(int(np.sum((l < 0) & (u > 0))) for l, u in list(pre)[:-1])
        gap = np.nanmax([c.primal - b for c, b in zip(certs, sdp)])
        open_ = not spec.holds(alpha)
        opened += open_
        proved += open_ and spec.holds(sdp)
        worse += bool(np.any(sdp < np.maximum(alpha, lp) - 1e-6 * (1 + np.abs(sdp))))
        print(f"{name:24s} N={unstable:4d} alpha-CROWN {spec_bound(spec, alpha):+9.4f} LP {spec_bound(spec, lp):+9.4f} "
              f"SDP {spec_bound(spec, sdp):+9.4f} | SDP - max(alpha, LP) per row min {np.min(sdp - np.maximum(alpha, lp)):+.2e} "
              f"| gap {gap:.1e} {status.value} {times[-1]:6.1f}s", flush=True)
    print(f"\n{len(times)} properties: alpha-CROWN leaves {opened} open, the SDP proves {proved} of them; "
          f"rows where the SDP is below alpha-CROWN or the LP: {worse} properties; SDP s/property median "
          f"{np.median(times):.1f}; load {_load()}")


def spec_bound(spec, rows: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    from verify.results import group_bound

    return group_bound(spec.groups, rows)


def run_certify(which: str, n: int, eps: float | None, options: Options) -> None:
    """Certify mode on the first n test images of a model (e.g. models/mnist_mlp_pgd.pt at eps 0.1): SDP
    verdict and seconds per image, plus a PGD attack; certified + falsified counts and the median time."""
    from verify.attack import pgd_attack

    counts = {"certified": 0, "falsified": 0}
    times = []
    for name, net, prop in _nets_and_props(which, n, eps):
        t0 = time.perf_counter()
        res = certify_sdp(net, prop, options)
        times.append(time.perf_counter() - t0)
        att = pgd_attack(net, prop, options.with_(attack_steps=200, attack_restarts=10))
        counts["certified"] += res.verdict is Verdict.CERTIFIED
        counts["falsified"] += att.verdict is Verdict.FALSIFIED
        print(f"{name:24s} sdp {res.verdict.value:9s} bound {res.bound:+9.4f} {times[-1]:6.1f}s | pgd {att.verdict.value}",
              flush=True)
    print(f"\n{n} images: certified {counts['certified']}, falsified {counts['falsified']}, total "
          f"{counts['certified'] + counts['falsified']}; SDP s/image median {np.median(times):.2f} "
          f"(mean {np.mean(times):.2f}); load {_load()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="first N MNIST test images")
    ap.add_argument("--start", type=int, default=0, help="skip this many test images first (to split a run)")
    ap.add_argument("--nets", default=",".join(NETS), help="comma-separated subset of " + ",".join(NETS))
    ap.add_argument("--eps", type=float, default=None, help="default 0.1 (Table 1, --certify), the usual eps for ERAN")
    ap.add_argument("--bounds", default=Options().sdp_bounds, help="pre-activation bounds for the SDP")
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per margin")
    ap.add_argument("--iterations", type=int, default=300, help="interior-point iterations per margin")
    ap.add_argument("--no-lp", action="store_true", help="skip the LP column")
    ap.add_argument("--no-triangle", action="store_true", help="SDP without the triangle cuts")
    ap.add_argument("--tolerance", type=float, default=Options().sdp_tolerance, help="SDP relative gap tolerance")
    ap.add_argument("--speed", action="store_true", help="time one pgd_nn image, all nine margins")
    ap.add_argument("--compare", metavar="NETS", help="alpha-CROWN / LP / SDP row bounds on mnistfc:K, eran:NAME or a "
                    "model path (first --n properties or images; --eps for images)")
    ap.add_argument("--certify", metavar="MODEL", help="SDP certify mode + PGD on the first --n images of MODEL at --eps")
    ap.add_argument("--workers", type=int, default=1, help="processes solving margins in parallel (Options.sdp_workers)")
    ap.add_argument("--image", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(relativeCreated)8d %(message)s")
    options = Options(sdp_bounds=args.bounds, time_limit=args.time_limit, sdp_iterations=args.iterations,
                      sdp_triangle=not args.no_triangle, sdp_workers=args.workers, sdp_tolerance=args.tolerance)
    if args.speed:
        run_speed(options, args.image)
    elif args.compare:
        run_compare(args.compare, args.n, args.eps, options)
    elif args.certify:
        run_certify(args.certify, args.n, args.eps, options)
    else:
        run_table([s.strip() for s in args.nets.split(",") if s.strip()], args.n, args.eps or 0.1, options,
                  not args.no_lp, args.start)


if __name__ == "__main__":
    main()
