"""Where the CLI's tasks run: in this process, in ``--workers N`` local processes, or on a ``--cluster``;
and the per-task ``--memory-limit``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from verify.cli_args import UsageError
from verify.limits import Limits, hard_time_limit, parse_memory
from verify.network import Network
from verify.options import Options
from verify.runner import Executor


def check_args(args: argparse.Namespace) -> None:
    """Usage errors of ``--workers``, ``--cluster`` and ``--memory-limit``, before any work."""
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers} (leave it out to run in this process)")
    if args.workers is not None and args.cluster:
        raise UsageError("--workers and --cluster exclude each other: a cluster's size is its workers'")
    if args.memory_limit is not None:
        try:
            parse_memory(args.memory_limit)
        except ValueError as err:
            raise UsageError(f"--memory-limit: {err}") from None


def limits(args: argparse.Namespace, options: Options) -> Limits:
    """Per-task limits: ``--memory-limit``, and a hard stop well past ``--timeout`` (see :mod:`verify.limits`)."""
    mem = parse_memory(args.memory_limit) if args.memory_limit is not None else None
    return Limits(memory_bytes=mem, time_s=hard_time_limit(options.timeout))


def connect(args: argparse.Namespace) -> Any:
    """The Dask client of ``--cluster`` (checked: reachable, with workers running this verify), or None."""
    if not args.cluster:
        return None
    from verify.cluster import check_workers, connect as dask_connect

    if not args.verbose:  # Dask logs every connection at INFO; the user wants our lines only
        try:
            import distributed  # noqa: F401 - importing it sets up its loggers; quiet them after
        except ImportError:
            pass  # dask_connect says what to install
        logging.getLogger("distributed").setLevel(logging.WARNING)
    client = dask_connect(args.cluster)
    try:
        check_workers(client)
    except BaseException:
        client.close()
        raise
    return client


def loader_kwargs(args: argparse.Namespace) -> dict:
    """The model loader's arguments, with paths made absolute (workers may run elsewhere)."""
    from verify.cli_args import parse_domain, parse_floats, parse_shape

    arch = args.arch
    if arch and ":" in arch:
        file, factory = arch.rsplit(":", 1)
        arch = f"{Path(file).resolve()}:{factory}"
    return {"arch": arch, "trust_pickle": args.trust_pickle, "domain": parse_domain(args.domain),
            "input_shape": parse_shape(args.input_shape), "mean": parse_floats(args.mean, "--mean"),
            "std": parse_floats(args.std, "--std")}


def executor(args: argparse.Namespace, net: Network, options: Options, lim: Limits, client: Any) -> Executor | None:
    """The executor for ``--workers``/``--cluster`` (None: run here). Workers load the model file themselves."""
    if client is None and args.workers is None:
        return None
    from verify.worker import FileSource

    source = FileSource(net.digest(), str(Path(args.model).resolve()), loader_kwargs(args))
    threads = args.threads if args.threads is not None and args.threads >= 1 else 1
    if client is not None:
        from verify.cluster import DaskExecutor

        if options.sdp_workers > 1:
            note(f"--sdp-workers {options.sdp_workers} is 1 on a Dask cluster (its workers are the parallelism)")
        return DaskExecutor(client, source, lim, threads)
    from verify.pool import LocalPool, available_cores, worker_options

    cut = worker_options(options, args.workers).sdp_workers
    if cut != options.sdp_workers:
        note(f"--sdp-workers {options.sdp_workers} with --workers {args.workers} on {available_cores()} cores: each "
             f"worker uses {cut} SDP process{'es' if cut > 1 else ''}")
    return LocalPool(source, args.workers, lim, threads)


def note(text: str) -> None:
    print(f"verify: note: {text}", file=sys.stderr)
