"""Eps sweeps and certified radii on the shipped digits model: what reusing results across eps saves.

On the first ``--n`` digits test inputs (default 20) with attack, IBP, CROWN, alpha-CROWN, LP and SDP in
verdict mode (one torch thread), measured in the same process, interleaved over ``--repeats`` rounds:

* ``single``: one eps (the middle of the sweep);
* ``sweep``: the five eps values with the reuse of :mod:`verify.sweep` (what the CLI does);
* ``naive``: the same five eps without reuse (every method on every eps);
* ``radius``: certified radii by bisection (:mod:`verify.radius`, tolerance ``--tol``), starting from the
  sweep's records (the CLI's ``--eps ... --radius``), and alone (no sweep records).

Prints the median wall time of each and its ratio to ``single`` (target: sweep <= 3x single), how many
method runs each needed, and the load average. Run by hand: ``python bench/bench_sweep.py [--n 20]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from verify.data import load_dataset
from verify.load import load_model
from verify.options import Options
from verify.radius import run_radii
from verify.results import SolverStatus
from verify.runner import make_tasks, run_tasks
from verify.sweep import Known, sweep_order

MODEL = Path(__file__).resolve().parents[1] / "models" / "digits_mlp.pt"
METHODS = ("attack", "ibp", "crown", "alpha-crown", "lp", "sdp")
EPS = (0.02, 0.04, 0.06, 0.08, 0.1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tol", type=float, default=1e-3)
    args = p.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(MODEL)
    net = loaded.network
    x, y = load_dataset("digits", args.n, 0, net.in_dim)
    opts = Options()

    def sweep(eps: tuple[float, ...], reuse: bool) -> list:
        return run_tasks(net, make_tasks(x, y, sweep_order(eps)), METHODS, opts, loaded.reference,
                         known=Known() if reuse else None)

    records = sweep(EPS, True)  # warm-up (imports, first solves) and the radius search's starting brackets
    cases = {
        "single": lambda: sweep((EPS[len(EPS) // 2],), True),
        "sweep": lambda: sweep(EPS, True),
        "naive": lambda: sweep(EPS, False),
        "radius (after sweep)": lambda: run_radii(net, x, y, 0, METHODS, opts, loaded.reference, args.tol, records),
        "radius (alone)": lambda: run_radii(net, x, y, 0, METHODS, opts, loaded.reference, args.tol),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    runs: dict[str, int] = {}
    loads = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t0)
            runs[name] = (sum(r.evaluations for r in out) if name.startswith("radius")
                          else sum(r.status is not SolverStatus.NOT_RUN for r in out))
        loads.append(os.getloadavg()[0])
    base = statistics.median(times["single"])
    print(f"digits {net.describe()}, {args.n} inputs, methods {','.join(METHODS)}, eps {EPS}, radius tol {args.tol:g}; "
          f"load average {min(loads):.2f}-{max(loads):.2f} over {args.repeats} interleaved rounds")
    print(f"{'case':22s} {'median s':>9s} {'x single':>9s} {'method runs':>12s}")
    for name in cases:
        med = statistics.median(times[name])
        print(f"{name:22s} {med:9.2f} {med / base:9.2f} {runs[name]:12d}")


if __name__ == "__main__":
    main()
