"""The CLI's main job: load, run every method on every input, keep results safe, render the report."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import platform
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from verify import cli_workers
from verify.cli_args import UsageError
from verify.cli_progress import Progress
from verify.network import Network
from verify.options import Options
from verify.report import Record, Report
from verify.results_file import ResultsFile, create_default, read_results
from verify.radius import read_radii, run_radii
from verify.runner import Sink, make_tasks, run_tasks, validate_tasks
from verify.spec import domain_notice
from verify.sweep import Known, sweep_order

RUNS_DIR = Path("verify-runs")
def default_methods(net: Network, x=None, eps: float | None = None, options: Options | None = None) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    """attack, IBP, CROWN, alpha-CROWN, LP; plus the SDP where its predicted time on the input ``x`` at ``eps``
    fits the per-input budget (``options.timeout``, else 30 s; :func:`verify.relax.sdp_cost.sdp_fits`)."""
    from verify.relax.sdp_cost import sdp_fits
    from verify.spec import linf_ball

    base = ("attack", "ibp", "crown", "alpha-crown", "lp")
    if x is None or eps is None:
        return base
    box = linf_ball(x, eps, net.domain_lower, net.domain_upper)
    return base + ("sdp",) if sdp_fits(net, box, options or Options()) else base


def load(args: argparse.Namespace):
    """The model, as a :class:`verify.load.LoadedModel`."""
    from verify.load import load_model

    return load_model(args.model, **cli_workers.loader_kwargs(args))


class Terminated(KeyboardInterrupt):
    """SIGTERM (e.g. from a batch scheduler or ``kill``), handled like Ctrl-C; exit code 143."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated`, so the run stops as on Ctrl-C."""

    def stop(signum: int, frame: object) -> None:
        raise Terminated()

    try:
        old = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def execute(args: argparse.Namespace, eps_values: tuple[float, ...], methods: tuple[str, ...] | None, options: Options) -> int:
    """Connect to the cluster, load, check every input, open (or resume) the results file, run, print the
    table; the exit code."""
    cli_workers.check_args(args)
    client = cli_workers.connect(args)  # an unreachable or mismatched cluster fails before any work
    try:
        return _execute(args, eps_values, methods, options, client)
    finally:
        if client is not None:
            client.close()


