"""Run methods over many inputs: tasks (one input at one radius), their evaluation, and where records go.

:func:`run_tasks` evaluates tasks in this process, or hands them to an executor (local worker processes,
:mod:`verify.pool`; a Dask cluster, :mod:`verify.cluster`); either way every finished record goes to a
:class:`Sink`, which keeps it, appends it to the results file (:mod:`verify.results_file`) and updates the
progress line, so an interrupted run keeps everything finished and can resume.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np

from verify.budget import Budget
from verify.limits import Limits, MemoryLimitExceeded, TimeLimitExceeded, format_bytes, watch
from verify.methods import Reference, run_method
from verify.network import Network
from verify.options import Options
from verify.report import Record
from verify.results import MethodResult, SolverStatus, Verdict
from verify.results_file import ResultsFile, ResumeError, read_results
from verify.spec import SpecError, robustness_property
from verify.sweep import Known
from verify.task_order import hardest_first

__all__ = ["Executor", "ResultsFile", "ResumeError", "Sink", "Task", "evaluate_limited", "evaluate_task", "make_tasks",
           "read_results", "run_tasks", "validate_tasks"]

log = logging.getLogger(__name__)


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
            res = known.implied(task.index, name, prop, net, reference) if known is not None and not options.compare else None
            res = res or run_method(name, net, prop, budget.options_for(options), reference)
        rec = Record.from_result(task.index, task.label, task.eps, res)
        if known is not None:
            known.add(rec, res)
        yield rec


def evaluate_limited(
    net: Network, task: Task, methods: tuple[str, ...], options: Options, reference: Reference | None = None,
    skip: frozenset[str] = frozenset(), limits: Limits = Limits(), known: Known | None = None,
) -> Iterator[Record]:
    """:func:`evaluate_task` under per-task ``limits`` (:mod:`verify.limits`).

    A method stopped by the memory limit is recorded as ERROR and the remaining methods still run (with
    what is left of ``options.timeout``); past the hard time limit, the method running and those not
    started are recorded as UNKNOWN with status TIME_LIMIT. Records are yielded outside the watched
    region, so a limit never interrupts the consumer.
    """
    if limits.memory_bytes is None and limits.time_s is None:
        yield from evaluate_task(net, task, methods, options, reference, skip, known)
        return
    start = time.monotonic()
    done = set(skip)
    gen = evaluate_task(net, task, methods, options, reference, frozenset(done), known)
    while True:
        rec: Record | None = None
        try:
            with watch(limits, start):
                rec = next(gen, None)
        except MemoryLimitExceeded:
            if rec is None:  # it stopped the method running; the others get a fresh start
                name = next(m for m in methods if m not in done)
                rec = _stopped(task, name, Verdict.ERROR, SolverStatus.NUMERICAL_ERROR, time.monotonic() - start,
                               f"stopped: the process exceeded the memory limit of {format_bytes(limits.memory_bytes or 0)}")
                gen = evaluate_task(net, task, methods, _rest_of(options, start), reference, frozenset(done | {name}), known)
        except TimeLimitExceeded:
            gen.close()
            if rec is not None:
                done.add(rec.method)
                yield rec
            for name in (m for m in methods if m not in done):
                yield _stopped(task, name, Verdict.UNKNOWN, SolverStatus.TIME_LIMIT, time.monotonic() - start,
                               f"stopped: the task ran past its hard time limit of {limits.time_s:g} s")
            return
        if rec is None:
            return
        done.add(rec.method)
        yield rec


def _stopped(task: Task, method: str, verdict: Verdict, status: SolverStatus, seconds: float, message: str) -> Record:
    return Record(task.index, task.label, task.eps, method, verdict, float("nan"), float(seconds), status, message)


def _rest_of(options: Options, start: float) -> Options:
    """``options`` with ``timeout`` reduced by the time since ``start``."""
    if options.timeout is None:
        return options
    return options.with_(timeout=max(1e-3, options.timeout - (time.monotonic() - start)))


class Sink:
    """Where finished records go: kept in :attr:`records` (``prior`` ones first), appended to ``results``,
    passed to ``on_record`` (progress). A record whose (input, eps, method) is already there is dropped,
    so no result is ever recorded twice."""

    def __init__(self, prior: Iterable[Record] = (), results: ResultsFile | None = None,
                 on_record: Callable[[Record], None] | None = None) -> None:
        self.records: list[Record] = []
        self.results = results
        self.on_record = on_record
        self._keys: set[tuple] = set()
        self._done: dict[tuple[int, float], set[str]] = {}
        for rec in prior:
            self._keep(rec)

    def _keep(self, rec: Record) -> bool:
        if rec.key in self._keys:
            return False
        self._keys.add(rec.key)
        self.records.append(rec)
        self._done.setdefault((rec.index, rec.eps), set()).add(rec.method)
        return True

    def add(self, rec: Record) -> None:
        """Keep one finished record (ignored if already there)."""
        if not self._keep(rec):
            log.warning("dropping a second result for input %d, eps %s, %s", rec.index, rec.eps, rec.method)
            return
        if self.results is not None:
            self.results.append(rec)
        if self.on_record is not None:
            self.on_record(rec)

    def task_done(self) -> None:
        """An input is finished: make its records durable."""
        if self.results is not None:
            self.results.flush()

    def finished(self, task: Task) -> frozenset[str]:
        """Methods already recorded for ``task``."""
        return frozenset(self._done.get((task.index, task.eps), ()))

    def unfinished(self, tasks: Iterable[Task], methods: Iterable[str]) -> list[Task]:
        """The tasks that still miss a record of some method."""
        want = set(methods)
        return [t for t in tasks if want - self.finished(t)]


def validate_tasks(net: Network, tasks: Iterable[Task]) -> None:
    """Check every task before any work starts (so a bad input never leaves half a run behind): shapes,
    finite values, the input inside the network's domain, the label a class. Raises :class:`SpecError`
    naming the first bad input."""
    lo, hi = net.domain_lower, net.domain_upper
    for t in tasks:
        try:
            if t.x.shape != lo.shape:
                raise SpecError(f"has {t.x.size} values but the network expects {lo.size}")
            if not np.all(np.isfinite(t.x)):
                raise SpecError("has NaN or infinite values")
            if np.any(t.x < lo) or np.any(t.x > hi):
                raise SpecError(f"has values in [{t.x.min():g}, {t.x.max():g}], outside the network's input domain "
                                f"[{lo.min():g}, {hi.max():g}] (pass --domain, or inputs in the model's own units)")
            robustness_property(t.x, t.label, t.eps, (lo, hi), net.out_dim)
        except SpecError as err:
            raise SpecError(f"input {t.index}: {err}") from None


def failed_records(task: Task, methods: tuple[str, ...], skip: frozenset[str], message: str) -> list[Record]:
    """ERROR records for the methods of ``task`` not in ``skip`` (a task that kept killing its workers)."""
    return [_stopped(task, m, Verdict.ERROR, SolverStatus.NUMERICAL_ERROR, 0.0, message) for m in methods if m not in skip]


class Executor(Protocol):
    """Runs tasks somewhere else (local worker processes, a Dask cluster) and hands every record to the sink."""

    def run(self, tasks: list[Task], methods: tuple[str, ...], options: Options, sink: "Sink") -> None: ...


def run_tasks(
    net: Network,
    tasks: list[Task],
    methods: tuple[str, ...],
    options: Options,
    reference: Reference | None = None,
    sink: Sink | None = None,
    executor: Executor | None = None,
    limits: Limits = Limits(),
    known: Known | None = None,
) -> list[Record]:
    """Run ``methods`` on every task and return the records made by this call (order may differ from
    ``tasks`` with an executor).

    Without ``executor`` the tasks run here, one after another, under ``limits``; an executor brings its
    own network source and limits. Records go to ``sink`` as each method finishes (flushed after each
    task); methods the sink already holds for a task are skipped (resuming). KeyboardInterrupt
    propagates; everything finished is then in ``sink.records`` and on disk.
    ``known``: results that imply others across eps (verdict mode, see :mod:`verify.sweep`); sequential
    runs only (an executor runs its tasks elsewhere).
    """
    sink = sink if sink is not None else Sink()
    first = len(sink.records)
    if executor is not None:
        executor.run(hardest_first(net, tasks, methods), methods, options, sink)
        order = {(t.index, t.eps): i for i, t in enumerate(tasks)}
        rank = {m: i for i, m in enumerate(methods)}
        return sorted(sink.records[first:], key=lambda r: (order.get((r.index, r.eps), -1), rank.get(r.method, -1)))
    for task in tasks:
        for rec in evaluate_limited(net, task, methods, options, reference, sink.finished(task), limits, known):
            sink.add(rec)
        sink.task_done()
    return sink.records[first:]
