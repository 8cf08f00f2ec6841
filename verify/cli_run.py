"""The CLI's main job: load, run every method on every input, keep results safe, render the report."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import platform
import sys
from pathlib import Path

from verify.cli_args import UsageError, parse_domain, parse_floats, parse_shape
from verify.cli_progress import Progress
from verify.network import Network
from verify.options import Options
from verify.report import Report
from verify.runner import ResultsFile, done_map, make_tasks, read_results, run_tasks
from verify.spec import domain_notice

RUNS_DIR = Path("verify-runs")
#: the SDP joins the default method set up to this many hidden units (see README for timings)
SDP_DEFAULT_MAX_HIDDEN = 150


def default_methods(net: Network) -> tuple[str, ...]:
    """attack, IBP, CROWN, alpha-CROWN, LP; plus the SDP where the network is small enough."""
    base = ("attack", "ibp", "crown", "alpha-crown", "lp")
    return base + ("sdp",) if sum(net.hidden_dims) <= SDP_DEFAULT_MAX_HIDDEN else base


def load(args: argparse.Namespace):
    """The model, as a :class:`verify.load.LoadedModel`."""
    from verify.load import load_model

    return load_model(
        args.model, arch=args.arch, trust_pickle=args.trust_pickle, domain=parse_domain(args.domain),
        input_shape=parse_shape(args.input_shape), mean=parse_floats(args.mean, "--mean"), std=parse_floats(args.std, "--std"),
    )


def execute(args: argparse.Namespace, eps_values: tuple[float, ...], methods: tuple[str, ...] | None, options: Options) -> int:
    from verify.data import load_dataset

    loaded = load(args)
    net = loaded.network
    data = args.data or loaded.meta.get("data")
    if data is None:
        raise UsageError("no inputs: pass --data FILE (.npz with x and y, or a torch tensor file), or --vnnlib SPEC")
    x, y = load_dataset(data, args.n, args.start, net.in_dim)
    methods = methods or default_methods(net)
    meta = run_meta(args, net, loaded.source, data, methods, eps_values, options)
    notice = domain_notice(eps_values, net.domain_lower, net.domain_upper)
    if notice:  # allowed, but never silent: on stderr and in the report's metadata
        print(f"verify: note: {notice}", file=sys.stderr)
        meta["notices"] = [notice]
    path, records = open_results(args, meta)
    tasks = make_tasks(x, y, eps_values, args.start)
    progress = Progress(len(tasks), methods, enabled=not args.quiet, prior=records)
    results = ResultsFile(path, meta)
    try:
        records += run_tasks(net, tasks, methods, options, loaded.reference, results, done_map(records), progress.update)
    except KeyboardInterrupt:
        results.close()
        progress.close()
        report = Report(records, meta)
        print(report.table())
        print(f"interrupted: finished results are in {path}; continue with --resume {path}", file=sys.stderr)
        return 130
    results.close()
    progress.close()
    report = Report(records, meta)
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
        "options": dataclasses.asdict(options),
        "command": " ".join(sys.argv),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def open_results(args: argparse.Namespace, meta: dict) -> tuple[Path, list]:
    """The results file to append to, and the records already in it when resuming."""
    if args.resume is None:
        if args.results:
            path = Path(args.results)
            if path.exists() and path.stat().st_size:
                raise UsageError(f"results file {path} exists; pass --resume {path} to continue it, or choose another --results")
        else:
            RUNS_DIR.mkdir(exist_ok=True)
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            path = RUNS_DIR / f"{Path(args.model).stem}-{stamp}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, []
    path = latest_run(args.model, meta["network_hash"]) if args.resume == "latest" else Path(args.resume)
    old, records = read_results(path)
    for key in ("network_hash", "methods", "data", "start", "n", "eps", "options"):
        if old.get(key) != meta.get(key):
            raise UsageError(f"cannot resume {path}: its {key} ({old.get(key)}) differs from this run's ({meta.get(key)})")
    return path, records


def latest_run(model: str, network_hash: str) -> Path:
    """The newest results file in verify-runs/ for this network."""
    for path in sorted(RUNS_DIR.glob(f"{Path(model).stem}-*.jsonl"), reverse=True):
        try:
            meta, _ = read_results(path)
        except ValueError:
            continue
        if meta.get("network_hash") == network_hash:
            return path
    raise UsageError(f"--resume: no earlier run of {model} in {RUNS_DIR}/; name the results file: --resume FILE")
