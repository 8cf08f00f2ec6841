"""Command-line arguments of ``verify`` and their conversion to :class:`verify.Options`."""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
from pathlib import Path
from typing import NoReturn

from verify.registry import METHODS, parse_methods
from verify.options import Options


class UsageError(ValueError):
    """Bad command-line input; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (``verify: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see verify --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="verify",
        description="Prove (or refute) that a ReLU network's decision cannot be flipped by any L-infinity "
        "perturbation of radius eps (in the input's own units, e.g. pixels in [0,1]).",
    )
    p.add_argument("model", help="network file: .pt/.pth (state dict or TorchScript), .onnx, or .npz of W0..,b0..")
    p.add_argument("--eps", default="0.1", help="radius, or several comma-separated (default 0.1), in input units")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated from {','.join(METHODS)} (default: attack,ibp,crown,alpha-crown,lp, and sdp where the network is small enough)")
    p.add_argument("--data", default=None, help="inputs: .npz with x,y; a torch tensor file; or 'digits' (scikit-learn's bundled digits test split)")
    p.add_argument("--n", type=int, default=20, help="number of inputs (default 20)")
    p.add_argument("--start", type=int, default=0, help="index of the first input (default 0)")
    p.add_argument("--vnnlib", default=None, help="verify one VNN-LIB property instead of a data set")
    p.add_argument("--out", default=None, help="with --vnnlib: write the result (holds/violated/unknown/timeout) to this file")
    p.add_argument("--proof", default=None, help="with --vnnlib: save the checked branch-and-bound proof behind a 'holds' (.npz)")
    p.add_argument("--check-proof", default=None, metavar="PROOF",
                   help="with --vnnlib: re-check a saved proof for NET and SPEC (prints holds, or unknown and why; exit 1 if it does not check)")
    p.add_argument("--json", default=None, help="write the full report as JSON")
    p.add_argument("--report", default=None, help="write a self-contained HTML report with plots (runs in compare mode "
                   "unless --verdicts)")
    p.add_argument("--verdicts", action="store_true",
                   help="verdict mode even with --report: stop each method once its verdict is known (faster; bounds "
                   "are then not optima)")
    p.add_argument("--radius", nargs="?", const=1e-3, default=None, type=float, metavar="TOL",
                   help="also find each input's certified radius per method (largest eps certified; attack: smallest eps "
                   "with a counterexample) by bisection to TOL in input units (default 0.001)")
    p.add_argument("--results", default=None, help="results file, appended as each input finishes (default verify-runs/<model>-<time>.jsonl)")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="FILE",
                   help="continue a results file without redoing finished inputs (default: the newest for this model)")
    p.add_argument("--arch", default=None, help="file.py:factory that builds the torch module for a state dict")
    p.add_argument("--trust-pickle", action="store_true", help="allow loading full pickled modules (a pickle can run code)")
    p.add_argument("--domain", default=None, help="input domain lo,hi (default from the model file, else 0,1)")
    p.add_argument("--input-shape", default=None, help="input shape, e.g. 1,28,28 (for conv state dicts)")
    p.add_argument("--mean", default=None, help="input normalization mean (one value or one per channel, comma-separated)")
    p.add_argument("--std", default=None, help="input normalization std (as --mean); eps stays in un-normalized units")
    add_option_flags(p.add_argument_group("method settings (verify.Options; same defaults in the library)"))
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: per input the work is small, and on a busy machine two threads made "
                   "the attack 30x slower; raise it for large convolutional networks on an idle machine)")
    p.add_argument("--workers", type=int, default=None,
                   help="run inputs in N local worker processes (one BLAS/torch thread each, or --threads); "
                        "--sdp-workers is then cut to cores // N per worker (default: one after another in this process)")
    p.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="run inputs on an existing Dask scheduler (tcp://host:8786, or a scheduler .json file); "
                        "every worker needs the same verify version and the model file at the same path; pip install 'verify[cluster]'")
    p.add_argument("--memory-limit", default=None, metavar="SIZE",
                   help="per task: resident memory of the process running it (e.g. 4GiB); a method above it is stopped and recorded as error")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="log solver progress")
    return p


def add_option_flags(group: argparse._ActionsContainer) -> None:
    """One flag per :class:`Options` field (``alpha_steps`` -> ``--alpha-steps``), with its default and help."""
    for f in dataclasses.fields(Options):
        flag, meta = "--" + f.name.replace("_", "-"), f.metadata
        text = f"{meta['help']} (default {'unset' if f.default is None else f.default})"
        if isinstance(f.default, bool):
            action = "store_true" if not f.default else argparse.BooleanOptionalAction
            group.add_argument(flag, action=action, default=f.default, help=text)
        else:
            kind = meta.get("type", type(f.default))
            group.add_argument(flag, type=kind, default=f.default, choices=meta.get("choices"), help=text,
                               metavar=None if meta.get("choices") else {int: "N", float: "X"}.get(kind))


def parse_eps(text: str) -> tuple[float, ...]:
    """``"0.02,0.05"`` -> ``(0.02, 0.05)``; every value finite and >= 0."""
    values = []
    for tok in str(text).split(","):
        try:
            v = float(tok)
        except ValueError:
            raise UsageError(f"--eps: {tok.strip()!r} is not a number") from None
        if not math.isfinite(v) or v < 0:
            raise UsageError(f"--eps must be >= 0 and finite, got {tok.strip()}")
        values.append(v)
    return tuple(dict.fromkeys(values))


def parse_methods_arg(text: str | None) -> tuple[str, ...] | None:
    """Methods from ``--methods``; ``None`` means the default set for the network."""
    if text is None:
        return None
    try:
        return parse_methods(text)
    except ValueError as err:
        raise UsageError(f"--methods: {err}") from None


def parse_domain(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(t) for t in text.split(","))
    except ValueError:
        raise UsageError(f"--domain must be two numbers lo,hi; got {text!r}") from None
    if not lo <= hi:
        raise UsageError(f"--domain is empty: {lo} > {hi}")
    return lo, hi


def parse_floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    """``"0.1307"`` or ``"0.5,0.5,0.5"`` -> floats; ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated numbers, got {text!r}") from None


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"1,28,28"`` -> ``(1, 28, 28)``."""
    if text is None:
        return None
    try:
        shape = tuple(int(t) for t in text.replace("x", ",").split(","))
    except ValueError:
        raise UsageError(f"--input-shape must be comma-separated integers, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise UsageError(f"--input-shape must be positive integers, got {text!r}")
    return shape


def compare_mode(args: argparse.Namespace) -> bool:
    """Compare mode (``Options.compare``): with ``--compare``, or with ``--report`` unless ``--verdicts``."""
    if args.compare and args.verdicts:
        raise UsageError("--compare and --verdicts contradict each other; choose one")
    return bool(args.compare or (args.report and not args.verdicts))


def options_from_args(args: argparse.Namespace) -> Options:
    """The frozen options for a command line; invalid values become a :class:`UsageError`."""
    for name in ("n", "attack_steps", "attack_restarts"):
        if getattr(args, name) < (1 if name == "n" else 0):
            raise UsageError(f"--{name.replace('_', '-')} must be {'>= 1' if name == 'n' else '>= 0'}")
    if args.start < 0:
        raise UsageError("--start must be >= 0")
    if args.radius is not None and not (math.isfinite(args.radius) and args.radius > 0):
        raise UsageError(f"--radius tolerance must be > 0, got {args.radius}")
    _check_device(args.device)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Options)}
    values["compare"] = compare_mode(args)
    try:
        return Options(**values)
    except ValueError as err:  # Options names the field; the user typed the flag
        message = str(err)
        name = message.split(" ", 1)[0]
        if name in values:
            message = "--" + name.replace("_", "-") + message[len(name):]
        raise UsageError(message) from None


def _check_device(device: str) -> None:
    """``--device``: a torch device that exists here (e.g. ``cpu``, ``cuda``, ``cuda:1``)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device: {device!r} is not a torch device (e.g. cpu, cuda, cuda:0)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA device is available here")
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device}: only cpu and cuda devices are supported")


def check_outputs(args: argparse.Namespace) -> None:
    """Before any work: every output file named on the command line can be written (its folder exists
    and takes a new file; it is not a folder itself), and ``--out`` comes with ``--vnnlib``."""
    if args.out is not None and not args.vnnlib:
        raise UsageError("--out applies only with --vnnlib (use --json or --report for a data set run)")
    if args.radius is not None and args.vnnlib:
        raise UsageError("--radius applies to a data set run (robustness balls around inputs), not to --vnnlib")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    for flag in ("json", "report", "out", "proof"):
        value = getattr(args, flag, None)
        if value is not None:
            _check_writable(Path(value), f"--{flag}")


def _check_writable(path: Path, flag: str) -> None:
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: the folder {folder} does not exist")
    try:  # a probe file, removed at once: permissions, read-only mounts and pseudo file systems all show here
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".verify-probe-"):
            pass
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot write in {folder} ({err.strerror or err})") from None
