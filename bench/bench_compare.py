"""Compare mode on rsl18 PGD-NN (784-200-100-50-10): SDP optimum against LP optimum on every margin.

First ``--n`` MNIST test images (default 20), eps 0.1. For each image both relaxations get the same
pre-activation bounds (CROWN), the LP is solved to optimum (HiGHS) and the SDP to its tolerance
(``sdp_margin_bounds(..., target=None)``, as ``--compare`` does); both values are the checked sound bounds.
Prints per image the smallest ``SDP - LP`` over the nine margins, the median, the time of each, and the
count of margins where the SDP is below the LP by more than ``1e-6 (1 + |LP|)`` (the target: none).

Run by hand: ``python bench/bench_compare.py [--n 20] [--eps 0.1] [--start 0]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from verify.bounds import preactivation_bounds
from verify.network import Affine, Network, ReLU
from verify.options import Options
from verify.relax.lp import lp_margin_bounds
from verify.relax.sdp import sdp_margin_bounds
from verify.spec import robustness_property

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pgd_nn() -> Network:
    d = np.load(DATA / "nets" / "rsl18" / "pgd_nn.npz")
    ops: list = []
    for i in range(4):
        ops += [Affine(d[f"W{i}"].astype(np.float64), d[f"b{i}"].astype(np.float64), f"fc{i}"), ReLU()]
    return Network.from_ops(ops[:-1], (784,), (0.0, 1.0), name="pgd_nn")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--eps", type=float, default=0.1)
    args = p.parse_args()
    torch.set_num_threads(1)
    net = pgd_nn()
    mnist = np.load(DATA / "mnist" / "mnist_test.npz")
    x = mnist["x"][args.start : args.start + args.n].reshape(args.n, -1) / 255.0
    y = mnist["y"][args.start : args.start + args.n]
    opt = Options()
    print(f"load {os.getloadavg()[0]:.2f}; {net.describe()}, eps {args.eps}, images {args.start}..{args.start + args.n - 1}")
    print("image  label  min(SDP-LP)  median(SDP-LP)  LP s  SDP s  status")
    below, diffs, t_lp, t_sdp = 0, [], [], []
    for i in range(args.n):
        prop = robustness_property(x[i], int(y[i]), args.eps, (net.domain_lower, net.domain_upper), net.out_dim)
        pre = preactivation_bounds(net, prop.box, "crown", opt)
        t0 = time.perf_counter()
        lp, _, _ = lp_margin_bounds(net, prop.box, prop.output, opt, pre)
        t1 = time.perf_counter()
        sdp, status, _ = sdp_margin_bounds(net, prop.box, prop.output, opt, pre, target=None)
        t2 = time.perf_counter()
        d = sdp - lp
        below += int(np.sum(sdp < lp - 1e-6 * (1.0 + np.abs(lp))))
        diffs += d.tolist()
        t_lp.append(t1 - t0)
        t_sdp.append(t2 - t1)
        print(f"{args.start + i:5d}  {int(y[i]):5d}  {d.min():11.4g}  {np.median(d):14.4g}  {t1 - t0:4.1f}  {t2 - t1:5.1f}  {status.value}",
              flush=True)
    print(f"margins with SDP below LP: {below} of {len(diffs)}; median SDP - LP {statistics.median(diffs):.4g}; "
          f"median time LP {statistics.median(t_lp):.2f} s, SDP {statistics.median(t_sdp):.1f} s per image; "
          f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
