"""Run methods over many inputs, writing each finished result to a JSON-lines file as it goes.

The results file starts with one ``{"type": "meta", ...}`` line (network hash, options, methods) followed by
one ``{"type": "record", ...}`` line per (input, eps, method), and with ``--radius`` one
``{"type": "radius", ...}`` line per (input, method) (:mod:`verify.radius`). It is flushed and fsync'ed after every
input, so an interrupted run loses at most the input in progress, and :func:`read_results` lets a new run
skip what is already there (``--resume``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from verify.budget import Budget
from verify.methods import Reference, run_method
from verify.network import Network
from verify.options import Options
from verify.report import Record
from verify.report_record import Radius
from verify.results import MethodResult, SolverStatus, Verdict
from verify.spec import robustness_property
from verify.sweep import Known

log = logging.getLogger(__name__)


class ResumeError(ValueError):
    """The results file cannot be resumed (other network, other options, unreadable)."""


@dataclass(frozen=True, eq=False)
class Task:
    """One input at one radius: ``x`` flattened ``(in_dim,)`` in input units, ``eps`` in the same units."""

    index: int
    x: np.ndarray
    label: int
    eps: float


def make_tasks(x: np.ndarray, y: np.ndarray, eps_values: Iterable[float], start: int = 0) -> list[Task]:
    """Tasks for inputs ``x`` ``(N, in_dim)`` with labels ``y`` ``(N,)``; indices count from ``start``."""
    return [Task(start + i, x[i].ravel(), int(y[i]), float(e)) for e in eps_values for i in range(len(x))]


def evaluate_task(
    net: Network, task: Task, methods: tuple[str, ...], options: Options, reference: Reference | None = None,
    skip: frozenset[str] = frozenset(), known: Known | None = None,
) -> Iterator[Record]:
    """Run every method (except those in ``skip``) on one task, yielding a record as each finishes.

    A misclassified clean input is a counterexample to every method's property: it is recorded as
    FALSIFIED for every method without running them (status NOT_RUN), after re-checking with ``reference``.
    With ``options.timeout`` the methods share that wall time: each gets what is left, and those not
    started before it runs out are recorded as UNKNOWN with status TIME_LIMIT. With ``known`` (verdict mode)
    a method whose result is implied by results at other eps of the same input is not run (see
    :mod:`verify.sweep`), and each finished result is added to it.
    """
    prop = robustness_property(task.x, task.label, task.eps, (net.domain_lower, net.domain_upper), net.out_dim)
    check = reference if reference is not None else net.forward
    clean_logits = np.asarray(check(task.x[None]), dtype=np.float64)
    if bool(prop.output.violated(clean_logits)[0]):
        margin = float(prop.output.margins(clean_logits).min())
        for name in methods:
            if name not in skip:
                res = MethodResult(name, Verdict.FALSIFIED, margin, prop.output.margins(clean_logits)[0], 0.0,
                                   SolverStatus.NOT_RUN, "clean input is misclassified", task.x.copy())
                yield Record.from_result(task.index, task.label, task.eps, res)
        return
    budget = Budget.start(options.timeout)
    for name in methods:
        if name in skip:
            continue
        if budget.expired():
            res = MethodResult(name, Verdict.UNKNOWN, float("nan"), np.full(prop.output.n_margins, np.nan), 0.0,
                               SolverStatus.TIME_LIMIT, f"not run: the property's timeout of {options.timeout:g} s was used up")
        else:
            res = known.implied(task.index, name, prop, net, reference) if known is not None and not options.optimize else None
            res = res or run_method(name, net, prop, budget.options_for(options), reference)
        rec = Record.from_result(task.index, task.label, task.eps, res)
        if known is not None:
            known.add(rec, res)
        yield rec


class ResultsFile:
    """Append-only JSON-lines results file (see module docstring)."""

    def __init__(self, path: Path, meta: dict) -> None:
        self.path = Path(path)
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        self._fh = open(self.path, "a", encoding="utf-8")
        if fresh:
            self._write({"type": "meta", **meta})
            self.flush()

    def _write(self, obj: dict) -> None:
        self._fh.write(json.dumps(obj, allow_nan=False) + "\n")

    def append(self, record: Record) -> None:
        self._write({"type": "record", **record.to_dict()})

    def append_radius(self, radius: Radius) -> None:
        """A certified-radius line (read back by :func:`verify.radius.read_radii`)."""
        self._write({"type": "radius", **radius.to_dict()})

    def flush(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self.flush()
        self._fh.close()


def read_results(path: Path) -> tuple[dict, list[Record]]:
    """Meta and records of a results file; a torn last line (crash mid-write) is ignored."""
    meta: dict = {}
    records: list[Record] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ResumeError(f"cannot read results file {path}: {err.strerror}") from None
    for n, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                log.warning("ignoring a partly written last line in %s", path)
                continue
            raise ResumeError(f"{path} line {n} is not valid JSON; is this a verify results file?") from None
        kind = obj.pop("type", None)
        if kind == "meta":
            meta = obj
        elif kind == "record":
            records.append(Record.from_dict(obj))
    if not meta:
        raise ResumeError(f"{path} has no meta line; is this a verify results file?")
    return meta, records


def run_tasks(
    net: Network,
    tasks: list[Task],
    methods: tuple[str, ...],
    options: Options,
    reference: Reference | None = None,
    results: ResultsFile | None = None,
    done: dict[tuple[int, float], frozenset[str]] | None = None,
    on_record: Callable[[Record], None] | None = None,
    known: Known | None = None,
) -> list[Record]:
    """Run ``methods`` on every task; records are appended to ``results`` after each task.

    ``done`` maps ``(index, eps)`` to the methods already finished (from a resumed file); those are skipped.
    ``known``: results that imply others across eps (verdict mode, see :mod:`verify.sweep`).
    KeyboardInterrupt propagates after the finished tasks are safely on disk.
    """
    out: list[Record] = []
    done = done or {}
    for task in tasks:
        skip = done.get((task.index, task.eps), frozenset())
        for rec in evaluate_task(net, task, methods, options, reference, skip, known):
            out.append(rec)
            if results is not None:
                results.append(rec)
            if on_record is not None:
                on_record(rec)
        if results is not None:
            results.flush()
    return out


def done_map(records: list[Record]) -> dict[tuple[int, float], frozenset[str]]:
    """``(index, eps) -> methods finished`` for resuming."""
    out: dict[tuple[int, float], set[str]] = {}
    for r in records:
        out.setdefault((r.index, float(r.eps)), set()).add(r.method)
    return {k: frozenset(v) for k, v in out.items()}
