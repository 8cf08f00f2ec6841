"""The SDP paper's comparison (Raghunathan, Steinhardt & Liang 2018, Table 1) on one network, as a script.

    python examples/compare_sdp_lp.py                                        # shipped digits model
    python examples/compare_sdp_lp.py NET.npz --data mnist_test.npz --eps 0.1 --n 10 --report cmp.html

Runs PGD, LP (interval bounds, the paper's "LP-cert"), LP (CROWN bounds) and the SDP on the same inputs and
prints the fraction not certified by each, beside the attack's lower bound on robust error.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from verify.data import load_dataset
from verify.load import load_model
from verify.options import Options
from verify.report import Report
from verify.runner import make_tasks, run_tasks

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "digits_mlp.pt"


def main(argv: list[str] | None = None) -> Report:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default=str(DEFAULT_MODEL))
    p.add_argument("--data", default=None, help="inputs (default: the model's own, e.g. digits)")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--report", default=None, help="also write an HTML report")
    args = p.parse_args(argv)

    loaded = load_model(args.model)
    net = loaded.network
    x, y = load_dataset(args.data or loaded.meta.get("data"), args.n, 0, net.in_dim)
    records = []
    for label, opts, methods in (
        ("interval bounds", Options(bounds="interval"), ("attack", "lp", "sdp")),
        ("CROWN bounds", Options(bounds="crown"), ("lp", "sdp")),
    ):
        recs = run_tasks(net, make_tasks(x, y, (args.eps,)), methods, opts, loaded.reference)
        for r in recs:
            records.append(r if r.method == "attack" else dataclasses.replace(r, method=f"{r.method} ({label})"))
    report = Report(records, {"network": net.describe(), "network_hash": net.digest(), "eps": [args.eps],
                              "eps_units": "input units", "model": args.model})
    print(report.table())
    for s in report.summaries():
        if s.method == "attack":  # the attack proves errors: a lower bound on robust error
            print(f"{'PGD error (falsified)':28s}               {s.falsified / s.n:6.1%}   mean time {s.mean_time_s:7.3f}s")
        else:
            print(f"{s.method:28s} not certified: {1 - s.certified_accuracy:6.1%}   mean time {s.mean_time_s:7.3f}s")
    if args.report:
        report.to_html(args.report)
    return report


if __name__ == "__main__":
    main()