def _execute(args: argparse.Namespace, eps_values: tuple[float, ...], methods: tuple[str, ...] | None, options: Options,
             client: object) -> int:
    from verify.data import load_dataset

    loaded = load(args)
    net = loaded.network
    data = args.data or loaded.meta.get("data")
    if data is None:
        raise UsageError("no inputs: pass --data FILE (.npz with x and y, or a torch tensor file), or --vnnlib SPEC")
    x, y = load_dataset(data, args.n, args.start, net.in_dim)
    tasks = make_tasks(x, y, sweep_order(eps_values), args.start)
    validate_tasks(net, tasks)  # before anything is written (and before the SDP cost model reads x[0])
    methods = methods or default_methods(net, x[0] if len(x) else None, max(eps_values), options)
    limits = cli_workers.limits(args, options)
    executor = cli_workers.executor(args, net, options, limits, client)
    meta = run_meta(args, net, loaded.source, data, methods, eps_values, options)
    notice = domain_notice(eps_values, net.domain_lower, net.domain_upper)
    if notice:  # allowed, but never silent: on stderr and in the report's metadata
        print(f"verify: note: {notice}", file=sys.stderr)
        meta["notices"] = [notice]
    results, prior = open_results(args, meta)
    progress = Progress(len(tasks), methods, enabled=not args.quiet, prior=prior)
    sink = Sink(prior, results, progress.update)
    known = Known()
    for rec in prior:
        known.add(rec)
    radii = read_radii(results.path) if args.resume is not None else []
    try:
        with sigterm_as_interrupt():
            run_tasks(net, tasks, methods, options, loaded.reference, sink, executor, limits, known)
            progress.close()
            if args.radius is not None:
                radius_phase(args, net, x, y, methods, options, loaded.reference, sink.records, radii, results)
    except KeyboardInterrupt as stop:
        results.close()
        progress.close()
        print(Report(sink.records, meta, radii).table())
        print(f"interrupted: finished results are in {results.path}; continue with --resume {results.path}", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    finally:
        results.close()
    progress.close()
    return finish(args, Report(sink.records, meta, radii), results.path)


def radius_phase(args: argparse.Namespace, net: Network, x, y, methods, options: Options, reference, records: list,  # type: ignore[no-untyped-def]
                 radii: list, results: ResultsFile) -> None:
    """Certified radii of every input not done yet (loosest method first), appended to ``radii`` and
    written to the results file as each input finishes."""
    from verify.registry import METHODS

    done = {r.index for r in radii}
    order = sorted(methods, key=METHODS.index)

    def write(rs: list) -> None:
        for r in rs:
            results.append_radius(r)
        results.flush()
        radii.extend(rs)
        done.add(rs[0].index)
        if not args.quiet:
            print(f"\rradius: {len(done)}/{len(x)} inputs", end="", file=sys.stderr, flush=True)

    run_radii(net, x, y, args.start, order, options, reference, args.radius, records, set(done), write)
    if not args.quiet:
        print(file=sys.stderr)


def finish(args: argparse.Namespace, report: Report, path: Path) -> int:
    """Print the table and write the requested reports."""
    print(report.table())
    print(f"results: {path}", file=sys.stderr)
    if args.json:
        report.to_json(args.json)
        print(f"json: {args.json}", file=sys.stderr)
    if args.report:
        report.to_html(args.report)
        print(f"report: {args.report}", file=sys.stderr)
    return 0


def run_meta(args, net: Network, source: str, data: str, methods, eps_values, options: Options) -> dict:
    """Everything needed to understand (and resume) a run."""
    import numpy
    import torch

    from verify import __version__

    return {
        "verify_version": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "model": str(args.model),
        "model_source": source,
        "network": net.describe(),
        "network_hash": net.digest(),
        "data": str(data),
        "start": args.start,
        "n": args.n,
        "eps": list(eps_values),
        "eps_units": "input units (the model file's own, e.g. pixels in [0,1]); normalization is folded into the network",
        "methods": list(methods),
        "radius_tol": args.radius,
        "options": dataclasses.asdict(options),
        "command": " ".join(sys.argv),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


#: options that change how a run is executed, not its results: a run may resume with other values
EXECUTION_OPTIONS = ("sdp_workers",)


def open_results(args: argparse.Namespace, meta: dict) -> tuple[ResultsFile, list[Record]]:
    """The (locked) results file to append to, and the records already in it when resuming."""
    if args.resume is None:
        if args.results:
            return ResultsFile.create(args.results, meta), []
        return create_default(RUNS_DIR, Path(args.model).stem, meta), []
    path = latest_run(args.model, meta["network_hash"]) if args.resume == "latest" else Path(args.resume)
    results, old, records = ResultsFile.resume(path)
    for key in ("network_hash", "methods", "data", "start", "n", "eps", "options", "radius_tol"):
        theirs, ours = old.get(key), meta.get(key)
        if key == "options" and isinstance(theirs, dict) and isinstance(ours, dict):
            theirs, ours = ({k: v for k, v in o.items() if k not in EXECUTION_OPTIONS} for o in (theirs, ours))
        if theirs != ours:
            results.close()
            raise UsageError(f"cannot resume {path}: its {key} ({theirs}) differs from this run's ({ours})")
    return results, records


def latest_run(model: str, network_hash: str) -> Path:
    """The most recently written results file in verify-runs/ for this network."""
    for path in sorted(RUNS_DIR.glob(f"{Path(model).stem}-*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name), reverse=True):
        try:
            meta, _ = read_results(path)
        except ValueError:
            continue
        if meta.get("network_hash") == network_hash:
            return path
    raise UsageError(f"--resume: no earlier run of {model} in {RUNS_DIR}/; name the results file: --resume FILE")
