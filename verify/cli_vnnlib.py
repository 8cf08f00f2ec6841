"""``verify NET --vnnlib SPEC``: one VNN-COMP property, answered holds / violated / unknown.

Methods run cheapest first (attack, then the certifiers of ``--methods``) and stop at the first decisive
answer. The result file follows the VNN-COMP 2021 convention: the first line is ``holds``, ``violated``
or ``unknown``; after ``violated`` comes the counterexample as ``((X_0 v) ... (Y_0 v) ...)``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from verify.cli_args import options_from_args, parse_methods_arg
from verify.budget import Budget
from verify.cli_run import load
from verify.methods import run_method
from verify.results import MethodResult, Verdict

VNNLIB_DEFAULT_METHODS = ("attack", "ibp", "crown", "alpha-crown", "lp")


def run_vnnlib(args: argparse.Namespace) -> int:
    """Decide one property; prints the answer and the methods' results, writes ``--out``."""
    from verify.load.vnnlib import parse_vnnlib

    options = options_from_args(args)
    methods = parse_methods_arg(args.methods) or VNNLIB_DEFAULT_METHODS
    loaded = load(args)
    net = loaded.network
    prop = parse_vnnlib(args.vnnlib, net.in_dim, net.out_dim)
    start = time.perf_counter()
    answer, results = decide(net, prop, methods, options, loaded.reference)
    for res in results:
        print(f"{res.method:12s} {res.verdict.value:10s} bound {res.bound: .5g}  {res.time_s:.2f}s  {res.message}", file=sys.stderr)
    print(answer)
    print(f"time: {time.perf_counter() - start:.2f}s", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(result_text(answer, results, net, loaded.reference))
    return 0


def decide(net, prop, methods, options, reference) -> tuple[str, list[MethodResult]]:
    """Run methods in order until one certifies (``holds``) or falsifies (``violated``)."""
    results = []
    budget = Budget.start(options.timeout)
    for name in methods:
        if budget.expired():
            break
        res = run_method(name, net, prop, budget.options_for(options), reference)
        results.append(res)
        if res.verdict is Verdict.FALSIFIED and res.counterexample is not None:
            return "violated", results
        if res.verdict is Verdict.CERTIFIED:
            return "holds", results
    return "unknown", results


def result_text(answer: str, results: list[MethodResult], net, reference) -> str:
    """The result file's text in the VNN-COMP convention."""
    if answer != "violated":
        return answer + "\n"
    x = np.asarray(results[-1].counterexample, dtype=np.float64).ravel()
    y = np.asarray(reference(x[None]) if reference is not None else net.forward(x[None]), dtype=np.float64).ravel()
    pairs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(x)] + [f"(Y_{j} {float(v)!r})" for j, v in enumerate(y)]
    return "violated\n(" + "\n".join(pairs) + ")\n"
