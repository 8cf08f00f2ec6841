"""``verify NET --vnnlib SPEC``: one VNN-COMP property, answered holds / violated / unknown (or timeout).

Methods run cheapest first and stop at the first decisive answer; by default a short attack, CROWN,
the SDP where its predicted time is a small share of what is left, then branch and bound (``bab``,
whose root is alpha-CROWN) with the rest of the time. ``--timeout`` is the whole
wall time of the run (VNN-COMP semantics): each method gets what is left, and a watchdog writes
``timeout`` and ends the process should anything overrun it. The result file (``--out``) follows the
VNN-COMP convention: the first line is ``holds``, ``violated``, ``unknown`` or ``timeout``; after
``violated`` comes the counterexample as ``((X_0 v) ... (Y_0 v) ...)``. ``--proof FILE`` saves the
checked branch-and-bound proof behind a ``holds``; ``--check-proof FILE`` re-checks a saved one.
SIGTERM (e.g. from ``timeout``) writes the answer so far before exiting.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from verify.budget import Budget
from verify.cli_args import UsageError, options_from_args, parse_methods_arg
from verify.cli_run import load
from verify.methods import run_method
from verify.results import MethodResult, Verdict

#: the cascade; bab's root is alpha-CROWN (every layer's slopes optimized), so it is not run twice; the SDP
#: runs only where its predicted time fits :data:`SDP_SHARE` of what is left
VNNLIB_DEFAULT_METHODS = ("attack", "crown", "sdp", "bab")
SDP_SHARE = 0.2
#: seconds kept back from --timeout for writing the answer and leaving
RESERVE_S = 0.5


def run_vnnlib(args: argparse.Namespace) -> int:
    """Decide one property; prints the answer and the methods' results, writes ``--out``."""
    from verify.load.vnnlib import parse_vnnlib

    start = time.perf_counter() - process_age()  # the timeout counts from the process start, imports included
    options = options_from_args(args)
    used = time.perf_counter() - start
    deadline = Budget.start(None if options.timeout is None else max(1e-3, options.timeout - used - RESERVE_S))
    methods = parse_methods_arg(args.methods) or VNNLIB_DEFAULT_METHODS
    _check_paths(args)
    loaded = load(args)
    net = loaded.network
    prop = parse_vnnlib(args.vnnlib, net.in_dim, net.out_dim)
    if args.check_proof:
        return _check_saved_proof(args, net, prop)
    answer = _Answer(args.out)
    guard = _Watchdog(answer, options.timeout, start) if options.timeout is not None else None
    previous = signal.signal(signal.SIGTERM, answer.on_sigterm)
    try:
        text, results = decide(net, prop, methods, options.with_(timeout=None), loaded.reference, deadline, answer)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if guard is not None:
            guard.cancel()
    for res in results:
        print(f"{res.method:12s} {res.verdict.value:10s} bound {res.bound: .5g}  {res.time_s:.2f}s  {res.message}", file=sys.stderr)
    answer.write(text, result_text(text, results, net, loaded.reference))
    print(text)
    _save_proof(args, results)
    print(f"time: {time.perf_counter() - start:.2f}s", file=sys.stderr)
    return 0


