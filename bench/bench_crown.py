"""Benchmark: IBP / CROWN / both alpha-CROWN variants' margin bounds on rsl18 PGD-NN (784-200-100-50-10).

100 MNIST test images at eps 0.1 (L-inf, clipped to [0, 1]), all 9 robustness margins each, in
float32 and float64. Prints the median of several runs per method and its ratio to IBP measured in
the same run (runs are interleaved so that machine load hits every method alike), plus how many
images each method certifies. Target: CROWN < 0.2 s for the batch. The method names are those of
``verify.certify`` and ``--methods``: "alpha-crown-output" optimizes the slopes for the margins only,
"alpha-crown" for every layer's bounds (the per-property method of the same name).

The machine's load average is printed: on a shared 2-core machine, torch's two intra-op threads
wait on each other whenever another process holds a core, and every op then costs a scheduler
time slice; ``--threads 1`` measures the code rather than the contention.

Run by hand: ``python bench/bench_crown.py [--repeats 7] [--alpha-steps 20] [--threads N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from verify.bounds import margin_lower_bounds
from verify.options import Options
from verify.spec import robustness_spec

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load(n: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray]:
    net = np.load(DATA / "nets" / "rsl18" / "pgd_nn.npz")
    chain = [(net[f"W{i}"].astype(np.float64), net[f"b{i}"].astype(np.float64)) for i in range(4)]
    mnist = np.load(DATA / "mnist" / "mnist_test.npz")
    return chain, mnist["x"][:n].reshape(n, -1) / 255.0, mnist["y"][:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--alpha-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    chain_np, x, y = load(args.n)
    opts = Options(alpha_steps=args.alpha_steps)
    print(f"rsl18 pgd_nn 784-200-100-50-10, {args.n} images, eps {args.eps}, 9 margins each, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, alpha steps {args.alpha_steps}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    for dtype in (torch.float32, torch.float64):
        chain = [(torch.tensor(w, dtype=dtype), torch.tensor(b, dtype=dtype)) for w, b in chain_np]
        lo = torch.tensor(np.clip(x - args.eps, 0, 1), dtype=dtype)
        hi = torch.tensor(np.clip(x + args.eps, 0, 1), dtype=dtype)
        C = torch.tensor(np.stack([robustness_spec(int(label), 10).C for label in y]), dtype=dtype)
        times: dict[str, list[float]] = {"ibp": [], "crown": [], "alpha-crown-output": [], "alpha-crown": []}
        certified: dict[str, int] = {}
        for rep in range(args.repeats):
            for method in times:
                if method.startswith("alpha") and rep >= max(1, args.repeats // 2):
                    continue  # slow: fewer repeats
                with torch.no_grad():
                    start = time.perf_counter()
                    lb = margin_lower_bounds(chain, lo, hi, C, None, method, opts)
                    times[method].append(time.perf_counter() - start)
                certified[method] = int((lb.min(dim=1).values > 0).sum())
        base = statistics.median(times["ibp"])
        for method, ts in times.items():
            med = statistics.median(ts)
            print(f"  {str(dtype).split('.')[-1]:8s} {method:18s} median {med * 1e3:9.2f} ms over {len(ts)} runs "
                  f"(min {min(ts) * 1e3:8.2f})  x{med / base:8.1f} IBP   certified {certified[method]}/{args.n}")


if __name__ == "__main__":
    main()
