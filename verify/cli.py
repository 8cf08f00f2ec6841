"""The ``verify`` console script.

``verify NET --eps 0.1`` certifies (or falsifies) robustness of NET on inputs from ``--data`` with every
method of ``--methods`` and prints a comparison table; ``--vnnlib SPEC`` checks one VNN-COMP property.
Exit codes: 0 done, 2 bad input (one line on stderr), 130 interrupted, 143 terminated (finished results kept).
"""

from __future__ import annotations

import argparse
import logging
import sys

from verify.cli_args import UsageError, build_parser, check_outputs, options_from_args, parse_eps, parse_methods_arg

log = logging.getLogger("verify")


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is a complete, actionable sentence for the user."""
    from verify.cluster import ClusterError
    from verify.data import DataError
    from verify.load import LoadError
    from verify.network import NetworkError
    from verify.report import ReportError
    from verify.runner import ResumeError
    from verify.spec import SpecError
    from verify.worker import WorkerError

    return (UsageError, LoadError, DataError, NetworkError, SpecError, ResumeError, ReportError, ClusterError, WorkerError)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        force=True)  # to the current stderr, also when main() runs twice in one process
    try:
        if not args.vnnlib:
            for flag in ("proof", "check_proof"):
                if getattr(args, flag, None):
                    raise UsageError(f"--{flag.replace('_', '-')} applies to --vnnlib runs")
        elif args.results or args.resume:
            raise UsageError("--results/--resume apply to data runs (--data); with --vnnlib the answer goes to --out")
        check_outputs(args)
        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)
        if args.vnnlib:
            from verify.cli_vnnlib import run_vnnlib

            return run_vnnlib(args)
        return run_main(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        print(f"verify: error: {err}", file=sys.stderr)
        return 2


def run_main(args: argparse.Namespace) -> int:
    """The main job: many inputs x eps values x methods, with a results file, resume and a final table."""
    from verify.cli_run import execute

    eps_values = parse_eps(args.eps)
    methods = parse_methods_arg(args.methods)
    options = options_from_args(args)
    return execute(args, eps_values, methods, options)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