def process_age() -> float:
    """Seconds since this process started (Linux ``/proc``; 0 where that cannot be read)."""
    try:
        with open("/proc/self/stat") as fh:
            ticks = float(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _check_paths(args: argparse.Namespace) -> None:
    if getattr(args, "check_proof", None) and not Path(args.check_proof).is_file():
        raise UsageError(f"--check-proof: {args.check_proof} does not exist")


def decide(net, prop, methods, options, reference, deadline: Budget | None = None,  # type: ignore[no-untyped-def]
           answer: "_Answer | None" = None) -> tuple[str, list[MethodResult]]:
    """Run methods in order until one certifies (``holds``) or falsifies (``violated``).

    ``deadline`` bounds the whole run: each method gets what is left (``options.timeout``); with
    nothing left the answer is ``timeout`` if some method was cut short, else ``unknown``.
    """
    deadline = deadline or Budget.start(options.timeout)
    results: list[MethodResult] = []
    for name in methods:
        if deadline.expired():
            return "timeout", results
        if name == "sdp" and methods == VNNLIB_DEFAULT_METHODS and not sdp_pays(net, prop, options, deadline):
            continue
        res = run_method(name, net, prop, deadline.options_for(options), reference)
        results.append(res)
        if answer is not None:
            answer.progress(results)
        if res.verdict is Verdict.FALSIFIED and res.counterexample is not None:
            return "violated", results
        if res.verdict is Verdict.CERTIFIED:
            return "holds", results
    return ("timeout" if deadline.expired() else "unknown"), results


def sdp_pays(net, prop, options, deadline: Budget) -> bool:  # type: ignore[no-untyped-def]
    """Whether the SDP is predicted (:func:`verify.relax.sdp_cost.sdp_fits`, on CROWN's unstable neurons) to
    take at most :data:`SDP_SHARE` of the time left (of 60 s without a timeout)."""
    from verify.relax.sdp_cost import sdp_fits

    left = deadline.remaining() if deadline.deadline is not None else 60.0
    return sdp_fits(net, prop.box, options, SDP_SHARE * left, prop.output.n_margins)


def result_text(answer: str, results: list[MethodResult], net, reference) -> str:  # type: ignore[no-untyped-def]
    """The result file's text in the VNN-COMP convention."""
    if answer != "violated":
        return answer + "\n"
    x = np.asarray(results[-1].counterexample, dtype=np.float64).ravel()
    y = np.asarray(reference(x[None]) if reference is not None else net.forward(x[None]), dtype=np.float64).ravel()
    pairs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(x)] + [f"(Y_{j} {float(v)!r})" for j, v in enumerate(y)]
    return "violated\n(" + "\n".join(pairs) + ")\n"


class _Answer:
    """The ``--out`` file, written once: by the normal end, the watchdog or SIGTERM, whichever is first."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.done = False
        self.results: list[MethodResult] = []

    def progress(self, results: list[MethodResult]) -> None:
        self.results = list(results)

    def write(self, answer: str, text: str | None = None) -> bool:
        with self.lock:
            if self.done:
                return False
            self.done = True
            if self.path:
                tmp = f"{self.path}.tmp{os.getpid()}"
                Path(tmp).write_text(text if text is not None else answer + "\n")
                os.replace(tmp, self.path)
            return True

    def on_sigterm(self, signum, frame) -> None:  # type: ignore[no-untyped-def]
        if self.write("unknown"):
            print("unknown", flush=True)
            print("terminated (SIGTERM): answered unknown", file=sys.stderr, flush=True)
        os._exit(143)


class _Watchdog:
    """Writes ``timeout`` and ends the process if the run is still going at the deadline."""

    def __init__(self, answer: _Answer, timeout: float, start: float) -> None:
        self.answer = answer
        delay = max(0.0, timeout - (time.perf_counter() - start) - 0.1)
        self.timer = threading.Timer(delay, self._fire)
        self.timer.daemon = True
        self.timer.start()

    def _fire(self) -> None:
        if self.answer.write("timeout"):
            print("timeout", flush=True)
            print("the --timeout was reached before an answer", file=sys.stderr, flush=True)
            os._exit(0)

    def cancel(self) -> None:
        self.timer.cancel()


def _save_proof(args: argparse.Namespace, results: list[MethodResult]) -> None:
    if not getattr(args, "proof", None):
        return
    proof = next((r.extra.get("proof") for r in results if r.verdict is Verdict.CERTIFIED and "proof" in r.extra), None)
    if proof is None:
        print(f"no branch-and-bound proof to save in {args.proof} (the answer did not come from bab)", file=sys.stderr)
        return
    from verify.bab import save_proof

    save_proof(proof, args.proof)
    print(f"proof: {args.proof}", file=sys.stderr)


def _check_saved_proof(args: argparse.Namespace, net, prop) -> int:  # type: ignore[no-untyped-def]
    from verify.bab import ProofError, check_proof, load_proof

    try:
        proof = load_proof(args.check_proof)
    except ProofError as err:
        raise UsageError(str(err)) from None
    check = check_proof(net, prop, proof)
    print("holds" if check.ok else "unknown")
    print(check.message if check.ok else f"the proof does not check: {check.message}", file=sys.stderr)
    return 0 if check.ok else 1
